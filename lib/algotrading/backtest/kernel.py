"""The compiled single-symbol simulation: the Broker's bar cycle in one numba loop, over the
shared rules (`algotrading.rules`, compiled into this loop).

`sweep`, `run_many` and `scenarios.run` use it for batches of backtests (`run_portfolio` its
many-symbol sibling, shared.py); `run`,
the RL environment and paper trading use the Broker. Both call the same rule functions for every
size, cost, buying-power check, exit, holding limit and bankruptcy; this loop and the Broker only
keep the books (cash, position, trades), and tests/parity holds the two to each other.

State is named: the settings arrive as one `rules.Rules` tuple (`Settings.rules`), the prices as
`Bars`, and the outputs are record arrays (`STATS_DTYPE` per run, `TRADE_DTYPE` per trade).
numba compiles it once and caches the machine code beside this file (`rules.compiled`, which also
drops that cache when rules.py changes).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from algotrading import rules
from algotrading.rules import BANKRUPT, MAXBARS, NONE, OPEN, SIGNAL

# The statistics of one run (record fields, per row of a `stats` array).
STATS = ("final_value", "cagr", "sharpe", "sortino", "max_drawdown", "max_drawdown_money",
         "calmar", "exposure", "gross_exposure", "turnover", "trades_closed", "trades_won",
         "pnl_sum", "pnl_squares", "gross_profit", "gross_loss", "trades_open",
         "orders_rejected", "bankrupt", "traded")
STATS_DTYPE = np.dtype([(name, np.float64) for name in STATS])
TRADE_DTYPE = np.dtype([("entry_bar", np.int64), ("exit_bar", np.int64), ("size", np.float64),
                        ("entry_price", np.float64), ("exit_price", np.float64),
                        ("commission", np.float64), ("pnl", np.float64), ("reason", np.int64)])
YEAR = 252.0


class Bars(NamedTuple):
    """One symbol's prices as contiguous float64 arrays."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


def stats_table(rows: int) -> np.ndarray:
    """An empty statistics array for `rows` runs (see STATS)."""
    return np.zeros(rows, STATS_DTYPE)


@intrinsic
def _lanes(typingctx, x, steps, start):
    """The eight lane sums of x[:8 x steps] (lane j: x[j], x[j + 8], ... in order) added to the
    eight values of `start`, as one <8 x double> addition per step: LLVM lowers it to whatever
    vector width the CPU has (one AVX-512 add, two AVX ones, four SSE2 ones), each lane its own
    chain, so no addition is reordered and every CPU gives the same bits; a sum taken in pieces
    (each a multiple of eight values) carries its lanes from one to the next. numba leaves the
    eight scalar chains of the same loop unvectorised (its SLP vectoriser is off), at about 0.7
    cycles a value."""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and x.dtype == types.float64 and isinstance(steps, types.Integer)
            and start == types.UniTuple(types.float64, 8)):
        return None
    sig = start(x, types.intp, start)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        vec = ir.VectorType(ir.DoubleType(), 8)
        first = cgutils.get_null_value(vec)
        for j in range(8):
            first = builder.insert_element(first, builder.extract_value(args[2], j),
                                           ir.Constant(ir.IntType(32), j))
        acc = cgutils.alloca_once_value(builder, first)
        base = builder.bitcast(data, vec.as_pointer())
        with cgutils.for_range(builder, args[1]) as loop:
            value = builder.load(builder.gep(base, [loop.index]), align=8)
            builder.store(builder.fadd(builder.load(acc), value), acc)
        total = builder.load(acc)
        lanes = [builder.extract_element(total, ir.Constant(ir.IntType(32), j)) for j in range(8)]
        return context.make_tuple(builder, signature.return_type, lanes)

    return sig, codegen


LANES0 = (-0.0,) * 8  # empty lanes: -0.0 + v is v for every v, -0.0 too
BLOCK = 1024  # bars per piece of the curve's sums (a multiple of 128): their buffers stay in cache


