"""The fused lower bound: the least work an SMA sweep (or a universe of SMA runs) needs.

One table of moving averages (windows x bars, from a cumulative sum), built once; then per
combination (or symbol) one pass over the bars: the decision at each close (long if fast > slow,
flat if below, keep on a tie; first decision on the first bar with the slow average), the fill at
the next open, all-in whole shares within the cash (the buying-power check), no costs; the final
value marks what is held to the last close. Combinations run in parallel (numba prange, bounded by
NUMBA_NUM_THREADS). It reports final values and trade counts only, where our engine computes
every metric: it is a bound to measure the gap against, not an engine. Its averages come from a
cumulative sum, so an exact tie between two averages may round to one side (ours sum exactly):
`bench/scaling.py` reports how many combinations agree with ours.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True)
def ma_table(close: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Simple moving averages, one row per window (NaN before the window fills)."""
    n = len(close)
    sums = np.zeros(n + 1)
    for t in range(n):
        sums[t + 1] = sums[t] + close[t]
    out = np.full((len(windows), n), np.nan)
    for j in range(len(windows)):
        w = windows[j]
        for t in range(w - 1, n):
            out[j, t] = (sums[t + 1] - sums[t + 1 - w]) / w
    return out


@nb.njit(cache=True, inline="always")
def _one(open_: np.ndarray, close: np.ndarray, fast: np.ndarray, slow: np.ndarray,
         cash: float) -> tuple[float, int, int]:
    money, held, want, trades = cash, 0.0, 0, 0
    for t in range(len(close)):
        if t > 0:  # the order decided at the last close fills at this open
            if want == 1 and held == 0.0:
                qty = math.floor(money / open_[t])
                if qty > 0:
                    held, money = qty, money - qty * open_[t]
            elif want == 0 and held > 0.0:
                money, held, trades = money + held * open_[t], 0.0, trades + 1
        a, b = fast[t], slow[t]
        if not math.isnan(b):
            if a > b:
                want = 1
            elif a < b:
                want = 0
    return money + held * close[-1], trades, int(held > 0.0)


@nb.njit(cache=True, parallel=True)
def sweep(open_: np.ndarray, close: np.ndarray, table: np.ndarray, fast: np.ndarray,
          slow: np.ndarray, cash: float) -> np.ndarray:
    """(final value, closed trades, open trades) per combination; `fast`/`slow` index rows of
    `table`."""
    out = np.empty((len(fast), 3))
    for k in nb.prange(len(fast)):
        out[k, 0], out[k, 1], out[k, 2] = _one(open_, close, table[fast[k]], table[slow[k]], cash)
    return out


@nb.njit(cache=True, parallel=True)
def universe(open_: np.ndarray, close: np.ndarray, fast: int, slow: int,
             cash: float) -> np.ndarray:
    """(final value, closed trades, open trades) per symbol (rows of the symbols x bars arrays)."""
    windows = np.array([fast, slow])
    out = np.empty((close.shape[0], 3))
    for k in nb.prange(close.shape[0]):
        table = ma_table(close[k], windows)
        out[k, 0], out[k, 1], out[k, 2] = _one(open_[k], close[k], table[0], table[1], cash)
    return out


def run_sweep(open_: np.ndarray, close: np.ndarray, fast: np.ndarray, slow: np.ndarray,
              cash: float) -> np.ndarray:
    """The table once, then every combination (windows given per combination)."""
    windows, index = np.unique(np.concatenate([fast, slow]), return_inverse=True)
    table = ma_table(np.ascontiguousarray(close, dtype=float), windows.astype(np.int64))
    return sweep(np.ascontiguousarray(open_, dtype=float), np.ascontiguousarray(close, dtype=float),
                 table, index[:len(fast)], index[len(fast):], cash)
