"""The fused sweeps (SMA and EMA crossovers, breakout): targets computed inside the compiled loop,
combinations in parallel.

`sweep("sma" or "ema", ...)` without engine settings in its grid comes here (the EMA the same way
with its own averages, `ema.ema`, exact already, so a tie is an exact zero). One table of moving
averages (windows x bars) is built once, compiled and windows in parallel (`tables`), with the
numbers `sma.grid` computes (`sma.averages`, or `ema.ema`) to the bit; then each combination, in
a numba `prange` loop, derives its targets from two rows of that table (the rules of `sma.grid`:
the sign of fast - slow, in one vectorised pass; where the two are within `sma.NEAR` x close,
both averages summed exactly as `math.fsum` does, and an exact tie keeps the previous target,
short on the first bar, bar by bar; `long_only` flat instead of short) into a buffer of one row
of bars, and runs `kernel.simulate` (the shared rules) on it, metrics only. No combinations x
bars matrix is built, so memory grows with bars + windows x bars, not with combinations.

The breakout the same way: one table of channels per window (`breakout.channel`'s highest and
lowest close of the bars before, windows x bars each, by `tables`), then per combination its
targets (the rules of `breakout.targets`) and `kernel.simulate`.

One parameter set on many symbols (`run_many`) or paths (what-if's `scenarios.run`) goes the other
way round: `run_row` checks one symbol's prices (engine.checked's rules), computes its own
indicators (the SMA from a cumulative sum as `sma.averages`, `ema_row` as `ema.ema`, `channel_row`
as `breakout.channel`, to the bit) and targets, and simulates; `run_blocks` runs it for symbols
read in place (each frame's own block of numbers, `engine.block`), `run_paths` for the rows of
(paths x bars) arrays, rows in parallel. tests/test_run_many.py holds every row to `backtest.run`.

Threads: numba's pool, `NUMBA_NUM_THREADS` (default: every core; `threads()`), the one setting
that bounds every sweep (the thread pool of other strategies' blocks takes the same number).
tests/test_fused.py holds every row to the unfused path (the strategy's grid, then the kernel).
"""

from __future__ import annotations

from collections.abc import Iterable

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic

from algotrading import rules
from algotrading.backtest import kernel
from algotrading.strategies import sma

PARTIALS = 128  # exact summation: non-overlapping partials of a float64 sum (at most ~40)
PARTS = 8  # a sweep's combinations per thread come in this many parts, each with its own buffers
# (allocated once per part: a long series' buffers, fresh from the system per combination, cost
# more than the run; several parts per thread even out combinations of unequal cost)


def threads() -> int:
    """The threads a sweep uses: numba's setting (NUMBA_NUM_THREADS, else the cores)."""
    return numba.get_num_threads()


def _parts(count: int) -> int:
    """How many parts a sweep's `count` combinations run in (`PARTS` per thread)."""
    return max(1, min(count, PARTS * threads()))


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


@rules.compiled(depends=(kernel,))
def near_tie(close: np.ndarray, t: int, f: int, s: int, prev: float) -> float:
    """The SMA's side at bar t where its averages are within sma.NEAR x close: both summed
    exactly; an exact tie keeps the previous side `prev`, short on the first bar."""
    gap = exact_sum(close, t + 1 - f, t + 1) / f - exact_sum(close, t + 1 - s, t + 1) / s
    if gap == 0.0:
        return -1.0 if t == max(f, s) - 1 else prev
    return 1.0 if gap > 0.0 else -1.0


@rules.compiled(depends=(kernel,))
def sma_targets(close: np.ndarray, fast: np.ndarray, slow: np.ndarray, f: int, s: int,
                long_only: bool, first: int, want: np.ndarray, exact: bool = True) -> None:
    """One combination's targets (the rules of sma.grid, or with `exact` False those of
    ema.grid: averages already exact, a tie is an exact zero) for bars first.. into `want`.
    Where no bar from `first` on is near a tie, a target is the sign of fast - slow (NaN, the
    warm-up: flat), whatever came before: one branch-free, vectorised pass, which also counts
    the bars near a tie; a series with one takes the rules in full (`tie_targets`)."""
    short = 0.0 if long_only else -1.0
    ties = 0
    a, b, price = fast[first:], slow[first:], close[first:]  # indexed from 0: vector loads
    for t in range(len(price)):
        d = a[t] - b[t]
        want[t] = 1.0 if d > 0.0 else (short if d < 0.0 else 0.0)
        ties += (abs(d) <= sma.NEAR * price[t]) if exact else (d == 0.0)  # False for NaN
    if ties:
        tie_targets(close, fast, slow, f, s, long_only, first, want, exact)