@rules.compiled
def _joined(lanes, first):
    """Eight lanes added together in lane_sum's fixed order, lane 0 replaced by `first` (lane 0
    with the tail added)."""
    return ((first + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5])
                                                           + (lanes[6] + lanes[7]))


@rules.compiled
def lane_sum(x):
    """sum(x) as eight interleaved partial sums (the tail into the first) added together in a
    fixed order: each lane is its own chain (`_lanes`, one vector addition per eight values), so
    no addition is reordered (no fast-math) and every CPU, whatever its vector width, gives the
    same bits."""
    n = len(x)
    m = n - n % 8
    lanes = _lanes(x, m // 8, LANES0)
    first = lanes[0]
    for i in range(m, n):
        first += x[i]
    return _joined(lanes, first)


@rules.compiled
def numpy_block(x):
    """numpy's sum of up to 128 values (its pairwise_sum's leaf): under 8 a plain loop, else
    eight lanes combined as lane_sum does, and the tail added after them."""
    n = len(x)
    res = -0.0
    if n < 8:
        for i in range(n):
            res += x[i]
        return res
    m = n - n % 8
    res = lane_sum(x[:m])
    for i in range(m, n):
        res += x[i]
    return res


@rules.compiled
def returns(equity, lo, hi, cash, rf, out):
    """The returns of bars lo..hi-1 into out[:hi - lo]: value / the previous value - 1 - rf
    (before bar 0, `cash`; NaN after a value of zero), as metrics.py's. Over views indexed from
    0, so the division runs in vector instructions."""
    m = hi - lo
    prev = equity[lo - 1] if lo > 0 else cash
    out[0] = equity[lo] / prev - 1.0 - rf if prev != 0.0 else math.nan
    now, before, into = equity[lo + 1:hi], equity[lo:hi - 1], out[1:m]
    for i in range(m - 1):
        p = before[i]
        into[i] = now[i] / p - 1.0 - rf if p != 0.0 else math.nan


@rules.compiled
def _pairwise(x, cash, rf, of_returns):
    """numpy's sum to the bit (its pairwise_sum: `numpy_block`s of up to 128 values, a longer
    piece cut in two halves at a multiple of 8 and summed left + right) of x, or of the returns
    of the equity curve x, computed `BLOCK` bars at a time as the leaves reach them (`returns`),
    so no array of returns is kept. numpy recurses; this walks the same tree with a stack
    (numba's on-disk cache cannot hold a recursive function)."""
    n = len(x)
    buf = np.empty(BLOCK if of_returns else 0)
    have_lo = have_hi = 0  # the bars whose returns `buf` holds
    start = np.empty(64, np.int64)  # the pieces being cut, from the whole (0) down
    size = np.empty(64, np.int64)
    stage = np.empty(64, np.int64)  # 0: cut it, 1: its left half is summed, 2: both are
    left = np.empty(64)
    right = np.empty(64)
    top = 0
    start[0], size[0], stage[0] = 0, n, 0
    total = 0.0
    while top >= 0:
        m = size[top]
        half = m // 2 - (m // 2) % 8
        if m <= 128 or stage[top] == 2:
            if m > 128:
                value = left[top] + right[top]
            elif not of_returns:
                value = numpy_block(x[start[top]:start[top] + m])
            else:
                lo, hi = start[top], start[top] + m
                if hi > have_hi:  # the leaves come in order: the next piece of returns
                    have_lo, have_hi = lo, min(n, lo + BLOCK)
                    returns(x, have_lo, have_hi, cash, rf, buf)
                value = numpy_block(buf[lo - have_lo:hi - have_lo])
            top -= 1
            if top < 0:
                total = value
            elif stage[top] == 1:
                left[top] = value
            else:
                right[top] = value
        elif stage[top] == 0:
            stage[top] = 1
            top += 1
            start[top], size[top], stage[top] = start[top - 1], half, 0
        else:
            stage[top] = 2
            top += 1
            start[top], size[top], stage[top] = start[top - 1] + half, m - half, 0
    return 0.0 + total  # numpy's reduction starts from 0.0: a sum of -0.0s is 0.0


@rules.compiled
def pairwise_sum(x):
    """numpy's sum of x to the bit (`_pairwise`): for the mean, where an error is amplified (it
    is subtracted from every return before squaring)."""
    return _pairwise(x, 0.0, 0.0, False)


@rules.compiled
def _sums(equity, shares, close, r, rf):
    """The curve's sums (of returns, of squared returns below zero, of squared deviations from
    their mean, bars in the market, gross exposure, values) in two passes over the curve: the
    mean of the returns (numpy's own sum, `_pairwise`), then the per-bar terms in pieces of
    `BLOCK` bars, branch-free and element-wise, each added into its eight lanes (`_lanes`,
    carried from piece to piece: lane_sum's bits). The pieces keep the work in cache however
    long the curve (at 100,000 bars, whole-curve arrays made it 6x dearer per bar)."""
    n = len(equity)
    mean = _pairwise(equity, r.cash, rf, True) / n
    ret = np.empty(BLOCK)
    down = np.empty(BLOCK)
    dev = np.empty(BLOCK)
    gross = np.empty(BLOCK)
    s_down = s_dev = s_gross = s_value = LANES0
    in_mkt = 0
    last = n - n % 8  # the lanes take the bars before it; the rest go into lane 0, in order
    lo = 0
    while lo < n:
        hi = min(n, lo + BLOCK)
        returns(equity, lo, hi, r.cash, rf, ret)
        units, price, value = shares[lo:hi], close[lo:hi], equity[lo:hi]
        for i in range(hi - lo):
            x = ret[i]
            down[i] = x * x if x < 0 else 0.0
            delta = x - mean
            dev[i] = delta * delta
            held = units[i] != 0.0
            in_mkt += 1 if held else 0
            gross[i] = abs(units[i] * price[i]) / value[i] if held and value[i] > 0 else 0.0
        steps = (min(hi, last) - lo) // 8
        s_down = _lanes(down, steps, s_down)
        s_dev = _lanes(dev, steps, s_dev)
        s_gross = _lanes(gross, steps, s_gross)
        s_value = _lanes(value, steps, s_value)
        if hi < n:
            lo = hi
        else:
            break
    t_down, t_dev, t_gross, t_value = s_down[0], s_dev[0], s_gross[0], s_value[0]
    for i in range(last - lo, n - lo):  # the tail, still in the last piece's buffers
        t_down += down[i]
        t_dev += dev[i]
        t_gross += gross[i]
        t_value += equity[lo + i]
    return (mean, _joined(s_dev, t_dev), _joined(s_down, t_down), in_mkt,
            _joined(s_gross, t_gross), _joined(s_value, t_value))


@rules.compiled
def curve_stats(equity, shares, close, r, traded, bankrupt, st):
    """The equity-curve metrics of metrics.py into the record `st`: the sums in vectorised
    passes (`_sums`; the standard deviation from the squared deviations of the returns from
    their mean, as numpy's std, not a running Welford mean, which puts a division on every bar's
    dependency chain), then the drawdown in one ordered scan; a bankrupt run gets no ratios and
    a CAGR of -1."""
    n = len(equity)
    rf = (1.0 + r.risk_free) ** (1.0 / YEAR) - 1.0
    mean, m2, down2, in_mkt, gross, eq_sum = _sums(equity, shares, close, r, rf)
    # the drawdown by stretches between new peaks: within one, the deepest drop is from its peak
    # to its lowest value (a difference and a quotient are monotone in the value, rounding too,
    # so this is the per-bar maximum to the bit), so a bar costs two comparisons and only a new
    # peak closes the stretch
    peak = trough = r.cash
    dd = dd_money = 0.0
    for t in range(n + 1):
        value = equity[t] if t < n else math.inf  # past the end: closes the last stretch
        if value > peak:
            drop = peak - trough
            if drop > dd_money:
                dd_money = drop
            if peak > 0 and drop / peak > dd:
                dd = drop / peak
            peak = trough = value
        elif value < trough:
            trough = value
    final = equity[n - 1]
    growth = (max(final / r.cash, 0.0)) ** (YEAR / n) - 1.0
    sd = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
    down = math.sqrt(down2 / n)
    st.final_value = final
    st.cagr = -1.0 if bankrupt else growth
    st.sharpe = mean / sd * math.sqrt(YEAR) if sd > 0 and not bankrupt else math.nan
    st.sortino = mean / down * math.sqrt(YEAR) if down > 0 and not bankrupt else math.nan
    st.max_drawdown = dd
    st.max_drawdown_money = dd_money
    st.calmar = growth / dd if dd > 0 and not bankrupt else math.nan
    st.exposure = in_mkt / n
    st.gross_exposure = gross / n
    st.turnover = traded / (eq_sum / n) / (n / YEAR)
    st.bankrupt = 1.0 if bankrupt else 0.0
    st.traded = traded


@rules.compiled
def write_trade(tr, entry_bar, exit_bar, size, entry_px, exit_px, commission, pnl, reason):
    """Write one trade into its record (TRADE_DTYPE, or shared.py's, which adds the column)."""
    tr.entry_bar = entry_bar
    tr.exit_bar = exit_bar
    tr.size = size
    tr.entry_price = entry_px
    tr.exit_price = exit_px
    tr.commission = commission
    tr.pnl = pnl
    tr.reason = reason


@intrinsic
def _resends8(typingctx, want, at, sized_for):
    """Whether any of want[at:at + 8] != sized_for: `rules.resend` for eight bars at once (NaN
    differs from everything, as there), one vector comparison where numba's own loop would make
    eight compares and branches."""
    if not (isinstance(want, types.Array) and want.ndim == 1 and want.layout == "C"
            and want.dtype == types.float64):
        return None
    sig = types.boolean(want, types.intp, types.float64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        vec = ir.VectorType(ir.DoubleType(), 8)
        values = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vec.as_pointer()),
                              align=8)
        same = cgutils.get_null_value(vec)
        for j in range(8):
            same = builder.insert_element(same, args[2], ir.Constant(ir.IntType(32), j))
        differ = builder.fcmp_unordered("!=", values, same)
        mask = builder.bitcast(differ, ir.IntType(8))
        return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(8), 0))

    return sig, codegen


