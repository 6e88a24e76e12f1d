"""Parameters, declared once: a `Param` (type, default, allowed range, help) per name, one
converter for every kind of input (Python values, CLI text, SageMaker's string hyperparameters),
and one error (ParameterError) naming the parameter.

Everything configurable is declared this way: the engine's settings (`backtest.Settings`), each
strategy's parameters (`strategies.Strategy.params`, or a plain function's signature), the
forecaster's and PPO's hyperparameters (`models.forecast.Config`, `rl.train.Hyperparameters`) and
the live risk limits (`live.Limits`). A settings class is a frozen dataclass whose fields are
`param(...)`s: `table(cls)` reads the declarations back and `check(obj, owner)` converts and checks
an instance in place (its `__post_init__` calls it).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from algotrading.errors import ParameterError

CASH = 100_000.0  # the default starting cash of every backtest, replay and report


class _Required:
    """The default of a parameter that has none: it must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter: its type (int, float, bool or str), default and allowed range.

    Bounds are optional: `gt`/`ge` below, `lt`/`le` above. `choices` limits a str. `optional`
    allows None. `lookback=True` marks a window in bars: it must be shorter than the prices.
    Booleans are strict: True/False or the strings "true"/"false" (the workshop's form); ints
    accept integral floats (5.0) but not 5.7. `kind=object` takes any value as it is. A
    `REQUIRED` default means the parameter must be given.
    """

    default: Any
    kind: type = int
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    lookback: bool = False
    help: str = ""

    def check(self, name: str, value: Any) -> Any:
        """`value` converted to this parameter's type, or ParameterError (a ValueError) naming `name`."""
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter {name} must not be empty")
        raw, value = value, _convert(name, value, self.kind)
        if self.choices and value not in self.choices:
            raise ParameterError(f"parameter {name}={raw!r}: choose one of {list(self.choices)}")
        for attr, ok, word in _BOUNDS:
            bound = getattr(self, attr)
            if bound is not None and not ok(value, bound):
                raise ParameterError(f"parameter {name}={raw!r} must be {word} {bound:g}")
        return value


_BOUNDS = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="), ("lt", operator.lt, "<"),
           ("le", operator.le, "<="))


def _convert(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if kind is object:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ParameterError(f"parameter {name}={value!r} must be true or false")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ParameterError(f"parameter {name}={value!r} must be a string")
    if isinstance(value, str):  # text from a command line, a notebook or a SageMaker job
        try:
            value = float(value.strip().replace("_", ""))
        except ValueError:
            raise ParameterError(f"parameter {name}={value!r} must be a number "
                                 f"({kind.__name__})") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"parameter {name}={value!r} must be a number ({kind.__name__})")
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name}={value!r} must be finite")
    if kind is int:
        if value != int(value):
            raise ParameterError(f"parameter {name}={value!r} must be a whole number")
        return int(value)
    return float(value)


def unknown_message(owner: str, names: list[str], schema: Mapping[str, Any], also: str = "") -> str:
    """The error for unknown parameter names, e.g. "rsi() has no parameter 'perod' (did you
    mean 'period'?); it takes period, low, high"."""
    hint = difflib.get_close_matches(names[0], list(schema), n=1) if len(names) == 1 else []
    which = ", ".join(repr(n) for n in names)
    takes = ", ".join(schema) if schema else "no parameters"
    return (f"{owner} has no parameter{'s' if len(names) > 1 else ''} {which}"
            f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; it takes {takes}{also}")


def check_params(schema: Mapping[str, Param], params: Mapping[str, Any], owner: str,
                 bars: int | None = None, extra: bool = False) -> dict[str, Any]:
    """All of `schema`'s parameters: defaults overridden by `params`, each checked; unknown
    names (unless `extra`: then passed through as given), missing required ones and lookbacks
    of `bars` or more are refused."""
    unknown = [k for k in params if k not in schema]
    if unknown and not extra:
        raise ParameterError(unknown_message(owner, unknown, schema))
    missing = [k for k, p in schema.items() if p.default is REQUIRED and k not in params]
    if missing:
        raise ParameterError(f"{owner} needs a value for {', '.join(map(repr, missing))} "
                         "(no default)")
    out = {k: p.check(k, params[k]) if k in params else p.default for k, p in schema.items()}
    out.update({k: params[k] for k in unknown})
    if bars is not None:
        for k, p in schema.items():
            if p.lookback and out[k] >= bars:
                raise ParameterError(f"parameter {k}={out[k]} needs more bars than the {bars} given")
    return out


def param(default: Any, kind: type | None = None, **declared: Any) -> Any:
    """A dataclass field declared as a Param: its default, type (from the default unless given;
    give it for an optional one) and bounds (see Param)."""
    if kind is None:
        kind = type(default) if default is not None and default is not REQUIRED else float
    return dataclasses.field(default=default,
                             metadata={"param": Param(default, kind, **declared)})


def table(cls: type) -> dict[str, Param]:
    """The Params a settings dataclass declares, by field name, in order."""
    return {f.name: f.metadata["param"] for f in dataclasses.fields(cls) if "param" in f.metadata}


def defaults(cls: type) -> dict[str, Any]:
    """The declared defaults of a settings dataclass."""
    return {k: p.default for k, p in table(cls).items()}


def check(obj: Any, owner: str) -> None:
    """Convert and check every declared field of a (frozen) settings dataclass in place."""
    schema = table(type(obj))
    given = {k: getattr(obj, k) for k in schema}
    for key, value in check_params(schema, given, owner).items():
        object.__setattr__(obj, key, value)


def build(cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """`cls(**values)` with unknown names refused in one readable error (a close match named)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ParameterError(unknown_message(owner, unknown, dict.fromkeys(names)))
    return cls(**values)
