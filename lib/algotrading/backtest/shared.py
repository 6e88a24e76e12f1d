"""One account, many symbols: the Broker's shared-cash bar cycle compiled (numba), over the shared
rules (`algotrading.rules`, compiled into this loop).

`run_portfolio` runs one portfolio through `simulate` and `sweep_portfolio` a grid of them
(`simulate_grid`: combinations in parallel on numba's threads, so NUMBA_NUM_THREADS bounds it).
The order of operations is the Broker's (broker.py, driven by `engine.loop`), symbol by symbol in
column order on each bar:

1. the night's carry (interest on cash, the borrow fee of shorts) is booked;
2. every queued order fills at its symbol's open (sized from the account's equity at that moment,
   every other symbol valued at its open; buying power across the whole account);
3. stops and targets inside the bar;
4. the account is marked at the closes; at equity <= 0 it goes bankrupt and closes everything;
5. each symbol's wanted position is ordered (holding limit first; only when it changes), filled
   now with `fill="close"`, else queued for the next open.

Sums across symbols are taken in the Broker's order (its Python `sum`, which on CPython 3.11, the
version the project pins, adds left to right from zero; then the cash is added), so equity, sizes,
fills and rejections are the Broker's to the last bit; tests/parity/test_portfolio_paths.py holds
the two to each other on random paths.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from algotrading import rules
from algotrading.backtest import kernel
from algotrading.rules import BANKRUPT, MAXBARS, NONE, OPEN, SIGNAL

# A trade of a portfolio: the kernel's record and the symbol's column.
TRADE_DTYPE = np.dtype([*kernel.TRADE_DTYPE.descr, ("col", np.int64)])
# The account's books, in two arrays that the helpers below change in place (and numba passes
# cheaply): `book`, a row per field below and a column per symbol, and `acct`, the scalars.
(HELD,  # shares
 SIZED_FOR,  # the wanted position the current one answers (rules.resend)
 PEND_TARGET,  # queued order: its target
 PEND_REASON,  # queued order: its reason code (NONE: no order)
 ENTRY_BAR,  # the open trade's entry bar
 ENTRY_PX,  # its entry price (averaged over adds)
 TSIZE,  # its size (signed; set at entry and on adds)
 TPNL,  # its realised PnL before commission
 TCOMM,  # its commission
 PRICE,  # the symbol's last price: values the account
 TRADED,  # notional traded in the symbol
 ) = range(11)
CASH, REJECTED, FILLS, TRADES, CLOSED, WON, PNL_SUM, PNL_SQUARES, PROFIT, LOSS = range(10)


@rules.compiled(depends=(kernel,))
def new_book(m, cash):
    """The books of an account of `cash` and no position over `m` symbols: (book, acct)."""
    book = np.zeros((11, m))
    book[PEND_REASON, :] = NONE
    book[PRICE, :] = np.nan
    acct = np.zeros(10)
    acct[CASH] = cash
    return book, acct


@rules.compiled(depends=(kernel,))
def value(book, acct, skip):
    """Cash plus every position but column `skip` at its last price (Broker.equity, and the
    `rest` of Broker._equity_at), summed in the Broker's order."""
    total = 0.0
    for a in range(book.shape[1]):
        if a != skip and book[HELD, a] != 0.0:
            total += book[HELD, a] * book[PRICE, a]
    return acct[CASH] + total


@rules.compiled(depends=(kernel,))
def record(trades, k, entry_bar, exit_bar, size, entry_px, exit_px, commission, pnl, reason, col):
    """Write trade `k` into its record: kernel.write_trade's fields and the column."""
    kernel.write_trade(trades[k], entry_bar, exit_bar, size, entry_px, exit_px, commission, pnl,
                       reason)
    trades[k].col = col