@rules.compiled
def quiet_run(t, c, want, sized_for, cash, held, entry_bar, r, equity, position):
    """Bars t.. of a run of quiet bars with no stop or target to watch (see `simulate`), in
    vectorised passes: the targets scanned eight at a time for the next order (`_resends8`), the
    equity and position written element-wise, the bankrupt closes counted, the holding limit
    bounded. Returns the first bar that may not be quiet, where `simulate`'s own per-bar checks
    take over (the bound may come early, never late). The loops run over views indexed from 0:
    an index numba may wrap (t + u) makes LLVM gather and scatter instead of loading vectors."""
    n = len(c)
    end = t
    while end + 8 <= n and not _resends8(want, end, sized_for):
        end += 8
    if held != 0.0 and r.max_bars > 0:  # held_too_long holds from entry_bar + max_bars - 1 or 0
        end = min(end, max(t, entry_bar + r.max_bars - 1))
    value, shares, price = equity[t:end], position[t:end], c[t:end]
    for u in range(len(price)):
        value[u] = cash + held * price[u]
        shares[u] = held
    if held != 0.0:
        broke = 0
        for u in range(len(value)):
            broke += rules.bankrupt(value[u])
        if broke:
            u = 0
            while not rules.bankrupt(value[u]):
                u += 1
            end = t + u
    return end


