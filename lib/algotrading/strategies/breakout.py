"""The workshop's daily breakout: when flat, go long if the close is above the highest close of
the previous `period` bars (`go_long`), short if below the lowest (`go_short`); a long exits when
the close falls back below that highest close, a short when it rises above that lowest close.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from algotrading.strategies import Param, Strategy


def channel(close: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest and lowest close of the `period` bars before each bar (NaN until they exist).

    Each window's extreme is the larger (smaller) of two running extremes over blocks of `period`
    bars, one running forward from a block's start, one backward from its end (van Herk and
    Gil-Werman), so the cost does not grow with `period`; max and min are exact, so this is the
    plain window-by-window max and min to the bit, a NaN inside a window included."""
    high = np.full(len(close), np.nan)
    low = np.full(len(close), np.nan)
    if len(close) > period:
        high[period:] = _running(close[:-1], period, np.maximum, -np.inf)
        low[period:] = _running(close[:-1], period, np.minimum, np.inf)
    return high, low


def _running(x: np.ndarray, w: int, pick: np.ufunc, pad: float) -> np.ndarray:
    """pick.reduce over every window x[i:i + w], i = 0..len(x) - w."""
    blocks = np.concatenate([x, np.full(-len(x) % w, pad)]).reshape(-1, w)
    ahead = pick.accumulate(blocks, axis=1).ravel()  # from each block's start
    behind = pick.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()  # to each block's end
    starts = len(x) - w + 1
    return pick(behind[:starts], ahead[w - 1:w - 1 + starts])


def targets(close: np.ndarray, period: int, go_long: bool, go_short: bool) -> np.ndarray:
    """The breakout position per bar; a plain loop, since each decision depends on the last."""
    high, low = channel(close, period)
    enter_long = (go_long & (close > high)).tolist()  # NaN comparisons are False: no decision
    enter_short = (go_short & (close < low)).tolist()
    exit_long = (close < high).tolist()
    exit_short = (close > low).tolist()
    out = [0] * len(close)
    side = 0
    for t in range(len(close)):
        if side == 0:
            side = 1 if enter_long[t] else -1 if enter_short[t] else 0
        elif (side > 0 and exit_long[t]) or (side < 0 and exit_short[t]):
            side = 0
        out[t] = side
    return np.array(out, dtype=np.int8)


def grid(prices: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
    """Targets for many (period, go_long, go_short) sets, one column each."""
    close = prices["close"].to_numpy(float)
    cache: dict[tuple, np.ndarray] = {}
    cols = []
    for c in combos:
        key = (c["period"], c["go_long"], c["go_short"])
        if key not in cache:
            cache[key] = targets(close, *key)
        cols.append(cache[key])
    return np.stack(cols, axis=1) if cols else np.zeros((len(close), 0), dtype=np.int8)


STRATEGY = Strategy(
    name="breakout",
    grid=grid,
    params={
        "period": Param(9, int, ge=1, lookback=True, help="bars in the channel"),
        "go_long": Param(True, bool, help="enter longs above the channel"),
        "go_short": Param(True, bool, help="enter shorts below the channel"),
    },
)
