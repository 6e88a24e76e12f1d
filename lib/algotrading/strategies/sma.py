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


def moving_averages(close: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Simple moving averages, one row per period, via one cumulative sum (NaN until full)."""
    csum = np.concatenate([[0.0], np.cumsum(close)])
    out = np.full((len(periods), len(close)), np.nan)
    for j, n in enumerate(periods):
        out[j, n - 1:] = (csum[n:] - csum[:-n]) / n
    return out


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (fast_period, slow_period, long_only) sets: (bars x combos) int8."""
    close = prices["close"].to_numpy(float)
    fast = np.array([int(c["fast_period"]) for c in combos], dtype=int)
    slow = np.array([int(c["slow_period"]) for c in combos], dtype=int)
    periods, index = np.unique(np.concatenate([fast, slow]), return_inverse=True)
    mas = moving_averages(close, periods)
    diff = mas[index[:len(combos)]] - mas[index[len(combos):]]  # (combos x bars)
    # The cumulative-sum averages carry ~1e-12 relative error; where the two averages are that
    # close, recompute them exactly (math.fsum, as backtrader does) so ties and signs match.
    with np.errstate(invalid="ignore"):
        near = np.abs(diff) <= 1e-9 * close  # NaN (warm-up) is never near
    out = (diff > 0).view(np.int8) - (diff < 0).view(np.int8)  # warm-up (NaN) stays 0: flat
    near_j, near_t = np.nonzero(near)
    first = np.maximum(fast, slow) - 1  # first decision bar per combo
    # A tie keeps the position (when flat, a tie goes short); ties are rare, so walk them in order.
    for j, t in zip(near_j.tolist(), near_t.tolist(), strict=True):  # sorted by combo, then bar
        exact = (math.fsum(close[t + 1 - fast[j]:t + 1]) / fast[j]
                 - math.fsum(close[t + 1 - slow[j]:t + 1]) / slow[j])
        if exact == 0:
            out[j, t] = -1 if t == first[j] else out[j, t - 1]
        else:
            out[j, t] = 1 if exact > 0 else -1
    long_only = np.array([c["long_only"] for c in combos], dtype=bool)
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
