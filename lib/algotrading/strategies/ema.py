"""EMA crossover, the workshop's tuning example (EMA 8/21): the SMA crossover's rules on
exponential averages. When flat, go long if EMA(fast) > EMA(slow), else short; reverse when the
order flips (a tie keeps the position); `long_only` goes flat instead of short.

Each average is seeded like backtrader's ExponentialMovingAverage: the simple mean of the first
`period` closes (math.fsum), then `ema = ema_prev * (1 - alpha) + close * alpha` with
alpha = 2 / (period + 1), computed in that order so the values match backtrader's bit for bit.
Decisions start on the bar where both averages exist (backtrader's minimum period).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from algotrading.strategies import Strategy, sma


def ema(close: np.ndarray, period: int) -> np.ndarray:
    """Exponential moving average seeded with the first `period` closes' mean (NaN before)."""
    out = np.full(len(close), np.nan)
    if len(close) < period:
        return out
    alpha = 2.0 / (1.0 + period)
    alpha1 = 1.0 - alpha
    values = close.tolist()
    prev = math.fsum(values[:period]) / period
    seq = [prev]
    for x in values[period:]:  # a recurrence: each value needs the last
        prev = prev * alpha1 + x * alpha
        seq.append(prev)
    out[period - 1:] = seq
    return out


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (fast_period, slow_period, long_only) sets: (bars x combos) int8."""
    close = prices["close"].to_numpy(float)
    fast = np.array([int(c["fast_period"]) for c in combos], dtype=int)
    slow = np.array([int(c["slow_period"]) for c in combos], dtype=int)
    averages = {n: ema(close, n) for n in np.unique(np.concatenate([fast, slow])).tolist()}
    diff = np.array([averages[f] - averages[s] for f, s in zip(fast.tolist(), slow.tolist(),
                                                                strict=True)]).reshape(len(combos), -1)
    out = (diff > 0).view(np.int8) - (diff < 0).view(np.int8)  # warm-up (NaN) stays 0: flat
    first = np.maximum(fast, slow) - 1  # first decision bar per combo
    # A tie keeps the position (when flat, a tie goes short, the workshop's `else: sell`); the
    # averages are exact (as backtrader computes them), so ties are exact zeros, walked in order.
    for j, t in zip(*(a.tolist() for a in np.nonzero(diff == 0)), strict=True):
        out[j, t] = -1 if t == first[j] else out[j, t - 1]
    long_only = np.array([c["long_only"] for c in combos], dtype=bool)
    out[long_only] = np.maximum(out[long_only], 0)
    return out.T


STRATEGY = Strategy(
    name="ema",
    grid=grid,
    # sma's parameters and rule (fast_period below slow_period), with the workshop's EMA 8/21
    params={**sma.STRATEGY.params,
            "fast_period": replace(sma.STRATEGY.params["fast_period"], default=8),
            "slow_period": replace(sma.STRATEGY.params["slow_period"], default=21)},
    rule=sma.STRATEGY.rule,
)