@rules.compiled(depends=(kernel,))
def fill(book, acct, a, qty, base, reason, t, r, trades):
    """Execute `qty` shares of column `a` at `base` before slippage (Broker._fill): cash,
    commission, the open trade, and a closed trade's record and statistics."""
    px = rules.fill_price(base, qty, r)
    comm = rules.commission(qty, px, r)
    acct[CASH] -= qty * px + comm
    book[TRADED, a] += abs(qty) * px
    held = book[HELD, a]
    comm_left = comm
    if held != 0.0 and (qty > 0) != (held > 0):  # reduce, close or reverse
        closing = min(abs(qty), abs(held))
        book[TPNL, a] += closing * math.copysign(1.0, held) * (px - book[ENTRY_PX, a])
        book[TCOMM, a] += comm * closing / abs(qty)
        if closing == abs(held):
            pnl = book[TPNL, a] - book[TCOMM, a]
            if len(trades) > 0:
                record(trades, int(acct[TRADES]), int(book[ENTRY_BAR, a]), t, book[TSIZE, a],
                       book[ENTRY_PX, a], px, book[TCOMM, a], pnl, reason, a)
                acct[TRADES] += 1
            acct[CLOSED] += 1
            acct[PNL_SUM] += pnl
            acct[PNL_SQUARES] += pnl * pnl
            if pnl >= 0:
                acct[WON] += 1
            if pnl > 0:
                acct[PROFIT] += pnl
            elif pnl < 0:
                acct[LOSS] -= pnl
        comm_left = comm * (1 - closing / abs(qty))
    new = held + qty
    if new != 0.0 and (held == 0.0 or (new > 0) != (held > 0)):  # a new trade opens
        book[ENTRY_BAR, a] = t
        book[ENTRY_PX, a] = px
        book[TSIZE, a] = new
        book[TPNL, a] = 0.0
        book[TCOMM, a] = comm_left
    elif new != 0.0 and abs(new) > abs(held):  # an add: average the entry price
        book[ENTRY_PX, a] = (book[ENTRY_PX, a] * abs(held) + px * abs(qty)) / abs(new)
        book[TSIZE, a] = new
        book[TCOMM, a] += comm_left
    book[HELD, a] = new
    acct[FILLS] += 1


@rules.compiled(depends=(kernel,))
def to_target(book, acct, a, target, base, reason, t, r, trades):
    """Trade column `a` at `base` to the shares `target` asks for, within the account's buying
    power (Broker._to_target)."""
    held = book[HELD, a]
    equity = rules.equity_at(value(book, acct, a), held, base, r)
    goal = rules.target_shares(target, base, equity, r)
    if goal == held:
        return
    end = rules.allowed(goal, held, base, equity, r)
    if end != goal:
        acct[REJECTED] += 1
    qty = end - held
    if qty != 0.0:
        fill(book, acct, a, qty, base, reason, t, r, trades)


@rules.compiled(depends=(kernel,))
def order(book, acct, a, target, reason, t, r, trades):
    """Queue the order for the next open, or fill it now at the close (Broker._order)."""
    if r.fill_open:
        book[PEND_TARGET, a] = target
        book[PEND_REASON, a] = reason
    else:
        to_target(book, acct, a, target, book[PRICE, a], reason, t, r, trades)


