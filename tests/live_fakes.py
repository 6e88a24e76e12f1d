"""Local stand-ins for the outside world of tests/test_live.py: a vendor's daily-bars API that
serves recorded responses, a fake Alpaca trading API, synthetic prices and the journal check."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data" / "live"
KEY_ID, SECRET = "test-key-id", "test-secret"  # fake values the fake server expects


def synthetic_prices(n: int = 160, seed: int = 7, start: str = "2023-01-02") -> pd.DataFrame:
    """A seeded random walk around 100 with consistent OHLC (SMA crossings every few weeks)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "vol": 1e6}, index=pd.DatetimeIndex(pd.bdate_range(start, periods=n),
                                                             name="dt"))


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _reply(h: BaseHTTPRequestHandler, code: int, body: Any = None) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


@contextmanager
def vendor(responses: list[str], key: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """Serves the recorded files in turn (the last one repeats); yields (base url, paths asked)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if key is not None and self.headers.get("APCA-API-KEY-ID") != key:
                return _reply(self, 403, {"message": "forbidden"})
            asked.append(self.path)
            name = responses[min(len(asked), len(responses)) - 1]
            _reply(self, 200, json.loads((DATA / name).read_text()))

    with serve(Handler) as server:
        yield f"http://127.0.0.1:{server.server_port}", asked


class FakeAlpaca:
    """Alpaca's v2 trading endpoints as far as the adapter uses them. Market orders fill at once
    at `price` (or stay "accepted" with fill=False); a repeated client_order_id gets HTTP 422,
    as Alpaca answers. `submitted` lists every accepted POST's client order id."""

    def __init__(self, price: float = 100.0, fill: bool = True, cash: float = 100_000.0):
        self.price, self.fill, self.cash = price, fill, cash
        self.orders: dict[str, dict[str, Any]] = {}
        self.submitted: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _authorised(self) -> bool:
                if (self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY")) \
                        != (KEY_ID, SECRET):
                    _reply(self, 401, {"message": "unauthorized"})
                    return False
                return True

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    coid = body["client_order_id"]
                    if any(o["client_order_id"] == coid for o in fake.orders.values()):
                        return _reply(self, 422, {"code": 40010001,
                                                  "message": "client_order_id must be unique"})
                    oid = f"order-{len(fake.orders) + 1}"
                    filled = fake.fill
                    fake.orders[oid] = order = {
                        "id": oid, "client_order_id": coid, "symbol": body["symbol"],
                        "qty": body["qty"], "side": body["side"], "type": body["type"],
                        "time_in_force": body["time_in_force"],
                        "status": "filled" if filled else "accepted",
                        "filled_qty": body["qty"] if filled else "0",
                        "filled_avg_price": str(fake.price) if filled else None}
                    fake.submitted.append(coid)
                _reply(self, 200, order)

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/v2/orders:by_client_order_id":
                    coid = urllib.parse.parse_qs(url.query)["client_order_id"][0]
                    found = [o for o in fake.orders.values() if o["client_order_id"] == coid]
                    return _reply(self, 200, found[0]) if found else \
                        _reply(self, 404, {"message": "order not found"})
                if url.path == "/v2/positions":
                    held: dict[str, float] = {}
                    for o in fake.orders.values():
                        if o["status"] == "filled":
                            sign = 1 if o["side"] == "buy" else -1
                            held[o["symbol"]] = held.get(o["symbol"], 0) + sign * float(o["qty"])
                    return _reply(self, 200, [{"symbol": s, "qty": f"{q:g}"}
                                              for s, q in held.items() if q])
                if url.path == "/v2/account":
                    return _reply(self, 200, {"cash": f"{fake.cash:.2f}", "status": "ACTIVE"})
                _reply(self, 404, {"message": "not found"})

            def do_DELETE(self) -> None:
                if not self._authorised():
                    return
                oid = self.path.rsplit("/", 1)[-1]
                order = fake.orders.get(oid)
                if order is None:
                    return _reply(self, 404, {"message": "order not found"})
                if order["status"] == "filled":
                    return _reply(self, 422, {"message": "order is already filled"})
                order["status"] = "canceled"
                _reply(self, 204)

        return Handler


def journal_rows(path: Path, run: str = "paper") -> list[tuple[str, str, Any]]:
    """(kind, key, data) of every event in recorded order."""
    from algotrading.live import SqliteJournal

    journal = SqliteJournal(path, run)
    try:
        return [(e["kind"], e["key"], e["data"]) for e in journal.events()]
    finally:
        journal.close()
