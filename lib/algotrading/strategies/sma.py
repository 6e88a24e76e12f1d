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

from algotrading.strategies import Param, Strategy

NEAR = 1e-9  # |SMA fast - SMA slow| <= NEAR x close: recomputed exactly (see `grid`)


def averages(close: np.ndarray, periods: list[int]) -> np.ndarray:
    """Simple moving averages from one cumulative sum, one row per period (periods x bars; NaN
    before a window fills): the table `grid` and the fused sweep (backtest.fused) both read."""
    csum = np.zeros(len(close) + 1)
    np.cumsum(close, out=csum[1:])
    mas = np.full((len(periods), len(close)), np.nan)
    for j, n in enumerate(periods):
        np.subtract(csum[n:], csum[:-n], out=mas[j, n - 1:])
        mas[j, n - 1:] /= n
    return mas


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (fast_period, slow_period, long_only) sets: (bars x combos) int8."""
    close = prices["close"].to_numpy(float)
    fast = [int(c["fast_period"]) for c in combos]
    slow = [int(c["slow_period"]) for c in combos]
    periods = sorted({*fast, *slow})
    row = {n: j for j, n in enumerate(periods)}
    mas = averages(close, periods)
    diff = mas[[row[n] for n in fast]] - mas[[row[n] for n in slow]]  # (combos x bars)
    out = (diff > 0).view(np.int8) - (diff < 0).view(np.int8)  # warm-up (NaN) stays 0: flat
    with np.errstate(invalid="ignore"):
        near = np.abs(diff) <= NEAR * close  # NaN (warm-up) is never near
    if near.any():
        # The cumulative-sum averages carry ~1e-12 relative error; where the two averages are
        # that close, recompute them exactly (math.fsum, as backtrader does) so ties and signs
        # match. A tie keeps the position (when flat, a tie goes short); ties are rare, so walk
        # them in order (sorted by combo, then bar).
        near_j, near_t = np.nonzero(near)
        for j, t in zip(near_j.tolist(), near_t.tolist(), strict=True):
            f, s = fast[j], slow[j]
            exact = math.fsum(close[t + 1 - f:t + 1]) / f - math.fsum(close[t + 1 - s:t + 1]) / s
            if exact == 0:
                out[j, t] = -1 if t == max(f, s) - 1 else out[j, t - 1]
            else:
                out[j, t] = 1 if exact > 0 else -1
    long_only = [j for j, c in enumerate(combos) if c["long_only"]]
    if long_only:
        out[long_only] = np.maximum(out[long_only], 0)
    return out.T


def _rule(params: Mapping[str, Any]) -> str | None:
    if params["fast_period"] >= params["slow_period"]:
        return (f"fast_period ({params['fast_period']}) must be below slow_period "
                f"({params['slow_period']})")
    return None


STRATEGY = Strategy(
    name="sma",
    grid=grid,
    params={
        "fast_period": Param(9, int, ge=1, lookback=True, help="bars in the fast average"),
        "slow_period": Param(21, int, ge=2, lookback=True, help="bars in the slow average"),
        "long_only": Param(False, bool, help="go flat instead of short"),
    },
    rule=_rule,
)
