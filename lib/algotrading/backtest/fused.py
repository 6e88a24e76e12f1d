"""The fused sweeps (SMA and EMA crossovers, breakout): targets computed inside the compiled loop,
combinations in parallel.

`sweep("sma" or "ema", ...)` without engine settings in its grid comes here (the EMA the same way
with its own averages, `ema.ema`, exact already, so a tie is an exact zero). One table of moving averages
(windows x bars, `strategies.sma.averages`, the same numbers `sma.grid` computes) is built once;
then each combination, in a numba `prange` loop, derives its targets bar by bar from two rows of
that table (the rules of `sma.grid`: the sign of fast - slow; where the two are within
`sma.NEAR` x close, both averages summed exactly as `math.fsum` does, and an exact tie keeps the
previous target, short on the first bar; `long_only` flat instead of short) into a buffer of one
row of bars, and runs `kernel.simulate` (the shared rules) on it, metrics only. No combinations x
bars matrix is built, so memory grows with bars + windows x bars, not with combinations.

The breakout the same way: one table of channels per window (`breakout.channel`: highest and
lowest close of the bars before, windows x bars each), then per combination its targets (the rules
of `breakout.targets`) and `kernel.simulate`.

Threads: numba's pool, `NUMBA_NUM_THREADS` (default: every core; `threads()`), the one setting
that bounds every sweep (the thread pool of other strategies' blocks takes the same number).
tests/test_fused.py holds every row to the unfused path (the strategy's grid, then the kernel).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from algotrading import rules
from algotrading.backtest import kernel
from algotrading.strategies import breakout, ema, sma

PARTIALS = 128  # exact summation: non-overlapping partials of a float64 sum (at most ~40)


def threads() -> int:
    """The threads a sweep uses: numba's setting (NUMBA_NUM_THREADS, else the cores)."""
    return numba.get_num_threads()


@rules.compiled(depends=(kernel,))
def exact_sum(x: np.ndarray, lo: int, hi: int) -> float:
    """sum(x[lo:hi]) correctly rounded: CPython's math.fsum (Shewchuk's partials with its
    half-even fix-up), for finite values."""
    p = np.empty(PARTIALS)
    n = 0
    for k in range(lo, hi):
        v = x[k]
        i = 0
        for j in range(n):
            y = p[j]
            if abs(v) < abs(y):
                v, y = y, v
            top = v + y
            low = y - (top - v)
            if low != 0.0:
                p[i] = low
                i += 1
            v = top
        n = i
        if v != 0.0:
            p[n] = v
            n += 1
    total = 0.0
    low = 0.0
    if n > 0:
        n -= 1
        total = p[n]
        while n > 0:
            v = total
            n -= 1
            y = p[n]
            total = v + y
            low = y - (total - v)
            if low != 0.0:
                break
        if n > 0 and ((low < 0.0 and p[n - 1] < 0.0) or (low > 0.0 and p[n - 1] > 0.0)):
            y = low * 2.0
            v = total + y
            if y == v - total:
                total = v
    return total


class Cross(NamedTuple):
    """One crossover combination as a rule of `kernel.cycle` (which passes it the series close,
    fast average, slow average): windows f and s; `exact`: the SMA's near-tie rule."""

    f: int
    s: int
    long_only: bool
    exact: bool


@rules.compiled(depends=(kernel,))
def tie_gap(close: np.ndarray, t: int, f: int, s: int) -> float:
    """SMA fast - SMA slow at bar t, each average summed exactly (`exact_sum`)."""
    return exact_sum(close, t + 1 - f, t + 1) / f - exact_sum(close, t + 1 - s, t + 1) / s


@register_jitable
def cross_step(x, close, fast, slow, t, prev):
    """The crossover's target at bar t from that bar's close and averages (the rules of
    sma.grid, or with `x.exact` False those of ema.grid: averages already exact, a tie is an
    exact zero), given the previous bar's side `prev`: (target, side, whether the averages are
    within sma.NEAR x close, to be decided by `cross_settle`)."""
    d = fast - slow
    if d > 0.0:
        v = 1.0
    elif d < 0.0:
        v = -1.0
    else:
        v = 0.0  # the warm-up (NaN), or an exact zero: decided below
    if not x.exact:
        if d == 0.0:  # False for NaN
            v = -1.0 if t == max(x.f, x.s) - 1 else prev
    elif abs(d) <= sma.NEAR * close:  # False for NaN
        return 0.0, prev, True
    return (0.0 if x.long_only and v < 0.0 else v), v, False