@rules.compiled(depends=(kernel,))
def simulate(o, h, lo, c, want, r, equity, positions, traded, trades, stats, row):
    """One account over the columns of the (bars x symbols) price arrays, the Broker's bar
    cycle (see the module's docstring) with the wanted positions `want` (bars x symbols). Writes
    the equity at each close into `equity`, the shares into `positions` (if it has rows), the
    notional traded per symbol into `traded`, the trades into `trades` (a TRADE_DTYPE buffer,
    if it has rows: closed ones in the order they close, then the open ones by column) and the
    run's statistics into `stats[row]` (kernel.STATS_DTYPE; exposure from the gross value of
    the positions). Returns the number of trades written."""
    n, m = c.shape
    book, acct = new_book(m, r.cash)
    stops = not (math.isnan(r.stop) and math.isnan(r.take))
    carries = r.interest != 0.0 or r.borrow != 0.0
    keep = positions.shape[0] > 0
    gross = np.empty(n)
    broke = False
    for t in range(n):
        if carries and t > 0 and not broke:  # the night's carry, on the last closes
            fees = 0.0
            for a in range(m):
                fees += rules.carry(0.0, book[HELD, a], book[PRICE, a], r)
            acct[CASH] += rules.carry(acct[CASH], 0.0, 0.0, r) + fees
        for a in range(m):
            book[PRICE, a] = o[t, a]
        for a in range(m):  # queued orders fill at the open
            reason = int(book[PEND_REASON, a])
            if reason != NONE:
                book[PEND_REASON, a] = NONE
                to_target(book, acct, a, book[PEND_TARGET, a], o[t, a], reason, t, r, trades)
        if stops:
            for a in range(m):
                held = book[HELD, a]
                if held != 0.0:
                    base, code = rules.exit_hit(o[t, a], h[t, a], lo[t, a], book[ENTRY_PX, a],
                                                1.0 if held > 0 else -1.0, r)
                    if code != NONE:
                        fill(book, acct, a, -held, base, code, t, r, trades)
        fills = acct[FILLS]
        for a in range(m):
            book[PRICE, a] = c[t, a]
        close_value = value(book, acct, -1)
        if not broke and rules.bankrupt(close_value):
            broke = True
            for a in range(m):
                book[PEND_REASON, a] = NONE
                if book[HELD, a] != 0.0:
                    order(book, acct, a, 0.0, BANKRUPT, t, r, trades)
        if not broke:
            for a in range(m):
                w = want[t, a]
                if book[HELD, a] != 0.0 and rules.held_too_long(t, book[ENTRY_BAR, a], r):
                    book[SIZED_FOR, a] = w  # flat until the wanted position changes
                    order(book, acct, a, 0.0, MAXBARS, t, r, trades)
                elif rules.resend(w, book[SIZED_FOR, a]):
                    book[SIZED_FOR, a] = w
                    order(book, acct, a, w, SIGNAL, t, r, trades)
        equity[t] = close_value if acct[FILLS] == fills else value(book, acct, -1)
        g = 0.0
        for a in range(m):
            g += abs(book[HELD, a] * c[t, a])
            if keep:
                positions[t, a] = book[HELD, a]
        gross[t] = g
    ntr = int(acct[TRADES])
    still = 0
    for a in range(m):  # open trades, marked to the last close
        held = book[HELD, a]
        if held != 0.0:
            still += 1
            if len(trades) > 0:
                last = c[n - 1, a]
                entry = book[ENTRY_PX, a]
                record(trades, ntr, int(book[ENTRY_BAR, a]), n - 1, book[TSIZE, a], entry, last,
                       book[TCOMM, a], book[TPNL, a] + held * (last - entry) - book[TCOMM, a],
                       OPEN, a)
                ntr += 1
    total = 0.0
    for a in range(m):
        traded[a] = book[TRADED, a]
        total += book[TRADED, a]
    st = stats[row]
    kernel.curve_stats(equity, gross, np.ones(n), r, total, broke, st)
    st.trades_closed = acct[CLOSED]
    st.trades_won = acct[WON]
    st.pnl_sum = acct[PNL_SUM]
    st.pnl_squares = acct[PNL_SQUARES]
    st.gross_profit = acct[PROFIT]
    st.gross_loss = acct[LOSS]
    st.trades_open = still
    st.orders_rejected = acct[REJECTED]
    return ntr


@rules.compiled(parallel=True, depends=(kernel,))
def simulate_grid(o, h, lo, c, wants, r, stats):
    """`simulate` for every combination k of `wants` (combinations x bars x symbols) into
    stats[k], metrics only, combinations in parallel."""
    n, m = c.shape
    for k in numba.prange(wants.shape[0]):
        simulate(o, h, lo, c, wants[k], r, np.empty(n), np.empty((0, 0)), np.empty(m),
                 np.empty(0, TRADE_DTYPE), stats, k)


class Run(NamedTuple):
    """One portfolio read back: equity per bar, shares (bars x symbols), notional traded per
    symbol, trades (TRADE_DTYPE records sorted by entry bar, then column) and statistics."""

    equity: np.ndarray
    positions: np.ndarray
    traded: np.ndarray
    trades: np.ndarray
    stats: np.void


def prices_2d(frames: list, column: str) -> np.ndarray:
    """One price column of each symbol's frame as a C-ordered (bars x symbols) float64 array."""
    return np.ascontiguousarray(np.stack([f[column].to_numpy(float) for f in frames], axis=1))


def simulate_one(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, want: np.ndarray,
                 r: rules.Rules) -> Run:
    """`simulate` with its buffers allocated; trades cut to those made and sorted as the
    engine lists them (by entry bar, then column; stable)."""
    n, m = c.shape
    equity, positions, traded = np.empty(n), np.empty((n, m)), np.empty(m)
    trades = np.zeros(3 * n * m + m, TRADE_DTYPE)  # at most three fills a symbol-bar, + open ones
    stats = kernel.stats_table(1)
    count = simulate(o, h, lo, c, np.ascontiguousarray(want, dtype=np.float64), r, equity,
                     positions, traded, trades, stats, 0)
    trades = trades[:count]
    trades = trades[np.lexsort((trades["col"], trades["entry_bar"]))]
    return Run(equity, positions, traded, trades, stats[0])
