"""The workshop's SMA crossover: when flat, go long if SMA(fast) > SMA(slow), else short; reverse
when the order of the two averages flips (a tie keeps the position). `long_only` goes flat instead
of short. Decisions start on the first bar where both averages exist (backtrader's minimum period).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from algotrading.strategies import Strategy


def moving_averages(close: np.ndarray, periods: set[int]) -> dict[int, np.ndarray]:
    """Simple moving average per period via one cumulative sum (NaN before the window is full)."""
    csum = np.concatenate([[0.0], np.cumsum(close)])
    out = {}
    for n in periods:
        ma = np.full(len(close), np.nan)
        ma[n - 1:] = (csum[n:] - csum[:-n]) / n
        out[n] = ma
    return out


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (fast_period, slow_period, long_only) sets: (bars x combos) int8."""
    close = prices["close"].to_numpy(float)
    fast = np.array([int(c["fast_period"]) for c in combos])
    slow = np.array([int(c["slow_period"]) for c in combos])
    mas = moving_averages(close, set(fast) | set(slow))
    diff = np.stack([mas[f] for f in fast], axis=1) - np.stack([mas[s] for s in slow], axis=1)
    # The cumulative-sum averages carry ~1e-12 relative error; where the two averages are that
    # close, recompute them exactly (math.fsum, as backtrader does) so ties and signs match.
    for t, j in zip(*np.nonzero(np.abs(diff) <= 1e-9 * close[:, None]), strict=True):
        diff[t, j] = (math.fsum(close[t + 1 - fast[j]:t + 1]) / fast[j]
                      - math.fsum(close[t + 1 - slow[j]:t + 1]) / slow[j])
    side = np.sign(diff)
    first = np.maximum(fast, slow) - 1  # first decision bar per combo
    cols = np.arange(len(combos))
    live = first < len(close)
    start = side[first[live], cols[live]]
    side[first[live], cols[live]] = np.where(start == 0, -1.0, start)  # flat and a tie: short
    rows = np.arange(len(close))[:, None]
    known = (side != 0) & ~np.isnan(side) & (rows >= first)
    last = np.maximum.accumulate(np.where(known, rows, 0), axis=0)
    out = np.where(rows >= first, side[last, cols], 0.0)
    long_only = np.array([bool(c.get("long_only", False)) for c in combos])
    out = np.where(long_only & (out < 0), 0.0, out)
    return out.astype(np.int8)


def _valid(params: Mapping[str, Any]) -> bool:
    return int(params["fast_period"]) < int(params["slow_period"])


STRATEGY = Strategy(
    name="sma",
    grid=grid,
    defaults={"fast_period": 9, "slow_period": 21, "long_only": False},
    size=1000,
    valid=_valid,
)
