"""Strategies turn prices into desired positions; the backtest engine turns those into fills.

A strategy's `targets(prices, **params)` returns, for every bar, the position wanted after that
bar's close (+1 long, -1 short, 0 flat; fractions scale the size), computed only from data up to
that close. `grid(prices, combos)` does the same for many parameter sets at once, one column each,
so a sweep scores them without a Python loop per combination.

Parameters are declared, not parsed by hand: each strategy lists its `Param`s (type, default,
range) and an optional cross-parameter `rule`; `Strategy.check` turns user input into clean
values or raises one ParameterError (a ValueError) naming the parameter. To add a strategy,
write a module that defines `STRATEGY = Strategy(...)` and add one line to `REGISTRY`.

A plain function is a strategy too: `def rsi(prices, period=14, low=30, high=70) -> positions`
(a Series on the dates or an array, one value per bar). `from_function` derives its parameters
from the signature: a default gives the type (an annotation int/float/bool/str overrides it,
e.g. `low: float = 30`), a parameter without a default is required, and the same checks and
converters apply as for the built-ins; a `**kwargs` catch-all passes other names through
unchecked. `get` accepts such a function, and `load("path/to/mine.py:rsi")` or
`load("package.module:rsi")` finds one in a file or module (executing it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from algotrading.errors import ParameterError
from algotrading.params import REQUIRED, Param, check_params, unknown_message

__all__ = ["REGISTRY", "REQUIRED", "Param", "Strategy", "check_params", "from_function", "get",
           "load", "unknown_message"]

# name -> module defining STRATEGY (imported on first use, so heavy strategies cost nothing until
# they are asked for).
REGISTRY: dict[str, str] = {
    "sma": "algotrading.strategies.sma",
    "ema": "algotrading.strategies.ema",
    "breakout": "algotrading.strategies.breakout",
    "ml_forecast": "algotrading.strategies.ml_forecast",
}


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
    extra: bool = False  # other parameter names pass through unchecked (a function's **kwargs)
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    @property
    def owner(self) -> str:
        """How errors name it: "strategy 'sma'", or "rsi()" for a function."""
        return f"{self.name}()" if self.function is not None else f"strategy {self.name!r}"

    def complete(self, params: Mapping[str, Any], bars: int | None = None) -> dict[str, Any]:
        """Defaults overridden by `params`, each value checked (not yet the cross-parameter rule)."""
        try:
            return check_params(self.params, params, self.owner, bars, self.extra)
        except ValueError as e:
            raise self.error(e) from None

    def error(self, e: ValueError) -> ValueError:
        """`e` with this strategy's name in front (unless it already starts with it)."""
        text = str(e)
        return e if text.startswith(self.owner) else ParameterError(f"{self.owner}: {text}")

    def check(self, params: Mapping[str, Any], bars: int | None = None) -> dict[str, Any]:
        """The complete, clean parameter set, or ParameterError naming the bad parameter."""
        out = self.complete(params, bars)
        problem = self.rule(out)
        if problem:
            raise ParameterError(f"{self.owner}: {problem}")
        return out

    def valid(self, params: Mapping[str, Any]) -> bool:
        """Whether a complete, clean parameter set satisfies the cross-parameter rule."""
        return not self.rule(params)

    def targets(self, prices: pd.DataFrame, **params: Any) -> np.ndarray:
        """Desired position per bar for one parameter set."""
        return self.grid(prices, [self.check(params, len(prices))])[:, 0]


def get(strategy: str | Strategy | Callable[..., Any]) -> Strategy:
    """The strategy registered under `strategy`, loaded from a "file.py:function" or
    "package.module:function" spec (see `load`), wrapped from a function (see `from_function`),
    or `strategy` itself if it is one."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        if strategy in REGISTRY:
            return importlib.import_module(REGISTRY[strategy]).STRATEGY
        if ":" in strategy:
            return load(strategy)
        raise ParameterError(f"unknown strategy {strategy!r}; choose one of {sorted(REGISTRY)}, or "
                         "give your own as path/to/file.py:function or package.module:function")
    if callable(strategy):
        return from_function(strategy)
    raise ParameterError(f"a strategy is a name, a Strategy or a function, not "
                     f"{type(strategy).__name__}")


# -- plain functions as strategies -------------------------------------------------------------

_KINDS = {int: int, float: float, bool: bool, str: str, "int": int, "float": float, "bool": bool,
          "str": str}


def _kind(param: inspect.Parameter) -> tuple[type, bool]:
    """(type, optional) of one function parameter: a simple annotation (int, float, bool, str,
    optionally `| None`) wins, else the default's type; anything else is taken as given."""
    note = param.annotation
    optional = param.default is None
    if isinstance(note, str):
        parts = [p.strip() for p in note.replace("Optional[", "").rstrip("]").split("|")]
        optional = optional or "None" in parts
        parts = [p for p in parts if p != "None"]
        note = parts[0] if len(parts) == 1 else None
    else:
        args = [a for a in getattr(note, "__args__", ()) if a is not type(None)]
        if args and len(args) < len(note.__args__):  # X | None, Optional[X]
            optional, note = True, args[0] if len(args) == 1 else None
    if note in _KINDS:
        return _KINDS[note], optional
    default = param.default
    if default is param.empty or default is None:
        return object, optional
    kind = type(default)
    return (kind if kind in (int, float, bool, str) else object), optional