@rules.compiled
def simulate(bars, want, r, equity, position, trades, stats, row):
    """One account on one symbol, the Broker's bar cycle: fills at the open, then stops and
    targets inside the bar, then at the close the bankruptcy check, the holding limit and the
    wanted position `want[t]` (ordered only when it changes, rules.resend). Writes `equity` and
    `position` per bar, the trades into `trades` (a TRADE_DTYPE buffer, if it has rows; returns
    how many) and the run's statistics into `stats[row]` (STATS_DTYPE)."""
    o, h, lo, c = bars
    n = len(c)
    cash = r.cash
    held = 0.0
    sized_for = 0.0
    pend_target = 0.0
    pend_reason = NONE
    rejected = 0
    broke = False
    traded = 0.0
    entry_bar = 0
    entry_px = 0.0
    tsize = 0.0
    tpnl = 0.0
    tcomm = 0.0
    ntr = 0
    record = len(trades) > 0
    closed = 0
    won = 0
    psum = 0.0
    psq = 0.0
    profit = 0.0
    loss = 0.0
    stops = not (math.isnan(r.stop) and math.isnan(r.take))
    target = 0.0
    carries = r.interest != 0.0 or r.borrow != 0.0
    t = -1
    while t < n - 1:
        t += 1
        # a run of quiet bars (most bars; see below) without carry: nothing changes the books
        # between them, so only the checks that depend on the bar are made: in vectorised
        # passes without a stop to watch (quiet_run), else in a small loop, which also makes
        # them bar by bar where the passes stopped; the first bar that is not quiet goes on below
        if not carries and pend_reason == NONE and not broke:
            side = 1.0 if held > 0 else -1.0
            watch = stops and held != 0.0
            if not watch:
                t = quiet_run(t, c, want, sized_for, cash, held, entry_bar, r, equity, position)
            while t < n:
                if watch and rules.exit_hit(o[t], h[t], lo[t], entry_px, side, r)[1] != NONE:
                    break
                close_value = cash + held * c[t]
                if rules.bankrupt(close_value) or rules.resend(want[t], sized_for) or \
                        (held != 0.0 and rules.held_too_long(t, entry_bar, r)):
                    break
                equity[t] = close_value
                position[t] = held
                t += 1
            if t == n:
                break
        if carries and t > 0 and not broke:  # the night's interest and borrow fee
            cash += rules.carry(cash, held, c[t - 1], r)
        # a quiet bar: nothing fills at the open, no stop or target is hit, and at the close the
        # rules of phase 2 below ask for nothing, so only the books are written; any other bar
        # takes the three phases
        quiet = pend_reason == NONE and not broke
        if quiet and stops and held != 0.0:
            quiet = rules.exit_hit(o[t], h[t], lo[t], entry_px, 1.0 if held > 0 else -1.0,
                                   r)[1] == NONE
        if quiet:
            close_value = cash + held * c[t]
            if not rules.bankrupt(close_value) and not rules.resend(want[t], sized_for) and \
                    not (held != 0.0 and rules.held_too_long(t, entry_bar, r)):
                equity[t] = close_value
                position[t] = held
                continue
        for phase in range(3):  # 0: fills at the open, 1: stops, 2: the close
            base = 0.0
            qty = 0.0
            reason = NONE
            if phase == 0 and pend_reason != NONE:
                target, reason, base = pend_target, pend_reason, o[t]
                pend_reason = NONE
            elif phase == 1 and stops and held != 0.0:
                base, reason = rules.exit_hit(o[t], h[t], lo[t], entry_px,
                                              1.0 if held > 0 else -1.0, r)
                qty = -held
            elif phase == 2:
                if not broke and rules.bankrupt(cash + held * c[t]):
                    broke = True
                    pend_reason = NONE
                    if held != 0.0:
                        target, reason = 0.0, BANKRUPT
                elif not broke:
                    w = want[t]
                    if held != 0.0 and rules.held_too_long(t, entry_bar, r):
                        sized_for = w  # flat until the wanted position changes
                        target, reason = 0.0, MAXBARS
                    elif rules.resend(w, sized_for):
                        sized_for = w
                        target, reason = w, SIGNAL
                if reason != NONE and r.fill_open:
                    pend_target, pend_reason = target, reason
                    reason = NONE
                base = c[t]
            if reason == NONE:
                continue
            if phase != 1:  # an order to a target: size it, check buying power
                equity_now = rules.equity_at(cash, held, base, r)
                goal = rules.target_shares(target, base, equity_now, r)
                if goal == held:
                    continue
                end = rules.allowed(goal, held, base, equity_now, r)
                if end != goal:
                    rejected += 1
                qty = end - held
                if qty == 0.0:
                    continue
            # the fill (Broker._fill)
            px = rules.fill_price(base, qty, r)
            comm = rules.commission(qty, px, r)
            cash -= qty * px + comm
            traded += abs(qty) * px
            comm_left = comm
            if held != 0.0 and (qty > 0) != (held > 0):
                closing = min(abs(qty), abs(held))
                tpnl += closing * math.copysign(1.0, held) * (px - entry_px)
                tcomm += comm * closing / abs(qty)
                if closing == abs(held):
                    pnl = tpnl - tcomm
                    if record:
                        write_trade(trades[ntr], entry_bar, t, tsize, entry_px, px, tcomm, pnl, reason)
                        ntr += 1
                    closed += 1
                    psum += pnl
                    psq += pnl * pnl
                    if pnl >= 0:
                        won += 1
                    if pnl > 0:
                        profit += pnl
                    elif pnl < 0:
                        loss -= pnl
                comm_left = comm * (1 - closing / abs(qty))
            new = held + qty
            if new != 0.0 and (held == 0.0 or (new > 0) != (held > 0)):
                entry_bar, entry_px, tsize, tpnl, tcomm = t, px, new, 0.0, comm_left
            elif new != 0.0 and abs(new) > abs(held):
                entry_px = (entry_px * abs(held) + px * abs(qty)) / abs(new)
                tsize = new
                tcomm += comm_left
            held = new
        equity[t] = cash + held * c[t]
        position[t] = held
    if held != 0.0 and record:
        write_trade(trades[ntr], entry_bar, n - 1, tsize, entry_px, c[n - 1], tcomm,
               tpnl + held * (c[n - 1] - entry_px) - tcomm, OPEN)
        ntr += 1
    st = stats[row]
    curve_stats(equity, position, c, r, traded, broke, st)
    st.trades_closed = closed
    st.trades_won = won
    st.pnl_sum = psum
    st.pnl_squares = psq
    st.gross_profit = profit
    st.gross_loss = loss
    st.trades_open = 1.0 if held != 0.0 else 0.0
    st.orders_rejected = rejected
    return ntr


