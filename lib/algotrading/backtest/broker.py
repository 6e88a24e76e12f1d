"""The broker: one account's cash, positions, fills, costs, stops and buying power.

The engine's bar loop drives it, and so can an RL environment or a paper-trading runner, so all
of them fill orders the same way. Per bar, in this order:

    broker.on_bar(t, opens, highs, lows)   # orders queued at the last close fill at this open,
                                           # then stops/targets are checked inside the bar
    broker.mark(closes)                    # value the account at the close (bankruptcy check)
    broker.submit(symbol, target)          # the position wanted after this close
    broker.equity, broker.shares, broker.journal, broker.trades()

Rules (docs/backtests.md):
- A target is +1 long / -1 short / 0 flat (fractions scale it). With `size`, +1 is `size` shares;
  otherwise +1 is `fraction` (default 1.0: all-in) of equity, sized at the fill from equity at
  the fill price net of costs, in whole shares (`whole_shares`).
- Market orders fill at the next bar's open (`fill="open"`) or at this close (`fill="close"`).
  Slippage (bps) moves every fill against us; commission is per share plus bps of notional.
- Buying power: an order that opens or increases a position must fit in equity x `leverage`
  (|shares after| x (fill price + commission per share) <= leverage x equity). One that does not
  is rejected, as backtrader's broker rejects it (Order.Margin) and backtesting.py cancels it;
  a reversal still closes the old side and only the new side is rejected. Orders that reduce or
  close always fill. Rejections are counted (`rejected`), and the target is not resubmitted until
  the strategy's wanted position changes.
- Stops/targets are fractions of the entry price checked on each later bar's high/low; a gap
  through the level fills at the open; when both are inside one bar the stop comes first. After
  a stop, target or `max_bars` exit the broker stays flat until the wanted position changes.
- Bankruptcy: once equity at a close is <= 0 the broker closes every position (next open, or this
  close with `fill="close"`) and accepts no more orders; `bankrupt` is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from algotrading import rules
from algotrading.backtest.settings import Settings


@dataclass(frozen=True)
class Fill:
    """One execution: signed shares at a price after slippage, and its commission."""

    bar: int
    symbol: int
    qty: float
    price: float
    commission: float
    reason: str  # signal, stop_loss, take_profit, max_bars, bankrupt


class Broker:
    """Cash and positions of one account over `symbols` instruments (indexed 0..symbols-1)."""

    def __init__(self, settings: Settings | None = None, symbols: int = 1, **params: Any):
        if settings is not None and params:
            raise ValueError("give settings or keyword parameters, not both")
        self.settings = s = settings if settings is not None else Settings(**params)
        self.cash = s.cash
        self.shares = [0.0] * symbols
        self.price = [math.nan] * symbols  # last price seen: marks the account
        self.traded = [0.0] * symbols  # notional traded per symbol
        self.journal: list[Fill] = []
        self.rejected = 0
        self.bankrupt = False
        self.bar = -1
        self._closed: list[dict[str, Any]] = []
        self._open: list[dict[str, Any] | None] = [None] * symbols
        self._pending: list[tuple[float, str] | None] = [None] * symbols
        self._sized_for = [0.0] * symbols  # the target the current position answers
        self.rules = s.rules

    @property
    def equity(self) -> float:
        """Cash plus every position at its last price."""
        return self.cash + sum(q * p for q, p in zip(self.shares, self.price, strict=True) if q)

    # -- the bar cycle ---------------------------------------------------------------------
    def on_bar(self, bar: int, open: Sequence[float], high: Sequence[float],
               low: Sequence[float]) -> list[Fill]:
        """Start bar `bar`: fill queued orders at its open, then stops/targets inside the bar."""
        self.bar = bar
        out: list[Fill] = []
        self.price[:] = open
        r = self.rules
        for a, order in enumerate(self._pending):
            if order is not None:
                self._pending[a] = None
                out += self._to_target(a, order[0], open[a], order[1])
        if not (math.isnan(r.stop) and math.isnan(r.take)):
            for a, held in enumerate(self.shares):
                if held:
                    hit = self.exit_level(a, open[a], high[a], low[a])
                    if hit is not None:
                        out.append(self._fill(a, -held, hit[0], hit[1]))
        return out

    def mark(self, close: Sequence[float]) -> float:
        """Value the account at the bar's close; at equity <= 0 it goes bankrupt (see above)."""
        self.price[:] = close
        value = self.equity
        if not self.bankrupt and rules.bankrupt(value):
            self.bankrupt = True
            for a, held in enumerate(self.shares):
                self._pending[a] = None
                if held:
                    self._order(a, 0.0, "bankrupt")
        return value

    def submit(self, symbol: int, target: float) -> list[Fill]:
        """The position wanted after this bar's close for `symbol` (see the rules above).
        Returns the fills made now (only with `fill="close"`; else they come at the next open)."""
        if self.bankrupt:
            return []
        if self.shares[symbol] and \
                rules.held_too_long(self.bar, self._open[symbol]["entry_bar"], self.rules):
            self._sized_for[symbol] = target  # flat until the wanted position changes
            return self._order(symbol, 0.0, "max_bars")
        if not rules.resend(target, self._sized_for[symbol]):
            return []
        self._sized_for[symbol] = target
        return self._order(symbol, target, "signal")

    # -- orders and fills ------------------------------------------------------------------
    def _order(self, a: int, target: float, reason: str) -> list[Fill]:
        if not self.rules.fill_open:
            return self._to_target(a, target, self.price[a], reason)
        self._pending[a] = (target, reason)
        return []

    def target_shares(self, symbol: int, target: float, price: float) -> float:
        """Shares for `target` at `price`: fixed `size`, or `fraction` of the equity left after
        closing the current position at `price`, net of costs (rules.target_shares)."""
        return rules.target_shares(target, price, self._equity_at(symbol, price), self.rules)

    def _equity_at(self, a: int, price: float) -> float:
        """Equity if symbol `a`'s position were closed at `price` (after slippage and commission)."""
        rest = self.cash + sum(q * p for b, (q, p) in enumerate(zip(self.shares, self.price,
                                                                    strict=True)) if q and b != a)
        return rules.equity_at(rest, self.shares[a], price, self.rules)

    def _to_target(self, a: int, target: float, price: float, reason: str) -> list[Fill]:
        """Trade symbol `a` at `price` to the shares `target` asks for, within buying power."""
        held = self.shares[a]
        equity = self._equity_at(a, price)
        goal = rules.target_shares(target, price, equity, self.rules)
        if goal == held:
            return []
        end = rules.allowed(goal, held, price, equity, self.rules)  # buying power
        if end != goal:
            self.rejected += 1
        qty = end - held
        return [self._fill(a, qty, price, reason)] if qty else []

    def _fill(self, a: int, qty: float, base: float, reason: str) -> Fill:
        """Execute `qty` shares at `base` (before slippage): cash, commission, trade records."""
        px = rules.fill_price(base, qty, self.rules)
        comm = rules.commission(qty, px, self.rules)
        self.cash -= qty * px + comm
        self.traded[a] += abs(qty) * px
        held = self.shares[a]
        trade = self._open[a]
        if held and (qty > 0) != (held > 0):  # reduce, close or reverse
            closing = min(abs(qty), abs(held))
            trade["pnl"] += closing * math.copysign(1.0, held) * (px - trade["entry_price"])
            trade["commission"] += comm * closing / abs(qty)
            if closing == abs(held):
                trade.update(exit_bar=self.bar, exit_price=px, reason=reason, open=False)
                self._closed.append(trade)
                self._open[a] = None
            comm_left = comm * (1 - closing / abs(qty))
        else:
            comm_left = comm
        new = held + qty
        if new and (not held or (new > 0) != (held > 0)):  # a new trade opens
            self._open[a] = {"col": a, "entry_bar": self.bar, "entry_price": px, "size": new,
                             "pnl": 0.0, "commission": comm_left, "open": True}
        elif new and abs(new) > abs(held):  # add: average the entry price
            trade["entry_price"] = (trade["entry_price"] * abs(held) + px * abs(qty)) / abs(new)
            trade["size"] = new
            trade["commission"] += comm_left
        self.shares[a] = new
        fill = Fill(self.bar, a, qty, px, comm, reason)
        self.journal.append(fill)
        return fill

    def exit_level(self, a: int, o: float, h: float, lo: float) -> tuple[float, str] | None:
        """The stop or target hit on this bar (price, reason), stop first, gaps at the open
        (rules.exit_hit)."""
        price, code = rules.exit_hit(o, h, lo, self._open[a]["entry_price"],
                                     1.0 if self.shares[a] > 0 else -1.0, self.rules)
        return None if code == rules.NONE else (price, rules.REASONS[code])

    def trades(self) -> list[dict[str, Any]]:
        """Closed trades, then the open ones marked to the last price (status "open"), each with
        col, entry/exit bar and price, size (signed), pnl (net of commission), commission,
        reason and open."""
        out = [dict(t) for t in self._closed]
        for a, trade in enumerate(self._open):
            if trade is not None:
                last = self.price[a]
                out.append({**trade, "exit_bar": self.bar, "exit_price": last, "reason": "open",
                            "pnl": trade["pnl"] + self.shares[a] * (last - trade["entry_price"])})
        for t in out:
            t["pnl"] -= t["commission"]
        return out
