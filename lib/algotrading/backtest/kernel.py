"""The compiled single-symbol simulation: the Broker's rules (broker.py) in one numba loop.

`sweep` and `run_many` use it for batches of backtests; `run`, `run_portfolio`, the RL
environment and paper trading use the Broker itself. Tests pin the two to each other (fills,
trades, equity) and the kernel's one-pass metrics to metrics.py (every sweep row equals `run`),
so there is one set of rules with two speeds.
numba compiles it once and caches the machine code next to this file (`cache=True`); inputs are
always float64 arrays and plain scalars, so one compiled signature serves every call.
`settings_args(settings)` packs the engine's Settings into those scalars (`simulate`'s arguments
`cash0` to `risk_free`); every caller passes them as `*settings_args(settings)`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba as nb
import numpy as np

if TYPE_CHECKING:
    from algotrading.backtest.settings import Settings

REASONS = ("signal", "stop_loss", "take_profit", "max_bars", "bankrupt", "open")
SIGNAL, STOP, TAKE, MAXBARS, BANKRUPT, OPEN = range(6)
# columns of the trade buffer
T_ENTRY_BAR, T_EXIT_BAR, T_SIZE, T_ENTRY_PX, T_EXIT_PX, T_COMM, T_PNL, T_REASON = range(8)
# metric slots of `stats` (per column)
STATS = ("final_value", "cagr", "sharpe", "sortino", "max_drawdown", "max_drawdown_money",
         "calmar", "exposure", "gross_exposure", "turnover", "trades_closed", "trades_won",
         "pnl_sum", "pnl_squares", "gross_profit", "gross_loss", "trades_open",
         "orders_rejected", "bankrupt", "traded")
YEAR = 252.0


@nb.njit(cache=True, nogil=True)
def _unit(price, side, slip, bps, cps):
    """Cash one share takes bought (side > 0) or sold at `price`: slipped price + commission."""
    px = price * (1.0 + math.copysign(slip, side))
    return px * (1.0 + bps) + cps


@nb.njit(cache=True, nogil=True)
def _equity_at(cash, held, price, slip, bps, cps):
    """Equity if the position were closed at `price` (after slippage and commission)."""
    if held == 0.0:
        return cash
    px = price * (1.0 - math.copysign(slip, held))
    return cash + held * px - abs(held) * (px * bps + cps)


@nb.njit(cache=True, nogil=True)
def curve_stats(equity, shares, close, cash0, risk_free, traded, bankrupt, stats):
    """The equity-curve metrics of metrics.py in one pass (Welford for the standard deviation),
    into stats[0:10] and stats[18:20]; a bankrupt run gets no ratios and a CAGR of -1."""
    n = len(equity)
    rf = (1.0 + risk_free) ** (1.0 / YEAR) - 1.0
    prev = cash0
    mean = 0.0
    m2 = 0.0
    down2 = 0.0
    peak = cash0
    dd = 0.0
    dd_money = 0.0
    in_mkt = 0
    gross = 0.0
    eq_sum = 0.0
    for t in range(n):
        value = equity[t]
        r = value / prev - 1.0 - rf if prev != 0.0 else math.nan
        prev = value
        delta = r - mean
        mean += delta / (t + 1)
        m2 += delta * (r - mean)
        if r < 0:
            down2 += r * r
        if value > peak:
            peak = value
        drop = peak - value
        if drop > dd_money:
            dd_money = drop
        if peak > 0 and drop / peak > dd:
            dd = drop / peak
        if shares[t] != 0.0:
            in_mkt += 1
            if value > 0:
                gross += abs(shares[t] * close[t]) / value
        eq_sum += value
    final = equity[n - 1]
    growth = (max(final / cash0, 0.0)) ** (YEAR / n) - 1.0
    sd = math.sqrt(m2 / (n - 1)) if n > 1 else 0.0
    down = math.sqrt(down2 / n)
    stats[0] = final
    stats[1] = -1.0 if bankrupt else growth
    stats[2] = mean / sd * math.sqrt(YEAR) if sd > 0 and not bankrupt else math.nan
    stats[3] = mean / down * math.sqrt(YEAR) if down > 0 and not bankrupt else math.nan
    stats[4] = dd
    stats[5] = dd_money
    stats[6] = growth / dd if dd > 0 and not bankrupt else math.nan
    stats[7] = in_mkt / n
    stats[8] = gross / n
    stats[9] = traded / (eq_sum / n) / (n / YEAR)
    stats[18] = 1.0 if bankrupt else 0.0
    stats[19] = traded


@nb.njit(cache=True, nogil=True)
def simulate(o, h, lo, c, want, cash0, size, fraction, leverage, whole, cps, bps, slip,
             fill_open, stop, take, max_bars, risk_free, equity, position, trades, stats):
    """One account on one symbol. `size` NaN means fraction sizing; `stop`/`take` NaN and
    `max_bars` 0 mean none. Writes `equity` and `position` (per bar), the trades into `trades`
    (rows x 8, if it has rows; returns how many) and the metrics into `stats` (see STATS)."""
    n = len(c)
    cash = cash0
    held = 0.0
    sized_for = 0.0
    pend_target = 0.0
    pend_reason = -1
    rejected = 0
    bankrupt = False
    traded = 0.0
    entry_bar = 0
    entry_px = 0.0
    tsize = 0.0
    tpnl = 0.0
    tcomm = 0.0
    ntr = 0
    record = trades.shape[0] > 0
    closed = 0
    won = 0
    psum = 0.0
    psq = 0.0
    profit = 0.0
    loss = 0.0
    stops = not (math.isnan(stop) and math.isnan(take))
    target = 0.0
    for t in range(n):
        for phase in range(3):  # 0: fills at the open, 1: stops, 2: the close
            px_base = 0.0
            qty = 0.0
            reason = -1
            if phase == 0 and pend_reason >= 0:
                target, reason, px_base = pend_target, pend_reason, o[t]
                pend_reason = -1
            elif phase == 1 and stops and held != 0.0:
                side = 1.0 if held > 0 else -1.0
                lvl_stop = entry_px * (1.0 - side * stop)
                lvl_take = entry_px * (1.0 + side * take)
                worst, best = (lo[t], h[t]) if side > 0 else (h[t], lo[t])
                if not math.isnan(stop) and side * (o[t] - lvl_stop) <= 0:
                    px_base, reason = o[t], STOP
                elif not math.isnan(take) and side * (o[t] - lvl_take) >= 0:
                    px_base, reason = o[t], TAKE
                elif not math.isnan(stop) and side * (worst - lvl_stop) <= 0:
                    px_base, reason = lvl_stop, STOP
                elif not math.isnan(take) and side * (best - lvl_take) >= 0:
                    px_base, reason = lvl_take, TAKE
                if reason >= 0:
                    qty = -held
            elif phase == 2:
                if cash + held * c[t] <= 0.0 and not bankrupt:
                    bankrupt = True
                    pend_reason = -1
                    if held != 0.0:
                        target, reason = 0.0, BANKRUPT
                elif not bankrupt:
                    w = want[t]
                    if held != 0.0 and max_bars > 0 and \
                            t - entry_bar + (1 if fill_open else 0) >= max_bars:
                        sized_for = w
                        target, reason = 0.0, MAXBARS
                    elif w != sized_for:
                        sized_for = w
                        target, reason = w, SIGNAL
                if reason >= 0 and fill_open:
                    pend_target, pend_reason = target, reason
                    reason = -1
                px_base = c[t]
            if reason < 0:
                continue
            if phase != 1:  # an order to a target: size it, check buying power
                if target == 0.0:
                    goal = 0.0
                elif not math.isnan(size):
                    goal = target * size
                else:
                    budget = abs(target) * fraction * max(
                        _equity_at(cash, held, px_base, slip, bps, cps), 0.0)
                    shares = budget / _unit(px_base, target, slip, bps, cps)
                    goal = math.copysign(math.floor(shares) if whole else shares, target)
                qty = goal - held
                if qty == 0.0:
                    continue
                if goal != 0.0 and (abs(goal) > abs(held) or goal * held < 0.0) and \
                        abs(goal) * _unit(px_base, goal, slip, bps, cps) > \
                        leverage * _equity_at(cash, held, px_base, slip, bps, cps) * (1 + 1e-12):
                    rejected += 1
                    if not (held != 0.0 and goal * held < 0.0):
                        continue
                    qty = -held  # a reversal still closes the old side
            # the fill (Broker._fill)
            px = px_base * (1.0 + math.copysign(slip, qty))
            comm = abs(qty) * (cps + px * bps)
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
                        trades[ntr, T_ENTRY_BAR] = entry_bar
                        trades[ntr, T_EXIT_BAR] = t
                        trades[ntr, T_SIZE] = tsize
                        trades[ntr, T_ENTRY_PX] = entry_px
                        trades[ntr, T_EXIT_PX] = px
                        trades[ntr, T_COMM] = tcomm
                        trades[ntr, T_PNL] = pnl
                        trades[ntr, T_REASON] = reason
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
    if held != 0.0:
        if record:
            trades[ntr, T_ENTRY_BAR] = entry_bar
            trades[ntr, T_EXIT_BAR] = n - 1
            trades[ntr, T_SIZE] = tsize
            trades[ntr, T_ENTRY_PX] = entry_px
            trades[ntr, T_EXIT_PX] = c[n - 1]
            trades[ntr, T_COMM] = tcomm
            trades[ntr, T_PNL] = tpnl + held * (c[n - 1] - entry_px) - tcomm
            trades[ntr, T_REASON] = OPEN
            ntr += 1
    curve_stats(equity, position, c, cash0, risk_free, traded, bankrupt, stats)
    stats[10] = closed
    stats[11] = won
    stats[12] = psum
    stats[13] = psq
    stats[14] = profit
    stats[15] = loss
    stats[16] = 1.0 if held != 0.0 else 0.0
    stats[17] = rejected
    return ntr


@nb.njit(cache=True, nogil=True)
def simulate_many(o, h, lo, c, wants, cash0, size, fraction, leverage, whole, cps, bps, slip,
                  fill_open, stop, take, max_bars, risk_free, stats):
    """`simulate` for every row of `wants` (combos x bars), metrics only."""
    n = len(c)
    equity = np.empty(n)
    position = np.empty(n)
    none = np.empty((0, 8))
    for k in range(wants.shape[0]):
        simulate(o, h, lo, c, wants[k], cash0, size, fraction, leverage, whole, cps, bps, slip,
                 fill_open, stop, take, max_bars, risk_free, equity, position, none, stats[k])


def settings_args(s: Settings) -> tuple:
    """The Settings as `simulate`'s scalar arguments `cash0` .. `risk_free`, in order (NaN for no
    size, fraction, stop or target; 0 for no holding limit; costs as fractions)."""
    nan = math.nan
    return (float(s.cash), nan if s.size is None else float(s.size),
            nan if s.fraction is None else float(s.fraction), float(s.leverage),
            bool(s.whole_shares), float(s.commission_per_share), s.commission_bps / 1e4,
            s.slippage_bps / 1e4, s.fill == "open", nan if s.stop_loss is None else s.stop_loss,
            nan if s.take_profit is None else s.take_profit, int(s.max_bars or 0),
            float(s.risk_free))
