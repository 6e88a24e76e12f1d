"""The strategy runner: the backtests' strategy objects, event-driven over a feed.

For each bar: record it, let the broker see it (the paper broker fills the open order at the
open), settle orders that finished, decide the wanted position from the bars so far, size it,
pass the risk checks, submit, record the position, then check the alert thresholds. Decisions
at a bar's close fill at the next bar's open, as in `algotrading.backtest.run`, so a replay with
the paper broker reproduces the backtest (tests/test_live.py and tests/parity check it).

The engine's order rule (backtest.Broker.submit): a wanted position is sent once, when it
changes; refused (by the risk checks or the broker), filled, or ended by a broker-held exit, it
is not asked again until the strategy wants another position. Sizing is the engine's
(algotrading.rules): `size` shares per unit of target, or `fraction` of equity sized at the fill
net of costs; the order carries the target so the paper broker sizes it at the next open, and
`qty` is the same rule's estimate at the decision close (for the risk checks and brokers that
take share counts).

Restart: the runner first redoes every bar already in the journal, in order. Every event has a
deterministic key and client order ids are derived from the run, bar date and order number, so
redoing a bar writes nothing twice, and an order sent before a crash is found at the broker by
its client order id (`status`) instead of being sent again; an order journaled but never sent is
sent. The paper broker, which lives in memory, is rebuilt by the same replay. Then the feed
continues after the last journaled bar.

Kill switch: `request_kill` (CLI `algotrading live flatten`) records a request; at its next bar,
before the broker sees that bar (so an open order cannot fill at its open), the runner cancels
open orders; at the close it sends orders that flatten the position (risk checks skipped),
accepts no more strategy orders, and stops once flat.

Every bar of the feed, a custom iterable of `Bar`s included, passes the ingest validator before
the runner uses it, and the price collar's reference on the first bar is the history's last close.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from algotrading import rules
from algotrading.backtest import Settings
from algotrading.live.alerts import Notifier, Thresholds, log_metrics
from algotrading.live.brokers import PARTLY_REFUSED, BrokerAdapter, Order, OrderStatus
from algotrading.live.feeds import Bar, Feed, to_bars
from algotrading.live.journal import Journal, JournalError
from algotrading.live.risk import Limits
from algotrading.params import CASH
from algotrading.schema import NAMES, DataError
from algotrading.strategies import Strategy, get


class Runner:
    """Runs `strategy` (name or Strategy) with `params` on one symbol.

    Sizing: `size` shares per unit of target (the backtests' `size`), else `fraction` of equity
    in whole shares, by the engine's rule with the broker's costs when it has engine `settings`
    (the paper broker, which then sizes at the fill). `cash` is the starting capital of the run's
    book. `history` holds the bars before the feed's first (indicator warm-up only).
    """

    def __init__(self, strategy: str | Strategy, symbol: str, broker: BrokerAdapter,
                 journal: Journal, params: dict[str, Any] | None = None,
                 history: pd.DataFrame | None = None, size: float | None = None,
                 fraction: float = 1.0, cash: float = CASH, limits: Limits | None = None,
                 thresholds: Thresholds | None = None, notifier: Notifier | None = None):
        self.strategy = get(strategy)
        self.params = self.strategy.check(params or {})
        self.symbol, self.broker, self.journal = symbol, broker, journal
        for name, value in (("size", size), ("fraction", fraction), ("cash", cash)):
            if value is not None and not 0 < value < math.inf:  # inf reaches the journal's JSON
                raise ValueError(f"{name}={value!r}: must be a finite number > 0")
        self.size, self.fraction, self.cash0 = size, fraction, float(cash)
        engine: Settings | None = getattr(broker, "settings", None)  # sizes at the fill
        self._at_fill = engine is not None and size is None
        self.sizing = Settings(**{**_costs(engine), "size": size,  # ValueError as the engine's
                                 "fraction": None if size is not None else fraction,
                                 "leverage": engine.leverage if engine else max(1.0, fraction)})
        self.limits, self.thresholds = limits or Limits(), thresholds or Thresholds()
        self.notifier = notifier
        cols = ["open", "high", "low", "close", "vol"]
        hist = history if history is not None else pd.DataFrame(columns=cols)
        self._dates = list(pd.DatetimeIndex(hist.index))
        self._rows = {c: list(hist[c].astype(float)) if c in hist else [0.0] * len(hist)
                      for c in cols}
        self._need = max([v + 1 for k, v in self.params.items()
                          if k in self.strategy.params and self.strategy.params[k].lookback] or [1])
        # the book, rebuilt from the journal's fills on restart
        self.shares, self.cash = 0.0, self.cash0
        self.peak = self.equity = self.cash0
        self.open: dict[str, Order] = {}
        self.orders_on: dict[str, int] = {}  # client order ids used per day
        self.sent_on: dict[str, int] = {}  # orders that passed the checks per day
        self.killed = self.stopped = False
        self._prev_close: float | None = None
        # the collar's reference: the last close seen, the history's on the first bar
        self._collar_ref: float | None = self._rows["close"][-1] if self._rows["close"] else None
        self._prev_equity = self.cash0
        self._honoured: set[str] = set()
        self.last = ""  # the last bar this object processed
        self._sized_for = 0.0  # the last wanted position sent (or refused): the engine's rule
        self._broke = False  # equity reached 0 at a close: the engine stops carry (rules.bankrupt)
        self.config = self._config()

    # -- the journal --------------------------------------------------------------------------
    def _record(self, kind: str, key: str, dt: str, data: dict[str, Any]) -> bool:
        return self.journal.append(kind, key, dt, data)

    def _config(self) -> dict[str, Any]:
        first = self._dates[0].date().isoformat() if self._dates else None
        return {"strategy": self.strategy.name, "params": self.params, "symbol": self.symbol,
                "size": self.size, "fraction": self.fraction, "cash": self.cash0,
                "limits": self.limits.to_dict(), "thresholds": self.thresholds.to_dict(),
                "history": [first, len(self._dates)]}

    # -- the loop -----------------------------------------------------------------------------
    def run(self, feed: Feed | Iterable[Bar] | None = None) -> dict[str, Any]:
        """Redo the journaled bars, then consume `feed` until it ends or the kill switch stops
        the run. Returns `summary()`."""
        start = self.journal.get("start")
        if start is not None and start["data"] != self.config:
            raise JournalError(f"journal {self.journal.run} was started with {start['data']}, "
                               f"not {self.config}; use another journal or run name")
        self._record("start", "start", "", self.config)
        for event in self.journal.events("bar"):
            if self.stopped:
                return self.summary()
            if event["dt"] > self.last:
                self._step(Bar(**event["data"]), live=False)
        bars = feed.bars() if hasattr(feed, "bars") else (feed or [])
        for bar in bars:
            if self.stopped:
                break
            bar = checked(bar, f"feed of {self.symbol}")
            if bar.dt <= self.last:
                continue
            if bar.sym != self.symbol:
                raise ValueError(f"feed gave a bar of {bar.sym}; this runner trades {self.symbol}")
            self._step(bar, live=True)
        return self.summary()

    def _step(self, bar: Bar, live: bool) -> None:
        dt = self.last = bar.dt
        self._record("bar", f"bar:{dt}", dt, bar.to_dict())
        if self._prev_close is not None and not self._broke:  # the night's carry, as the engine
            self.cash += rules.carry(self.cash, self.shares, self._prev_close, self.sizing.rules)
        if live:
            self.journal.reload()  # a kill request may have come from another process
        for req in self.journal.events("kill_request"):  # before the open fills an open order
            if req["key"] not in self._honoured and req["data"]["after"] < dt:
                self._honoured.add(req["key"])
                self.kill(dt, req["data"]["reason"])
        self.broker.on_bar(bar)
        self._settle(dt)
        self._dates.append(pd.Timestamp(dt))
        for c in ("open", "high", "low", "close", "vol"):
            self._rows[c].append(getattr(bar, c))
        close = bar.close
        self.equity = self.cash + self.shares * close
        self._broke = self._broke or rules.bankrupt(self.equity)
        self.peak = max(self.peak, self.equity)
        drawdown = 1.0 - self.equity / self.peak if self.peak > 0 else 0.0
        pnl, day_pnl = self.equity - self.cash0, self.equity - self._prev_equity
        if self.killed:
            self._flatten(dt, close)
        else:
            self._decide(dt, close, day_pnl)
        self._record("position", f"position:{dt}", dt, {
            "shares": self.shares, "cash": self.cash, "equity": self.equity, "pnl": pnl,
            "drawdown": drawdown, "open_orders": sorted(self.open)})
        for name, message in self.thresholds.crossed(pnl, drawdown):
            key = f"alert:{name}"
            if self.journal.get(key) is None:
                if self.notifier is not None:  # at least once: notify, then record
                    self.notifier.notify(f"algotrading {self.journal.run} {self.symbol}: {name}",
                                         f"{dt}: {message}")
                self._record("alert", key, dt, {"name": name, "message": message})
        if live:
            log_metrics(self.journal.run, self.symbol, dt, {
                "equity": self.equity, "pnl": pnl, "drawdown": drawdown, "position": self.shares})
        self._prev_close, self._prev_equity, self._collar_ref = close, self.equity, close
        if self.killed and not self.shares and not self.open:
            self._record("stop", "stop", dt, {"reason": "killed and flat"})
            self.stopped = True

    # -- decisions and orders -----------------------------------------------------------------
    def target(self) -> float:
        """The strategy's wanted position after the latest close (flat until its windows fill)."""
        if len(self._dates) <= self._need - 1:
            return 0.0
        prices = pd.DataFrame(self._rows, index=pd.DatetimeIndex(self._dates, name="dt"))
        return float(self.strategy.targets(prices, **self.params)[-1])

    def _decide(self, dt: str, close: float, day_pnl: float) -> None:
        target = self.target()
        self._record("signal", f"signal:{dt}", dt, {"target": target})
        if not rules.resend(target, self._sized_for):
            return  # sent once: filled, refused or exited, not asked again until it changes
        self._sized_for = target
        s = self.sizing.rules
        pending = sum(o.qty for o in self.open.values())
        held = self.shares + pending
        want = rules.target_shares(target, close, rules.equity_at(self.cash, held, close, s), s)
        qty = want - held
        if qty or (self._at_fill and target):  # sized at the fill: the estimate may round to 0
            self._order(dt, qty, close, day_pnl, "signal", target)

    def _order(self, dt: str, qty: float, price: float, day_pnl: float, why: str,
               target: float | None = None) -> bool:
        """Check (strategy orders only), journal and send one order; False if the checks refuse.
        A strategy order carries its `target`, sized at the fill by a broker that can."""
        n = self.orders_on.get(dt, 0)
        self.orders_on[dt] = n + 1
        coid = f"{self.journal.run}-{self.symbol}-{dt.replace('-', '')}-{n}"
        if why == "signal":
            held = self.shares + sum(o.qty for o in self.open.values())
            reason = self.limits.check(qty, price, held, self._collar_ref,
                                       self.sent_on.get(dt, 0), day_pnl)
            if reason:
                self._record("rejection", f"rejection:{coid}", dt, {
                    "client_order_id": coid, "symbol": self.symbol, "qty": qty, "price": price,
                    "reason": reason, "by": "risk"})
                return False
        sized = self._at_fill and target is not None
        order = Order(coid, self.symbol, qty, dt, target,
                      self.sizing.fraction if sized else None)
        self._record("order", f"order:{coid}", dt, {
            "client_order_id": coid, "symbol": self.symbol, "qty": qty, "price": price,
            "why": why})
        self.sent_on[dt] = self.sent_on.get(dt, 0) + 1
        status = self.broker.status(coid) or self.broker.submit(order)
        self.open[coid] = order
        if status.done:
            self._finish(status, dt)
        return True

    def _settle(self, dt: str) -> None:
        for coid in list(self.open):
            status = self.broker.status(coid)
            if status is not None and status.done:
                self._finish(status, dt)
        for status in self.broker.exits():  # stops, targets and holding limits the broker held
            self._finish(status, dt)  # no re-entry until the target changes: `_sized_for` stays

    def _finish(self, status: OrderStatus, dt: str) -> None:
        coid = status.client_order_id
        self.open.pop(coid, None)
        if status.state == "filled":
            refused = status.reason == PARTLY_REFUSED  # counted as the engine counts it
            self._record("fill", f"fill:{coid}", dt, {
                "client_order_id": coid, "symbol": status.symbol, "qty": status.filled_qty,
                "price": status.price, "commission": status.commission,
                **({"reason": status.reason} if status.reason and not refused else {})})
            if refused:
                self._record("rejection", f"rejection:{coid}", dt, {
                    "client_order_id": coid, "symbol": status.symbol, "qty": status.qty,
                    "reason": status.reason, "by": "broker"})
            self.shares += status.filled_qty
            self.cash -= status.filled_qty * status.price + status.commission
        elif status.state == "canceled":
            self._record("cancel", f"cancel:{coid}", dt, {"client_order_id": coid,
                                                           "reason": status.reason})
        else:
            self._record("rejection", f"rejection:{coid}", dt, {
                "client_order_id": coid, "symbol": status.symbol, "qty": status.qty,
                "reason": status.reason, "by": "broker"})

    # -- the kill switch ----------------------------------------------------------------------
    def kill(self, dt: str, reason: str) -> None:
        """Cancel open orders, flatten, accept no more strategy orders (stops once flat)."""
        self.killed = True
        self._record("kill", "kill", dt, {"reason": reason})
        for coid in list(self.open):
            status = self.broker.cancel(coid)
            if status is not None and status.done:
                self._finish(status, dt)

    def _flatten(self, dt: str, close: float) -> None:
        pending = sum(o.qty for o in self.open.values())
        if self.shares + pending:
            self._order(dt, -(self.shares + pending), close, 0.0, "kill")

    def summary(self) -> dict[str, Any]:
        """Where the run stands (the book as of the last bar)."""
        return status(self.journal)


def checked(bar: Bar, origin: str) -> Bar:
    """`bar` if it passes the ingest validator (`schema.validate`, as `feeds.to_bars`), which
    every bar of a feed meets, custom iterables included; else its DataError."""
    if not isinstance(bar, Bar):
        raise DataError(origin, f"not a Bar: {type(bar).__name__}")
    rows = pd.DataFrame([bar.to_dict()]).loc[:, list(NAMES)]
    clean = to_bars(rows, origin)[0]
    return bar if clean == bar else clean


def _costs(engine: Settings | None) -> dict[str, Any]:
    """The engine settings that change a size or the book (costs, carry), from the broker's,
    else none."""
    keys = ("commission_bps", "commission_per_share", "slippage_bps", "whole_shares", "cash_rate",
            "borrow_rate")
    return {k: getattr(engine, k) for k in keys} if engine is not None else {}


def request_kill(journal: Journal, reason: str = "manual") -> str:
    """Record a kill request; the runner honours it at its next bar. Returns its key."""
    bars = journal.events("bar")
    n = len(journal.events("kill_request"))
    key = f"kill_request:{n}"
    journal.append("kill_request", key, bars[-1]["dt"] if bars else "",
                   {"reason": reason, "after": bars[-1]["dt"] if bars else ""})
    return key


def status(journal: Journal) -> dict[str, Any]:
    """The run from its journal: last position, counts, open orders, alerts, kill state."""
    events = journal.events()
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    positions = [e for e in events if e["kind"] == "position"]
    last = positions[-1] if positions else None
    return {
        "run": journal.run,
        "last_bar": last["dt"] if last else None,
        **({k: last["data"][k] for k in ("shares", "cash", "equity", "pnl", "drawdown",
                                          "open_orders")} if last else {}),
        "events": counts,
        "alerts": [e["data"]["message"] for e in events if e["kind"] == "alert"],
        "killed": any(e["kind"] == "kill" for e in events),
        "stopped": any(e["kind"] == "stop" for e in events),
    }


def equity(journal: Journal) -> pd.Series:
    """Equity at each bar's close, from the journal's position events."""
    rows = journal.events("position")
    return pd.Series([r["data"]["equity"] for r in rows],
                     index=pd.DatetimeIndex([r["dt"] for r in rows], name="dt"), name="equity")


def fills(journal: Journal) -> pd.DataFrame:
    """Every fill: date, client order id, signed shares, price, commission, and the reason of
    fills the broker made itself (stop_loss, take_profit; empty for our orders)."""
    rows = journal.events("fill")
    return pd.DataFrame([{"dt": r["dt"], **r["data"]} for r in rows],
                        columns=["dt", "client_order_id", "symbol", "qty", "price", "commission",
                                 "reason"])