@register_jitable
def cross_settle(x, close, t, prev):
    """A near tie of the SMA's averages at bar t: both summed exactly (`tie_gap`); an exact tie
    keeps the previous side, short on the first bar. (target, side)."""
    gap = tie_gap(close, t, x.f, x.s)
    if gap == 0.0:
        v = -1.0 if t == max(x.f, x.s) - 1 else prev
    else:
        v = 1.0 if gap > 0.0 else -1.0
    return (0.0 if x.long_only and v < 0.0 else v), v


@overload(kernel.target)
def _cross_target(rule, a, b, c, t, state):
    if isinstance(rule, types.BaseNamedTuple) and rule.instance_class is Cross:
        return lambda rule, a, b, c, t, state: cross_step(rule, a, b, c, t, state)
    return None


@overload(kernel.settle)
def _cross_settle(rule, x0, x1, x2, t, state):
    if isinstance(rule, types.BaseNamedTuple) and rule.instance_class is Cross:
        return lambda rule, x0, x1, x2, t, state: cross_settle(rule, x0, t, state)
    return None


@rules.compiled(depends=(kernel,))
def sma_targets(close: np.ndarray, fast: np.ndarray, slow: np.ndarray, f: int, s: int,
                long_only: bool, first: int, want: np.ndarray, exact: bool = True) -> None:
    """One combination's targets (`cross_step`) for bars first.. into `want`."""
    x = Cross(f, s, long_only, exact)
    prev = 0.0
    for t in range(len(close)):
        v, prev, near = cross_step(x, close[t], fast[t], slow[t], t, prev)
        if near:
            v, prev = cross_settle(x, close, t, prev)
        if t >= first:
            want[t - first] = v


@rules.compiled(depends=(kernel,))
def metrics_only(bars, series, rule, first, r, stats, row):
    """`kernel.cycle` for metrics only (no curve, no trades), compiled on its own here (with the
    rules' overloads of this file, and cached with them): inside the parallel loops below, the
    bar loop would go through numba's parallel passes and run slower."""
    none = np.empty(0)
    kernel.cycle(bars, series, rule, first, r, none, none, np.empty(0, kernel.TRADE_DTYPE), stats,
                 row)


@rules.compiled(parallel=True, depends=(kernel,))
def cross_sweep(bars, close, first, table, fast_row, slow_row, fast, slow, long_only, exact, r,
                stats):
    """Every combination k: `kernel.cycle` with its targets computed bar by bar from rows
    fast_row[k] / slow_row[k] of `table` (windows fast[k] / slow[k]) over `close` (all bars),
    on `bars` (the bars from `first` on), metrics only, into stats[k]; `exact`: the SMA's
    near-tie rule (see cross_step)."""
    for k in numba.prange(len(fast_row)):
        metrics_only(bars, (close, table[fast_row[k]], table[slow_row[k]]),
                     Cross(fast[k], slow[k], long_only[k], exact), first, r, stats, k)


@rules.compiled(depends=(kernel,))
def average(close: np.ndarray, csum: np.ndarray, n: int) -> np.ndarray:
    """One simple moving average from the cumulative sum `csum` (len(close) + 1), in the order of
    operations of `sma.averages`, so the numbers are the same to the bit."""
    out = np.full(len(close), np.nan)
    for t in range(n - 1, len(close)):
        out[t] = (csum[t + 1] - csum[t + 1 - n]) / n
    return out


@rules.compiled(parallel=True, depends=(kernel,))
def sma_paths(o, h, lo, c, f, s, long_only, r, equity, stats):
    """One SMA (f, s) run per row of the (paths x bars) price arrays: its averages, its targets
    and `kernel.simulate`, paths in parallel; equity per bar into equity[i], metrics into
    stats[i]."""
    n = c.shape[1]
    for i in numba.prange(c.shape[0]):
        close = c[i]
        csum = np.zeros(n + 1)
        for t in range(n):
            csum[t + 1] = csum[t] + close[t]
        want = np.empty(n)
        sma_targets(close, average(close, csum, f), average(close, csum, s), f, s, long_only, 0,
                    want)
        kernel.simulate(kernel.Bars(o[i], h[i], lo[i], close), want, r, equity[i], np.empty(n),
                        np.empty(0, kernel.TRADE_DTYPE), stats, i)