@rules.compiled(depends=(kernel,))
def tie_targets(close: np.ndarray, fast: np.ndarray, slow: np.ndarray, f: int, s: int,
                long_only: bool, first: int, want: np.ndarray, exact: bool = True) -> None:
    """`sma_targets` bar by bar, for a series with a bar near a tie: an exact tie keeps the
    previous target (short on the first bar), so every bar from the start is walked. The rare
    near tie is a call (`near_tie`), so the loop itself stays small."""
    prev = 0.0
    warm = max(f, s) - 1
    for t in range(len(close)):
        d = fast[t] - slow[t]
        if d > 0.0:
            v = 1.0
        elif d < 0.0:
            v = -1.0
        else:
            v = 0.0  # the warm-up (NaN), or an exact zero: decided below
        if not exact:
            if d == 0.0:  # False for NaN
                v = -1.0 if t == warm else prev
        elif abs(d) <= sma.NEAR * close[t]:  # False for NaN
            v = near_tie(close, t, f, s, prev)
        prev = v
        if t >= first:
            want[t - first] = 0.0 if long_only and v < 0.0 else v


@rules.compiled(parallel=True, depends=(kernel,))
def cross_sweep(bars, close, first, table, fast_row, slow_row, fast, slow, long_only, exact, r,
                stats, parts):
    """Every combination k: targets from rows fast_row[k] / slow_row[k] of `table` (windows
    fast[k] / slow[k]) over `close` (all bars), simulated on `bars` (the bars from `first` on)
    into stats[k]; `exact`: the SMA's near-tie rule (see sma_targets). The combinations run in
    `parts` parts in parallel, each with one set of buffers (`PARTS`)."""
    n = len(bars.close)
    count = len(fast_row)
    for part in numba.prange(parts):
        want, equity, position = np.empty(n), np.empty(n), np.empty(n)
        none = np.empty(0, kernel.TRADE_DTYPE)
        for k in range(part * count // parts, (part + 1) * count // parts):
            sma_targets(close, table[fast_row[k]], table[slow_row[k]], fast[k], slow[k],
                        long_only[k], first, want, exact)
            kernel.simulate(bars, want, r, equity, position, none, stats, k)


@rules.compiled(depends=(kernel,))
def cumulative(close: np.ndarray) -> np.ndarray:
    """0, then the running sum of `close` bar by bar: `np.cumsum`'s order (`sma.averages`)."""
    csum = np.zeros(len(close) + 1)
    for t in range(len(close)):
        csum[t + 1] = csum[t] + close[t]
    return csum


@rules.compiled(depends=(kernel,))
def average(close: np.ndarray, csum: np.ndarray, n: int) -> np.ndarray:
    """One simple moving average from the cumulative sum `csum` (len(close) + 1), in the order of
    operations of `sma.averages`, so the numbers are the same to the bit."""
    out = np.full(len(close), np.nan)
    for t in range(n - 1, len(close)):
        out[t] = (csum[t + 1] - csum[t + 1 - n]) / n
    return out


def sma_paths(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, f: int, s: int,
              long_only: bool, r: rules.Rules, equity: np.ndarray, stats: np.ndarray
              ) -> np.ndarray:
    """One SMA (f, s) run per row of the (paths x bars) price arrays (`run_paths`), equity per bar
    into equity[i], metrics into stats[i]; returns whether each row's prices passed
    (`valid_bars`; a row that failed was not run)."""
    ok = np.empty(len(c), np.bool_)
    run_paths(SMA, o, h, lo, c, f, s, long_only, False, r, equity, stats, ok)
    return ok


def first_bad_bar(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> int:
    """The first bar of one row that breaks `valid_bars`' rules, or -1: a bisection over
    prefixes with the same rule, for the error message of a row that failed."""
    if valid_bars(o, h, lo, c):
        return -1
    good, bad = 0, len(c)  # the first `good` bars pass; the first `bad` do not
    while bad - good > 1:
        mid = (good + bad) // 2
        if valid_bars(o[:mid], h[:mid], lo[:mid], c[:mid]):
            good = mid
        else:
            bad = mid
    return bad - 1


def run_cross(kind: str, bars: kernel.Bars, close: np.ndarray, first: int, fast: np.ndarray,
              slow: np.ndarray, long_only: np.ndarray, r: rules.Rules) -> np.ndarray:
    """STATS_DTYPE rows, one per (fast, slow, long_only) combination of the crossover `kind`
    ("sma" or "ema"): `close` is every bar (the averages' history), `bars` the ones traded (from
    bar `first` on). The table holds the strategy's own averages (`tables`)."""
    windows, index = np.unique(np.concatenate([fast, slow]), return_inverse=True)
    table = np.empty((len(windows), len(close)))
    tables(KINDS[kind], close, windows.astype(np.int64), table, table)
    stats = kernel.stats_table(len(fast))
    cross_sweep(bars, close, first, table, index[:len(fast)], index[len(fast):],
                fast.astype(np.int64), slow.astype(np.int64), long_only.astype(np.bool_),
                kind == "sma", r, stats, _parts(len(fast)))
    return stats


@rules.compiled(depends=(kernel,))
def breakout_targets(close: np.ndarray, high: np.ndarray, low: np.ndarray, go_long: bool,
                     go_short: bool, first: int, want: np.ndarray) -> None:
    """One combination's targets (the rules of breakout.targets: when flat, long above the
    channel's high or short below its low; out again once the close is back inside it; NaN
    channels decide nothing) for bars first.. into `want`."""
    side = 0.0
    for t in range(len(close)):
        if side == 0.0:
            if go_long and close[t] > high[t]:
                side = 1.0
            elif go_short and close[t] < low[t]:
                side = -1.0
        elif (side > 0.0 and close[t] < high[t]) or (side < 0.0 and close[t] > low[t]):
            side = 0.0
        if t >= first:
            want[t - first] = side


@rules.compiled(parallel=True, depends=(kernel,))
def breakout_sweep(bars, close, first, highs, lows, row, go_long, go_short, r, stats, parts):
    """Every combination k: targets from rows row[k] of the channel tables `highs` / `lows`
    over `close` (all bars), simulated on `bars` (the bars from `first` on) into stats[k]; in
    `parts` parts, as cross_sweep."""
    n = len(bars.close)
    count = len(row)
    for part in numba.prange(parts):
        want, equity, position = np.empty(n), np.empty(n), np.empty(n)
        none = np.empty(0, kernel.TRADE_DTYPE)
        for k in range(part * count // parts, (part + 1) * count // parts):
            breakout_targets(close, highs[row[k]], lows[row[k]], go_long[k], go_short[k], first,
                             want)
            kernel.simulate(bars, want, r, equity, position, none, stats, k)


def run_breakout(bars: kernel.Bars, close: np.ndarray, first: int, period: np.ndarray,
                 go_long: np.ndarray, go_short: np.ndarray, r: rules.Rules) -> np.ndarray:
    """STATS_DTYPE rows, one per (period, go_long, go_short) breakout combination; `close` is
    every bar (the channels' history), `bars` the ones traded (from bar `first` on). The tables
    hold the strategy's own channels (`tables`), built once per window."""
    windows, row = np.unique(period, return_inverse=True)
    highs, lows = np.empty((len(windows), len(close))), np.empty((len(windows), len(close)))
    tables(BREAKOUT, close, windows.astype(np.int64), highs, lows)
    stats = kernel.stats_table(len(period))
    breakout_sweep(bars, close, first, highs, lows, row.astype(np.int64),
                   go_long.astype(np.bool_), go_short.astype(np.bool_), r, stats,
                   _parts(len(period)))
    return stats


SMA, EMA, BREAKOUT = 0, 1, 2  # run_row's kinds
KINDS = {"sma": SMA, "ema": EMA, "breakout": BREAKOUT}


@rules.compiled(parallel=True, depends=(kernel,))
def tables(kind: int, close: np.ndarray, windows: np.ndarray, first: np.ndarray,
           second: np.ndarray) -> None:
    """A sweep's indicator per window j (windows in parallel), the strategy's own numbers to the
    bit: the SMA (`average`, one cumulative sum) or the EMA (`ema_row`) into first[j]; for
    BREAKOUT the channel's high and low (`channel_row`) into first[j] and second[j]."""
    csum = cumulative(close) if kind == SMA else np.empty(0)
    for j in numba.prange(len(windows)):
        if kind == SMA:
            first[j] = average(close, csum, windows[j])
        elif kind == EMA:
            first[j] = ema_row(close, windows[j])
        else:
            high, low = channel_row(close, windows[j])
            first[j] = high
            second[j] = low


@rules.compiled(depends=(kernel,))
def valid_bars(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> bool:
    """engine.checked's price rules on one row: 0 < low <= open, close <= high < inf (NaN fails
    every comparison, so this also asks for finite prices)."""
    good = True
    for t in range(len(c)):  # without branches, so the loop runs in vector instructions
        good &= ((lo[t] > 0.0) & (h[t] < np.inf) & (o[t] >= lo[t]) & (c[t] >= lo[t])
                 & (o[t] <= h[t]) & (c[t] <= h[t]))
    return good


@rules.compiled(depends=(kernel,))
def ema_row(close: np.ndarray, period: int) -> np.ndarray:
    """ema.ema to the bit: the first `period` closes' exact mean (math.fsum), then
    prev * (1 - alpha) + close * alpha in that order; NaN before."""
    out = np.full(len(close), np.nan)
    if len(close) < period:
        return out
    alpha = 2.0 / (1.0 + period)
    alpha1 = 1.0 - alpha
    prev = exact_sum(close, 0, period) / period
    out[period - 1] = prev
    for t in range(period, len(close)):
        prev = prev * alpha1 + close[t] * alpha
        out[t] = prev
    return out


@rules.compiled(depends=(kernel,))
def channel_row(close: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """breakout.channel: the highest and lowest close of the `period` bars before each bar (NaN
    until they exist), from two monotonic queues of bar numbers; max and min are exact, so the
    numbers are the strategy's for finite closes (the only ones `run_row` runs)."""
    n = len(close)
    high = np.full(n, np.nan)
    low = np.full(n, np.nan)
    up = np.empty(n, np.int64)  # bars whose close may still be a window's highest, falling
    down = np.empty(n, np.int64)  # ... lowest, rising
    uh = ut = dh = dt = 0  # each queue's head and tail
    for t in range(n - 1):  # bar t joins the window of bar t + 1
        v = close[t]
        while ut > uh and close[up[ut - 1]] <= v:
            ut -= 1
        up[ut] = t
        ut += 1
        while dt > dh and close[down[dt - 1]] >= v:
            dt -= 1
        down[dt] = t
        dt += 1
        if up[uh] <= t - period:
            uh += 1
        if down[dh] <= t - period:
            dh += 1
        if t + 1 >= period:
            high[t + 1] = close[up[uh]]
            low[t + 1] = close[down[dh]]
    return high, low


@rules.compiled(depends=(kernel,))
def run_row(kind, o, h, lo, c, a, b, x, y, r, equity, stats, row):
    """One built-in strategy's run on one symbol's bars, or False (nothing run) when its prices
    break engine.checked's rules (`valid_bars`): the strategy's indicators and targets (SMA or
    EMA: (a, b) = (fast, slow), x = long_only; BREAKOUT: a = period, x = go_long, y = go_short;
    the rules of sma.grid, ema.grid, breakout.targets), then `kernel.simulate`, its equity per
    bar into `equity` and its metrics into stats[row]."""
    if not valid_bars(o, h, lo, c):
        return False
    n = len(c)
    want = np.empty(n)
    if kind == BREAKOUT:
        high, low = channel_row(c, a)
        breakout_targets(c, high, low, x, y, 0, want)
    elif kind == EMA:
        sma_targets(c, ema_row(c, a), ema_row(c, b), a, b, x, 0, want, False)
    else:
        csum = cumulative(c)
        sma_targets(c, average(c, csum, a), average(c, csum, b), a, b, x, 0, want)
    kernel.simulate(kernel.Bars(o, h, lo, c), want, r, equity, np.empty(n),
                    np.empty(0, kernel.TRADE_DTYPE), stats, row)
    return True


@rules.compiled(parallel=True, depends=(kernel,))
def run_paths(kind, o, h, lo, c, a, b, x, y, r, equity, stats, ok):
    """`run_row` on every row i of the (paths x bars) price arrays, in parallel: equity into
    equity[i], metrics into stats[i], whether its prices passed into ok[i]."""
    for i in numba.prange(c.shape[0]):
        ok[i] = run_row(kind, o[i], h[i], lo[i], c[i], a, b, x, y, r, equity[i], stats, i)


@intrinsic
def _floats_at(typingctx, address):
    """A float64 pointer from a memory address (an integer): `run_blocks` reads each symbol's
    block where pandas keeps it, with no list or copy to build first."""
    sig = types.CPointer(types.float64)(types.intp)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@rules.compiled(parallel=True, depends=(kernel,))
def run_blocks(kind, address, shape, rows, a, b, x, y, r, stats, at, ok):
    """`run_row` on every symbol i, in parallel, reading its prices in place: the C-contiguous
    float64 (columns x bars) block of shape[i] at memory address[i] (`addresses`; the caller
    keeps the arrays alive), rows[i] the rows of open, high, low, close in it; metrics into
    stats[at[i]], whether its prices passed into ok[i]. Symbols may differ in length."""
    for i in numba.prange(rows.shape[0]):
        v = numba.carray(_floats_at(address[i]), (shape[i, 0], shape[i, 1]))
        k = rows[i]
        ok[i] = run_row(kind, v[k[0]], v[k[1]], v[k[2]], v[k[3]], a, b, x, y, r,
                        np.empty(v.shape[1]), stats, at[i])


def addresses(blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Where each C-contiguous float64 2-D array's data starts, and its shape: what
    `run_blocks` reads (the caller keeps the arrays alive until it returns)."""
    blocks = list(blocks)
    for v in blocks:
        if v.dtype != np.float64 or v.ndim != 2 or not v.flags.c_contiguous:
            raise ValueError("run_blocks reads C-contiguous float64 2-D arrays, not "
                             f"{v.dtype} {v.shape} (C-contiguous: {v.flags.c_contiguous})")
    return (np.array([v.__array_interface__["data"][0] for v in blocks], np.intp),
            np.array([v.shape for v in blocks], np.intp).reshape(-1, 2))