def from_function(func: Callable[..., Any], name: str | None = None) -> Strategy:
    """A Strategy from `func(prices, **params) -> positions`: its parameters are the signature's
    after the first (prices), typed and checked as described in the module docstring."""
    if isinstance(func, Strategy):
        return func
    label = name or getattr(func, "__name__", None) or type(func).__name__
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: take anything
        signature = None
    params: dict[str, Param] = {}
    extra = signature is None
    if signature is not None:
        items = list(signature.parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                      inspect.Parameter.VAR_POSITIONAL)
        if not items or items[0].kind not in positional:
            raise ParameterError(f"{label}() must take the prices as its first argument: "
                             f"def {label}(prices, ...)")
        for p in items[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                extra = True
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
                if p.default is p.empty:
                    raise ParameterError(f"{label}() takes {p.name!r} by position only; a strategy's "
                                     "parameters are given by keyword")
            else:
                kind, optional = _kind(p)
                default = REQUIRED if p.default is p.empty else p.default
                params[p.name] = Param(default, kind, optional=optional)
    owner = f"{label}()"

    def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
        out = np.empty((len(prices), len(combos)))
        for j, combo in enumerate(combos):
            out[:, j] = positions(func(prices, **combo), prices, owner)
        return out

    return Strategy(label, grid, params, extra=extra, function=func)


def positions(out: Any, prices: pd.DataFrame, owner: str = "strategy") -> np.ndarray:
    """A strategy's output as one float per bar: a Series is aligned on the dates (missing
    dates are flat), anything else must have one finite value per bar."""
    if isinstance(out, pd.DataFrame) and out.shape[1] == 1:
        out = out.iloc[:, 0]
    if isinstance(out, pd.Series):
        out = out.reindex(prices.index).fillna(0.0)
    try:
        arr = np.asarray(out, dtype=float)
    except (TypeError, ValueError):
        raise ParameterError(f"{owner} returned {type(out).__name__}, not positions (a Series or an "
                         "array of numbers, one per bar)") from None
    if arr.shape != (len(prices),):
        raise ParameterError(f"{owner} gave {arr.shape} positions for {len(prices)} bars")
    if not np.isfinite(arr).all():
        raise ParameterError(f"{owner} gave non-finite target positions")
    return arr


# -- user strategies from files and modules ----------------------------------------------------

_LOADED: dict[tuple[str, int], Any] = {}  # (file, mtime) -> module: a file runs once per version


def load(spec: str) -> Strategy:
    """The strategy `spec` names: "path/to/file.py:name" or "package.module:name", where `name`
    is a function (see `from_function`) or a Strategy. Loading a file executes it, as `python
    file.py` would (its folder is on sys.path while it runs)."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr.isidentifier():
        raise ParameterError(f"strategy {spec!r}: want path/to/file.py:function or "
                         "package.module:function")
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _load_file(spec, where)
        origin = where
    else:
        here = os.getcwd()
        added = here not in sys.path and "" not in sys.path  # as `python -m` would find it
        if added:
            sys.path.insert(0, here)
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            if e.name and where.startswith(e.name):  # the module itself, not one it imports
                raise ParameterError(f"strategy {spec!r}: no module named {where!r}") from None
            raise
        finally:
            if added:
                sys.path.remove(here)
        origin = f"module {where}"
    found = getattr(module, attr, None)
    if found is None:
        names = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and (inspect.isfunction(v) or isinstance(v, Strategy))
                       and getattr(v, "__module__", module.__name__) == module.__name__)
        raise ParameterError(f"strategy {spec!r}: {origin} defines no {attr!r}"
                         + (f" (it defines {', '.join(names)})" if names else ""))
    if isinstance(found, Strategy):
        return found
    if not callable(found):
        raise ParameterError(f"strategy {spec!r}: {attr} is a {type(found).__name__}, not a function")
    return from_function(found, attr)


def _load_file(spec: str, path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ParameterError(f"strategy {spec!r}: no file {path}")
    key = (full, os.stat(full).st_mtime_ns)
    if key in _LOADED:
        return _LOADED[key]
    stem = os.path.splitext(os.path.basename(full))[0]
    name = f"algotrading_user_{''.join(c if c.isalnum() else '_' for c in stem)}"
    module_spec = importlib.util.spec_from_file_location(name, full)
    if module_spec is None or module_spec.loader is None:
        raise ParameterError(f"strategy {spec!r}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = os.path.dirname(full)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ParameterError(f"strategy {spec!r}: running {path} raised {type(e).__name__}: {e}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    _LOADED[key] = module
    return module