def run_cross(kind: str, bars: kernel.Bars, close: np.ndarray, first: int, fast: np.ndarray,
              slow: np.ndarray, long_only: np.ndarray, r: rules.Rules) -> np.ndarray:
    """STATS_DTYPE rows, one per (fast, slow, long_only) combination of the crossover `kind`
    ("sma" or "ema"): `close` is every bar (the averages' history), `bars` the ones traded (from
    bar `first` on). The table holds the strategy's own averages (sma.averages, ema.ema)."""
    windows, index = np.unique(np.concatenate([fast, slow]), return_inverse=True)
    if kind == "sma":
        table = sma.averages(close, windows.tolist())
    else:
        table = np.stack([ema.ema(close, n) for n in windows.tolist()])
    stats = kernel.stats_table(len(fast))
    cross_sweep(bars, close, first, table, index[:len(fast)], index[len(fast):],
                fast.astype(np.int64), slow.astype(np.int64), long_only.astype(np.bool_),
                kind == "sma", r, stats)
    return stats


class Channel(NamedTuple):
    """One breakout combination as a rule of `kernel.cycle` (which passes it the series close,
    channel high, channel low): the sides it may take."""

    go_long: bool
    go_short: bool


@register_jitable
def breakout_step(x, close, high, low, side):
    """The breakout's side after a bar with this close and channel (the rules of
    breakout.targets: when flat, long above the channel's high or short below its low; out again
    once the close is back inside it; NaN channels decide nothing), given the side before."""
    if side == 0.0:
        if x.go_long and close > high:
            side = 1.0
        elif x.go_short and close < low:
            side = -1.0
    elif (side > 0.0 and close < high) or (side < 0.0 and close > low):
        side = 0.0
    return side


@overload(kernel.target)
def _channel_target(rule, a, b, c, t, state):
    if isinstance(rule, types.BaseNamedTuple) and rule.instance_class is Channel:
        def target(rule, a, b, c, t, state):
            side = breakout_step(rule, a, b, c, state)
            return side, side, False
        return target
    return None


@overload(kernel.settle)
def _channel_settle(rule, x0, x1, x2, t, state):  # never asked: the breakout has no hard case
    if isinstance(rule, types.BaseNamedTuple) and rule.instance_class is Channel:
        return lambda rule, x0, x1, x2, t, state: (state, state)
    return None


@rules.compiled(depends=(kernel,))
def breakout_targets(close: np.ndarray, high: np.ndarray, low: np.ndarray, go_long: bool,
                     go_short: bool, first: int, want: np.ndarray) -> None:
    """One combination's targets (`breakout_step`) for bars first.. into `want`."""
    x = Channel(go_long, go_short)
    side = 0.0
    for t in range(len(close)):
        side = breakout_step(x, close[t], high[t], low[t], side)
        if t >= first:
            want[t - first] = side


@rules.compiled(parallel=True, depends=(kernel,))
def breakout_sweep(bars, close, first, highs, lows, row, go_long, go_short, r, stats):
    """Every combination k: `kernel.cycle` with its targets computed bar by bar from rows row[k]
    of the channel tables `highs` / `lows` over `close` (all bars), on `bars` (the bars from
    `first` on), metrics only, into stats[k]."""
    for k in numba.prange(len(row)):
        metrics_only(bars, (close, highs[row[k]], lows[row[k]]), Channel(go_long[k], go_short[k]),
                     first, r, stats, k)


def run_breakout(bars: kernel.Bars, close: np.ndarray, first: int, period: np.ndarray,
                 go_long: np.ndarray, go_short: np.ndarray, r: rules.Rules) -> np.ndarray:
    """STATS_DTYPE rows, one per (period, go_long, go_short) breakout combination; `close` is
    every bar (the channels' history), `bars` the ones traded (from bar `first` on). The tables
    hold the strategy's own channels (breakout.channel), built once per window."""
    windows, row = np.unique(period, return_inverse=True)
    channels = [breakout.channel(close, w) for w in windows.tolist()]
    highs = np.stack([h for h, _ in channels])
    lows = np.stack([lo for _, lo in channels])
    stats = kernel.stats_table(len(period))
    breakout_sweep(bars, close, first, highs, lows, row.astype(np.int64),
                   go_long.astype(np.bool_), go_short.astype(np.bool_), r, stats)
    return stats


