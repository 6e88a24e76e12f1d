"""Broker adapters: submit / cancel / status / positions / cash, keyed by client order ids.

Orders are market orders for a signed number of shares, valid for the day. The client order id
makes submission idempotent: the runner asks `status(id)` before it submits, so an order it sent
just before a crash is found, not sent twice.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Any, Protocol

from algotrading import rules
from algotrading.backtest import Broker, Settings
from algotrading.errors import AlgotradingError
from algotrading.live.feeds import Bar

TERMINAL = ("filled", "canceled", "rejected")
PARTLY_REFUSED = "buying power: the reversal closed the old side, the new side was refused"


@dataclass(frozen=True)
class Order:
    """A market order for `qty` shares (signed: > 0 buys), decided at the close of `dt`.

    With `fraction` set, the order asks for `target` x `fraction` of equity (whole shares), as
    the engine sizes it: a broker that knows the fill price (the paper broker) sizes it there,
    net of costs; `qty` is the estimate at the decision close that other brokers get."""

    client_order_id: str
    symbol: str
    qty: float
    dt: str
    target: float | None = None  # the strategy's wanted position (+1 long, -1 short, 0 flat)
    fraction: float | None = None  # of equity per unit of target, sized at the fill


@dataclass(frozen=True)
class OrderStatus:
    """Where an order stands: state new | filled | canceled | rejected (with `reason`)."""

    client_order_id: str
    symbol: str
    qty: float
    state: str
    filled_qty: float = 0.0
    price: float = 0.0  # average fill price
    commission: float = 0.0
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class BrokerAdapter(Protocol):
    def submit(self, order: Order) -> OrderStatus: ...
    def cancel(self, client_order_id: str) -> OrderStatus | None: ...
    def status(self, client_order_id: str) -> OrderStatus | None: ...
    def positions(self) -> dict[str, float]: ...
    def cash(self) -> float: ...
    def on_bar(self, bar: Bar) -> None: ...
    def exits(self) -> list[OrderStatus]: ...  # broker-initiated fills since the last call


class PaperBroker:
    """A simulated account on `algotrading.backtest.Broker`: the same fills (next open), slippage,
    commissions, buying-power rule and exits as the backtests. One symbol; one open order at a time.

    `settings` are the engine's cost settings (cash, commission_bps, commission_per_share,
    slippage_bps, leverage) and exits (stop_loss, take_profit, max_bars: a bracket the broker
    holds on every position, as the engine does; stop and target fills are reported by `exits`).
    An order with `fraction` is sized at the fill (the next open) by the engine's rule
    (algotrading.rules.target_shares: equity there net of costs, whole shares), so all-in sizing
    fills exactly as in a backtest; other orders are for `qty` shares.
    The state lives in memory: after a crash the runner rebuilds it by replaying the journal's
    bars and orders through a fresh PaperBroker.
    """

    SETTINGS = ("cash", "commission_bps", "commission_per_share", "slippage_bps", "leverage",
                "stop_loss", "take_profit", "max_bars")

    def __init__(self, symbol: str, **settings: Any):
        if set(settings) - set(self.SETTINGS):
            raise ValueError(f"paper broker: unknown setting(s) {sorted(set(settings) - set(self.SETTINGS))}"
                             f"; it takes {sorted(self.SETTINGS)}")
        self.symbol = symbol
        self.book = Broker(Settings(size=1.0, fill="open", **settings))  # target = shares wanted
        self._orders: dict[str, OrderStatus] = {}
        self._open: str | None = None
        self._exits: list[OrderStatus] = []
        self._at_fill: tuple[float, Settings] | None = None  # the open order's target, sizing
        self._bars = 0

    @property
    def settings(self) -> Settings:
        """The engine settings it fills by (costs, leverage, exits; `size=1`: targets in shares)."""
        return self.book.settings
        self._dt = ""

    def submit(self, order: Order) -> OrderStatus:
        if order.client_order_id in self._orders:
            return self._orders[order.client_order_id]
        state = OrderStatus(order.client_order_id, order.symbol, order.qty, "new")
        if order.symbol != self.symbol:
            state = replace(state, state="rejected", reason=f"paper broker trades {self.symbol} only")
        elif self._open is not None:
            state = replace(state, state="rejected", reason="an order is already open")
        elif not order.qty and order.fraction is None:
            state = replace(state, state="rejected", reason="zero quantity")
        else:
            if order.fraction is not None:
                try:
                    sizing = replace(self.book.settings, size=None, fraction=order.fraction)
                except ValueError as exc:  # e.g. fraction above leverage: the engine refuses it
                    state = replace(state, state="rejected", reason=str(exc))
                    self._orders[order.client_order_id] = state
                    return state
                self._at_fill = (order.target or 0.0, sizing)
            self._open = order.client_order_id
            self.book.submit(0, self.book.shares[0] + order.qty)
        self._orders[order.client_order_id] = state
        return state

    def cancel(self, client_order_id: str) -> OrderStatus | None:
        state = self._orders.get(client_order_id)
        if state is None or state.done:
            return state
        self.book.submit(0, self.book.shares[0])  # the queued target becomes "hold"
        self._open = self._at_fill = None
        self._orders[client_order_id] = state = replace(state, state="canceled")
        return state

    def status(self, client_order_id: str) -> OrderStatus | None:
        return self._orders.get(client_order_id)

    def exits(self) -> list[OrderStatus]:
        out, self._exits = self._exits, []
        return out

    def positions(self) -> dict[str, float]:
        return {self.symbol: self.book.shares[0]} if self.book.shares[0] else {}

    def cash(self) -> float:
        return self.book.cash

    def on_bar(self, bar: Bar) -> None:
        """The bar's open fills the open order (or rejects it: buying power); its close marks."""
        if bar.sym != self.symbol:
            return
        rejected = self.book.rejected
        held = self.book.shares[0]
        if self._at_fill is not None:  # size the open order at this open, as the engine does
            target, sizing = self._at_fill
            self._at_fill = None
            equity = rules.equity_at(self.book.cash, held, bar.open, sizing.rules)
            self.book.submit(0, rules.target_shares(target, bar.open, equity, sizing.rules))
        everything = self.book.on_bar(self._bars, [bar.open], [bar.high], [bar.low])
        self._bars += 1
        self._dt = bar.dt
        ours = ("signal", "max_bars") if self._open is not None else ()
        fills = [f for f in everything if f.reason in ours]
        for f in everything:
            if f.reason not in ours:  # a stop, target or holding limit the broker held
                exit_id = f"{self.symbol}-{bar.dt}-{f.reason}"
                self._orders[exit_id] = done = OrderStatus(exit_id, self.symbol, f.qty, "filled",
                                                           f.qty, f.price, f.commission, f.reason)
                self._exits.append(done)
        self.book.mark([bar.close])
        # At each close the engine's loop hands the Broker the wanted position, which is when
        # it applies `max_bars`; holding the current position does the same here (a no-op
        # otherwise, and after an exit it makes the next order a new target).
        self.book.submit(0, self.book.shares[0])
        if self._open is None:
            return
        state = self._orders[self._open]
        self._open = None
        if fills:
            qty = sum(f.qty for f in fills)
            cost = sum(f.qty * f.price for f in fills)
            self._orders[state.client_order_id] = replace(  # a reversal may close the old
                state, state="filled", filled_qty=qty, price=cost / qty,  # side only
                commission=sum(f.commission for f in fills),
                reason=PARTLY_REFUSED if self.book.rejected > rejected else
                "" if fills[-1].reason == "signal" else fills[-1].reason)  # max_bars took it
        elif self.book.rejected > rejected:
            self._orders[state.client_order_id] = replace(state, state="rejected",
                                                          reason="buying power")
        elif self.book.shares[0] == held and not self.book.bankrupt:
            self._orders[state.client_order_id] = replace(  # sized at the fill to no change
                state, state="canceled", reason="nothing to trade at the fill")
        else:
            self._orders[state.client_order_id] = replace(state, state="rejected",
                                                          reason="not filled")