@rules.compiled
def simulate_many(bars, wants, r, stats):
    """`simulate` for every row of `wants` (combos x bars) into `stats` (one row each), metrics
    only."""
    n = len(bars.close)
    equity = np.empty(n)
    position = np.empty(n)
    none = np.empty(0, TRADE_DTYPE)
    for k in range(wants.shape[0]):
        simulate(bars, wants[k], r, equity, position, none, stats, k)


class Run(NamedTuple):
    """One simulated run read back: equity and shares per bar, its trades, its statistics."""

    equity: np.ndarray
    position: np.ndarray
    trades: np.ndarray  # TRADE_DTYPE records (reason: a code, rules.REASONS names it)
    stats: np.void  # one STATS_DTYPE record


def simulate_one(bars: Bars, want: np.ndarray, r: rules.Rules) -> Run:
    """`simulate` with its buffers allocated and its trades cut to those made."""
    n = len(bars.close)
    equity, position = np.empty(n), np.empty(n)
    trades = np.zeros(3 * n + 2, TRADE_DTYPE)  # at most three fills a bar, plus the open one
    stats = stats_table(1)
    count = simulate(bars, np.ascontiguousarray(want, dtype=np.float64), r, equity, position,
                     trades, stats, 0)
    return Run(equity, position, trades[:count], stats[0])
