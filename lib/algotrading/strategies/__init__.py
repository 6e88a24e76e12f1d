"""Strategies turn prices into desired positions; the backtest engine turns those into fills.

A strategy's `targets(prices, **params)` returns, for every bar, the position wanted after that
bar's close (+1 long, -1 short, 0 flat; fractions scale the size), computed only from data up to
that close. `grid(prices, combos)` does the same for many parameter sets at once, one column each,
so a sweep scores them without a Python loop per combination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Strategy:
    """A named rule set with the workshop's parameter names and defaults."""

    name: str
    grid: Callable[[pd.DataFrame, list[dict[str, Any]]], np.ndarray]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    size: float | None = None  # the workshop's default number of shares per trade
    valid: Callable[[Mapping[str, Any]], bool] = lambda params: True

    def targets(self, prices: pd.DataFrame, **params: Any) -> np.ndarray:
        """Desired position per bar for one parameter set (unknown names raise TypeError)."""
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"strategy {self.name!r} has no parameter(s) {sorted(unknown)}; "
                            f"it takes {sorted(self.defaults)}")
        return self.grid(prices, [{**self.defaults, **params}])[:, 0]


def get(strategy: str | Strategy) -> Strategy:
    """The strategy registered under `strategy` (or `strategy` itself if it is one)."""
    if isinstance(strategy, Strategy):
        return strategy
    from algotrading.strategies import breakout, sma

    known = {"sma": sma.STRATEGY, "breakout": breakout.STRATEGY}
    try:
        return known[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(known)}") from None