class AlpacaError(AlgotradingError, RuntimeError):
    """An Alpaca API call failed (HTTP status and the API's message)."""


class AlpacaBroker:
    """Alpaca's trading REST API (v2): POST/GET/DELETE /v2/orders, GET /v2/orders:by_client_order_id,
    GET /v2/positions, GET /v2/account. Keys come from the environment only (APCA_API_KEY_ID,
    APCA_API_SECRET_KEY); the base URL from `base_url` or APCA_API_BASE_URL (default: the paper
    endpoint). Alpaca fills at its own prices; `on_bar` has nothing to do."""

    PAPER = "https://paper-api.alpaca.markets"

    def __init__(self, base_url: str | None = None, timeout: float = 30.0):
        self.base = (base_url or os.environ.get("APCA_API_BASE_URL") or self.PAPER).rstrip("/")
        missing = [k for k in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY") if not os.environ.get(k)]
        if missing:
            raise ValueError(f"Alpaca needs environment variable(s) {', '.join(missing)}")
        self._headers = {"APCA-API-KEY-ID": os.environ["APCA_API_KEY_ID"],
                         "APCA-API-SECRET-KEY": os.environ["APCA_API_SECRET_KEY"],
                         "Content-Type": "application/json"}
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None,
              missing_ok: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            detail = exc.read().decode(errors="replace")[:200]
            raise AlpacaError(f"Alpaca {method} {path}: HTTP {exc.code} {detail}") from None
        except OSError as exc:
            raise AlpacaError(f"Alpaca {method} {path}: {exc}") from None
        return json.loads(text) if text else None

    @staticmethod
    def _status(o: dict[str, Any]) -> OrderStatus:
        sign = 1.0 if o["side"] == "buy" else -1.0
        state = {"filled": "filled", "canceled": "canceled", "expired": "canceled",
                 "rejected": "rejected"}.get(o["status"], "new")
        return OrderStatus(o["client_order_id"], o["symbol"], sign * float(o["qty"]), state,
                           sign * float(o.get("filled_qty") or 0),
                           float(o.get("filled_avg_price") or 0), 0.0,
                           o["status"] if state in ("canceled", "rejected") else "")

    def submit(self, order: Order) -> OrderStatus:
        body = {"symbol": order.symbol, "qty": f"{abs(order.qty):g}",
                "side": "buy" if order.qty > 0 else "sell", "type": "market",
                "time_in_force": "day", "client_order_id": order.client_order_id}
        return self._status(self._call("POST", "/v2/orders", body))

    def status(self, client_order_id: str) -> OrderStatus | None:
        query = urllib.parse.urlencode({"client_order_id": client_order_id})
        found = self._call("GET", f"/v2/orders:by_client_order_id?{query}", missing_ok=True)
        return self._status(found) if found else None

    def cancel(self, client_order_id: str) -> OrderStatus | None:
        query = urllib.parse.urlencode({"client_order_id": client_order_id})
        found = self._call("GET", f"/v2/orders:by_client_order_id?{query}", missing_ok=True)
        if not found:
            return None
        if self._status(found).done:
            return self._status(found)
        self._call("DELETE", f"/v2/orders/{urllib.parse.quote(found['id'])}", missing_ok=True)
        return self.status(client_order_id)

    def positions(self) -> dict[str, float]:
        return {p["symbol"]: float(p["qty"]) for p in self._call("GET", "/v2/positions")}

    def cash(self) -> float:
        return float(self._call("GET", "/v2/account")["cash"])

    def on_bar(self, bar: Bar) -> None:
        return None

    def exits(self) -> list[OrderStatus]:
        """None: this adapter sends plain market orders (no brackets held at Alpaca)."""
        return []
