"""Strategies turn prices into desired positions; the backtest engine turns those into fills.

A strategy's `targets(prices, **params)` returns, for every bar, the position wanted after that
bar's close (+1 long, -1 short, 0 flat; fractions scale the size), computed only from data up to
that close. `grid(prices, combos)` does the same for many parameter sets at once, one column each,
so a sweep scores them without a Python loop per combination.

Parameters are declared, not parsed by hand: each strategy lists its `Param`s (type, default,
range) and an optional cross-parameter `rule`; `Strategy.check` turns user input into clean
values or raises one ParameterError (a ValueError) naming the parameter. To add a strategy, write
a module that defines `STRATEGY = Strategy(...)` and add one line to `REGISTRY`.
"""

from __future__ import annotations

import importlib
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from algotrading.errors import ParameterError

# name -> module defining STRATEGY (imported on first use, so heavy strategies cost nothing until
# they are asked for).
REGISTRY: dict[str, str] = {
    "sma": "algotrading.strategies.sma",
    "ema": "algotrading.strategies.ema",
    "breakout": "algotrading.strategies.breakout",
    "ml_forecast": "algotrading.strategies.ml_forecast",
}


@dataclass(frozen=True)
class Param:
    """One parameter: its type (int, float, bool or str), default and allowed range.

    Bounds are optional: `gt`/`ge` below, `lt`/`le` above. `choices` limits a str. `optional`
    allows None. `lookback=True` marks a window in bars: it must be shorter than the prices.
    Booleans are strict: True/False or the strings "true"/"false" (the workshop's form); ints
    accept integral floats (5.0) but not 5.7.
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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"parameter {name}={value!r} must be a number ({kind.__name__})")
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name}={value!r} must be finite")
    if kind is int:
        if value != int(value):
            raise ParameterError(f"parameter {name}={value!r} must be a whole number")
        return int(value)
    return float(value)


def check_params(schema: Mapping[str, Param], params: Mapping[str, Any], owner: str,
                 bars: int | None = None) -> dict[str, Any]:
    """All of `schema`'s parameters: defaults overridden by `params`, each checked; unknown
    names and lookbacks of `bars` or more are refused."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ParameterError(f"{owner} has no parameter(s) {unknown}; it takes {sorted(schema)}")
    out = {k: p.check(k, params[k]) if k in params else p.default for k, p in schema.items()}
    if bars is not None:
        for k, p in schema.items():
            if p.lookback and out[k] >= bars:
                raise ParameterError(f"parameter {k}={out[k]} needs more bars than the {bars} given")
    return out


def _no_rule(params: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Strategy:
    """A named rule set with the workshop's parameter names and defaults.

    `rule(params)` returns a message when a complete parameter set is inconsistent (e.g. fast
    period not below slow), else None. Sizing is the engine's (all-in by default; the workshop's
    fixed share counts are an explicit `size=`).
    """

    name: str
    grid: Callable[[pd.DataFrame, list[dict[str, Any]]], np.ndarray]
    params: Mapping[str, Param] = field(default_factory=dict)
    rule: Callable[[Mapping[str, Any]], str | None] = _no_rule

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def complete(self, params: Mapping[str, Any], bars: int | None = None) -> dict[str, Any]:
        """Defaults overridden by `params`, each value checked (not yet the cross-parameter rule)."""
        return check_params(self.params, params, f"strategy {self.name!r}", bars)

    def check(self, params: Mapping[str, Any], bars: int | None = None) -> dict[str, Any]:
        """The complete, clean parameter set, or ParameterError naming the bad parameter."""
        out = self.complete(params, bars)
        problem = self.rule(out)
        if problem:
            raise ParameterError(f"strategy {self.name!r}: {problem}")
        return out

    def valid(self, params: Mapping[str, Any]) -> bool:
        """Whether a complete, clean parameter set satisfies the cross-parameter rule."""
        return not self.rule(params)

    def targets(self, prices: pd.DataFrame, **params: Any) -> np.ndarray:
        """Desired position per bar for one parameter set."""
        return self.grid(prices, [self.check(params, len(prices))])[:, 0]


def get(strategy: str | Strategy) -> Strategy:
    """The strategy registered under `strategy` (or `strategy` itself if it is one)."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in REGISTRY:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[strategy]).STRATEGY
