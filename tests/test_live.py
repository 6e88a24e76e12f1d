"""algotrading.live: feeds, brokers, risk checks, journal, runner, alerts and the CLI group.

Outside services are local stand-ins (tests/live_fakes.py): the vendor's daily-bars API serves
responses in its documented shape from 127.0.0.1, and a fake Alpaca implements the v2 trading
endpoints the adapter calls. What they prove: our requests are well formed (paths, bodies,
headers, keys from the environment) and we read the documented response shapes. What only the
real services would: their actual fills, rejections, rate limits and partial fills.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, query
from algotrading.cli import main
from algotrading.live import (
    AlpacaBroker,
    Bar,
    Limits,
    LogNotifier,
    Order,
    PaperBroker,
    PollingFeed,
    ReplayFeed,
    Runner,
    SqliteJournal,
    Thresholds,
    VendorConfig,
)
from algotrading.live import runner as live_runner
from algotrading.live.brokers import AlpacaError
from algotrading.live.journal import JournalError
from algotrading.schema import DataError

from live_fakes import KEY_ID, SECRET, FakeAlpaca, journal_rows, serve, synthetic_prices, vendor

HERE = Path(__file__).parent
SMA = {"fast_period": 5, "slow_period": 15}


@pytest.fixture
def prices() -> pd.DataFrame:
    return synthetic_prices()


@pytest.fixture
def alpaca_env(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)


# --- feeds ---------------------------------------------------------------------------------------

def test_replay_feed_streams_validated_bars_from_start_at_a_speed(prices):
    waits: list[float] = []
    feed = ReplayFeed(prices, "SYN", start="2023-03-01", speed=86_400 * 4, sleep=waits.append)
    bars = list(feed.bars())
    assert bars[0].dt == "2023-03-01" and bars[-1].dt == prices.index[-1].strftime("%Y-%m-%d")
    assert len(bars) + len(feed.history) == len(prices)
    assert feed.history.index[-1] < pd.Timestamp("2023-03-01")
    assert waits == [0.25] * (len(bars) - 1)  # one trading day = 86400 s / speed
    assert bars[3].close == pytest.approx(prices.loc[bars[3].dt, "close"])


def test_replay_feed_rejects_a_bad_bar_with_the_ingest_validator(prices):
    broken = prices.copy()
    broken.iloc[40, broken.columns.get_loc("high")] = broken.iloc[40]["low"] - 1
    with pytest.raises(DataError, match=r"replay of SYN: symbol SYN: row \d+ \(2023-02-27\): high < low"):
        list(ReplayFeed(broken, "SYN", start="2023-01-03").bars())
    with pytest.raises(ValueError, match="speed"):
        ReplayFeed(prices, "SYN", speed=0)
    for speed in (float("nan"), 1e-300, float("inf"), 0.5):  # refused before anything is journaled
        with pytest.raises(ValueError, match=rf"speed={speed}: want a number >= 1"):
            ReplayFeed(prices, "SYN", speed=speed)


def test_runner_sizes_must_be_finite(tmp_path, prices):
    for kw, shown in (({"size": float("inf")}, "size=inf"), ({"cash": float("nan")}, "cash=nan"),
                      ({"fraction": float("inf")}, "fraction=inf"), ({"size": -1}, "size=-1")):
        with pytest.raises(ValueError, match=rf"{shown}: must be a finite number > 0"):
            Runner("sma", "SYN", PaperBroker("SYN"), SqliteJournal(tmp_path / "j.db"), params=SMA,
                   **kw)
    assert SqliteJournal(tmp_path / "j.db").events() == []


def test_polling_feed_yields_each_new_bar_once_with_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("VENDOR_KEY", "k-123")
    with vendor(["bars_poll1.json", "bars_poll2.json", "bars_empty.json"], key="k-123") as (url, asked):
        config = VendorConfig.load(json.dumps({
            "url": url + "/v2/stocks/{symbol}/bars?timeframe=1Day&start={start}",
            "headers": {"APCA-API-KEY-ID": "VENDOR_KEY"}, "interval": 5}))
        waits: list[float] = []
        feed = PollingFeed(config, "AAPL", start="2024-01-02", polls=3, sleep=waits.append)
        bars = list(feed.bars())
    assert [b.dt for b in bars] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert bars[-1] == Bar("AAPL", "2024-01-04", 182.15, 183.0872, 180.88, 181.91, 71983570.0)
    assert waits == [5, 5]
    assert asked[0] == "/v2/stocks/AAPL/bars?timeframe=1Day&start=2024-01-02"
    assert asked[1].endswith("start=2024-01-04") and len(asked) == 3  # asks only for new days


def test_polling_feed_refuses_a_bad_bar_and_a_missing_key(monkeypatch):
    monkeypatch.delenv("VENDOR_KEY", raising=False)
    with vendor(["bars_bad.json"]) as (url, _):
        feed = PollingFeed(VendorConfig(url + "/bars/{symbol}"), "AAPL", start="2024-01-05")
        with pytest.raises(DataError, match=r"/bars/AAPL: symbol AAPL: row 1 \(2024-01-05\): high < low"):
            feed.poll()
        keyed = PollingFeed(VendorConfig(url, headers={"X-Key": "VENDOR_KEY"}), "AAPL", "2024-01-05")
        with pytest.raises(ValueError, match="needs environment variable VENDOR_KEY"):
            keyed.poll()
    with pytest.raises(ValueError, match="fields lacks"):
        VendorConfig.load({"url": "http://x", "fields": {"dt": "t"}})
    with pytest.raises(ValueError, match="unknown key"):
        VendorConfig.load({"url": "http://x", "token": "secret"})


# --- brokers -------------------------------------------------------------------------------------

def test_paper_broker_fills_like_the_backtest_broker():
    paper = PaperBroker("SYN", commission_bps=10, slippage_bps=5, commission_per_share=0.01)
    bar = Bar("SYN", "2024-01-02", 100, 101, 99, 100.5, 1)
    paper.on_bar(bar)
    new = paper.submit(Order("a", "SYN", 50, "2024-01-02"))
    assert new.state == "new" and paper.positions() == {}
    paper.on_bar(Bar("SYN", "2024-01-03", 102, 103, 101, 102.5, 1))
    done = paper.status("a")
    px = 102 * 1.0005  # the open, slipped against us
    assert done.state == "filled" and done.filled_qty == 50
    assert done.price == pytest.approx(px)
    assert done.commission == pytest.approx(50 * (0.01 + px * 0.001))
    assert paper.cash() == pytest.approx(100_000 - 50 * px - done.commission)
    assert paper.positions() == {"SYN": 50}
    assert paper.submit(Order("a", "SYN", 50, "x")) is done  # same id: no second order
    # cancel before the next open: nothing fills
    paper.submit(Order("b", "SYN", -50, "2024-01-03"))
    assert paper.cancel("b").state == "canceled"
    paper.on_bar(Bar("SYN", "2024-01-04", 90, 91, 89, 90, 1))
    assert paper.positions() == {"SYN": 50}
    # buying power: 2000 shares at ~90 need more than the equity
    paper.submit(Order("c", "SYN", 2000, "2024-01-04"))
    paper.on_bar(Bar("SYN", "2024-01-05", 90, 91, 89, 90, 1))
    assert paper.status("c").state == "rejected" and paper.status("c").reason == "buying power"
    assert paper.submit(Order("d", "XYZ", 1, "x")).reason == "paper broker trades SYN only"


def test_alpaca_adapter_speaks_the_documented_endpoints(alpaca_env):
    fake = FakeAlpaca(price=101.5, fill=False, cash=25_000)
    with serve(fake.handler()) as server:
        broker = AlpacaBroker(f"http://127.0.0.1:{server.server_port}")
        sent = broker.submit(Order("run-SYN-20240102-0", "SYN", -30, "2024-01-02"))
        assert sent.state == "new" and sent.qty == -30
        assert fake.bodies == [{"symbol": "SYN", "qty": "30", "side": "sell", "type": "market",
                                "time_in_force": "day", "client_order_id": "run-SYN-20240102-0"}]
        assert broker.status("run-SYN-20240102-0").state == "new"
        assert broker.status("nope") is None
        with pytest.raises(AlpacaError, match="HTTP 422 .*client_order_id must be unique"):
            broker.submit(Order("run-SYN-20240102-0", "SYN", -30, "2024-01-02"))
        assert broker.cancel("run-SYN-20240102-0").state == "canceled"
        assert broker.cash() == 25_000 and broker.positions() == {}
        fake.fill = True
        filled = broker.submit(Order("run-SYN-20240103-0", "SYN", 10, "2024-01-03"))
        assert (filled.state, filled.filled_qty, filled.price) == ("filled", 10, 101.5)
        assert broker.positions() == {"SYN": 10}


def test_alpaca_order_sends_exactly_the_quantity_that_was_checked(alpaca_env):
    fake = FakeAlpaca(price=10.0)
    with serve(fake.handler()) as server:
        broker = AlpacaBroker(f"http://127.0.0.1:{server.server_port}")
        for i, qty in enumerate((1_234_567, -0.1234567, 30, 1e-7, 123456789012.5)):
            filled = broker.submit(Order(f"c{i}", "SYN", qty, "2024-01-02"))
            assert float(fake.bodies[-1]["qty"]) == abs(qty) and "e" not in fake.bodies[-1]["qty"]
            assert filled.filled_qty == qty
        assert [b["qty"] for b in fake.bodies[:2]] == ["1234567", "0.1234567"]
        with pytest.raises(AlpacaError, match="order quantity inf is not a finite number"):
            broker.submit(Order("c9", "SYN", float("inf"), "2024-01-02"))


def test_alpaca_keys_come_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "x")
    with pytest.raises(ValueError, match="APCA_API_KEY_ID"):
        AlpacaBroker("http://127.0.0.1:9")
    monkeypatch.setenv("APCA_API_KEY_ID", "wrong")
    with serve(FakeAlpaca().handler()) as server:
        with pytest.raises(AlpacaError, match="HTTP 401"):
            AlpacaBroker(f"http://127.0.0.1:{server.server_port}").cash()


@pytest.fixture
def elsewhere():
    """A second origin that records the headers it receives, and a first one that redirects every
    request there (302, also for the POST): what a hijacked or misconfigured base URL does."""
    seen: list[dict[str, str]] = []

    class Other(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(dict(self.headers))
            body = b'{"cash": "1", "bars": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    with serve(Other) as other:
        target = f"http://localhost:{other.server_port}"

        class Redirect(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

        with serve(Redirect) as first:
            yield f"http://127.0.0.1:{first.server_port}", seen


def test_alpaca_keys_are_not_sent_to_another_origin_on_a_redirect(alpaca_env, elsewhere):
    base, seen = elsewhere
    broker = AlpacaBroker(base)
    for call in (lambda: broker.status("c1"), broker.cash,
                 lambda: broker.submit(Order("c2", "SYN", 5, "2024-01-02"))):
        with pytest.raises(AlpacaError, match=r"redirected \(HTTP 302\) to another origin "
                                              r"\(localhost:\d+\); not followed"):
            call()
    assert seen == []  # the other server received nothing, keys or otherwise


def test_polling_feed_key_is_not_sent_to_another_origin_on_a_redirect(monkeypatch, elsewhere):
    base, seen = elsewhere
    monkeypatch.setenv("VENDOR_KEY", "k-123")
    keyed = PollingFeed(VendorConfig(base + "/bars/{symbol}", headers={"X-Key": "VENDOR_KEY"}),
                        "AAPL", "2024-01-05")
    with pytest.raises(DataError, match="redirected .* to another origin"):
        keyed.poll()
    assert seen == []
    # without a key, following the redirect leaks nothing: it is followed
    assert PollingFeed(VendorConfig(base + "/bars/{symbol}"), "AAPL", "2024-01-05").poll() == []
    assert len(seen) == 1 and "X-Key" not in seen[0]


def test_cleartext_broker_and_feed_urls_are_refused_except_loopback(alpaca_env):
    for url in ("http://paper-api.alpaca.markets", "http://10.0.0.5:8080", "ftp://x", "api.example"):
        with pytest.raises(AlpacaError, match="is not an https URL .*127.0.0.1, ::1 or localhost"):
            AlpacaBroker(url)
    with pytest.raises(ValueError, match=r"feed config: url: 'http://data.example.com/\{symbol\}' is "
                                         "not an https URL"):
        VendorConfig.load({"url": "http://data.example.com/{symbol}"})
    assert VendorConfig.load({"url": "https://data.example.com/{symbol}"}).url.startswith("https")
    AlpacaBroker("http://[::1]:9")  # loopback: accepted (tests and local fakes)
    AlpacaBroker("http://localhost:9")


@pytest.fixture
def hostile_vendor():
    """A vendor that drips one byte every 0.1 s (/drip), announces 100 MB (/huge), streams
    without a length past any cap (/endless), or closes early (/short: 10 of 100 bytes)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            if self.path.startswith("/drip"):
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
            elif self.path.startswith("/huge"):
                self.send_header("Content-Length", str(100 * 2**20))
                self.end_headers()
            elif self.path.startswith("/endless"):
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b" " * 2**16)
            else:
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b'{"bars": []')
            self.close_connection = True

    with serve(Handler) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def test_feed_calls_have_a_deadline_a_size_cap_and_name_a_truncated_answer(hostile_vendor,
                                                                           monkeypatch):
    def poll(path):
        return PollingFeed(VendorConfig(hostile_vendor + path + "/{symbol}"), "AAPL", "2024-01-05",
                           timeout=2).poll()

    monkeypatch.setenv("ALGO_HTTP_DEADLINE", "1")
    with pytest.raises(DataError, match=r"drip/AAPL: .*no complete response within 1 s "
                                        r"\(ALGO_HTTP_DEADLINE raises the deadline\)"):
        poll("/drip")  # every byte arrives inside the 2 s socket timeout; the deadline cuts it
    monkeypatch.setenv("ALGO_HTTP_MAX_BYTES", str(2**20))
    with pytest.raises(DataError, match=r"huge/AAPL: response of 104,857,600 bytes is over the limit "
                                        r"of 1,048,576 \(ALGO_HTTP_MAX_BYTES raises it\)"):
        poll("/huge")
    with pytest.raises(DataError, match=r"endless/AAPL: response over the limit of 1,048,576 bytes"):
        poll("/endless")
    with pytest.raises(DataError, match=r"short/AAPL: connection closed 89 bytes before the end of "
                                        r"the response \(IncompleteRead\)"):
        poll("/short")


# --- risk checks ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("limits", "args", "reason"), [
    (Limits(max_order_shares=100), (150, 10, 0, 10, 0, 0), "150 shares exceeds max_order_shares 100"),
    (Limits(max_order_notional=1000), (150, 10, 0, 10, 0, 0), "notional 1,500.00 exceeds"),
    (Limits(max_position=200), (150, 10, 100, 10, 0, 0), "250 shares would exceed max_position 200"),
    (Limits(collar=0.1), (10, 12, 0, 10, 0, 0), "20.0% from the last close 10, outside the 10.0%"),
    (Limits(max_orders_per_day=1), (10, 10, 0, 10, 1, 0), "1 order(s) today reach max_orders_per_day 1"),
    (Limits(daily_loss=500), (10, 10, 0, 10, 0, -600), "today's loss 600.00 exceeds daily_loss 500.00"),
])
def test_each_risk_limit_rejects_with_its_reason(limits, args, reason):
    assert reason in limits.check(*args)
    qty, price, held, last, today, pnl = args
    assert Limits().check(*args) is None  # no limits, no rejection


def test_reducing_orders_pass_position_and_loss_limits():
    limits = Limits(max_position=100, daily_loss=10)
    assert limits.check(-150, 10, 200, 10, 0, -1000) is None
    with pytest.raises(ValueError, match="collar"):
        Limits(collar=-0.1)


# --- journal ------------------------------------------------------------------------------------

def test_sqlite_journal_is_append_only_and_idempotent(tmp_path):
    journal = SqliteJournal(tmp_path / "j.db", run="r1")
    assert journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.5})
    assert not journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.5})
    with pytest.raises(JournalError, match="differs from the record"):
        journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.6})
    db = sqlite3.connect(tmp_path / "j.db")
    for sql in ("UPDATE events SET data = '{}'", "DELETE FROM events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()
    assert SqliteJournal(tmp_path / "j.db", run="r2").events() == []  # runs share the file only
    other = SqliteJournal(tmp_path / "j.db", run="r1")  # e.g. `live flatten` in another process
    other.append("kill_request", "kill_request:0", "", {"reason": "x", "after": ""})
    assert [e["kind"] for e in journal.events()] == ["bar"]
    journal.reload()
    assert [e["kind"] for e in journal.events()] == ["bar", "kill_request"]


def test_sqlite_journal_refuses_replace_an_emptied_file_and_a_second_writer(tmp_path, prices):
    path = tmp_path / "j.db"
    journal = SqliteJournal(path, run="r1")
    journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.5})
    db = sqlite3.connect(path)
    for sql in ("INSERT OR REPLACE INTO events VALUES ('r1', 1, 'bar', 'bar:2024-01-02', "
                "'2024-01-02', '{\"close\": 9}')",
                "REPLACE INTO events VALUES ('r1', 1, 'bar', 'bar:x', '2024-01-02', '{}')",
                "INSERT OR IGNORE INTO events VALUES ('r1', 1, 'kill', 'kill', '', '{}')"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()
    assert [e["data"] for e in SqliteJournal(path, run="r1").events()] == [{"close": 1.5}]
    # two runners on one run: the second writer's append is named, not "UNIQUE constraint failed"
    second = SqliteJournal(path, run="r1")
    second.append("bar", "bar:2024-01-03", "2024-01-03", {"close": 1.6})
    with pytest.raises(JournalError, match=r"bar:2024-01-04 \(event 2\) was written by another "
                                           r"writer: one runner per run"):
        journal.append("bar", "bar:2024-01-04", "2024-01-04", {"close": 1.7})
    journal.close()
    second.close()
    # a journal emptied to 0 bytes is not a fresh run
    for name in ("j.db-wal", "j.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    path.write_bytes(b"")
    with pytest.raises(JournalError, match=r"j.db is an empty file \(0 bytes\)"):
        SqliteJournal(path, run="r1")
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (x)")
    db.close()
    with pytest.raises(JournalError, match="without the journal's events table"):
        SqliteJournal(other)
    (tmp_path / "text.db").write_text("not sqlite at all, longer than a header would be" * 200)
    with pytest.raises(JournalError, match="not a SQLite journal"):
        SqliteJournal(tmp_path / "text.db")


# --- the runner ---------------------------------------------------------------------------------

def _fills_from_backtest(result: backtest.Result, prices: pd.DataFrame, slip: float) -> list:
    """(fill date, signed shares, price) implied by a backtest's positions (fills at the open)."""
    pos = result.positions
    change = pos.diff().fillna(pos.iloc[0])
    out = []
    for day, qty in change[change != 0].items():
        out.append((day.strftime("%Y-%m-%d"), qty, prices.loc[day, "open"] * (1 + np.sign(qty) * slip)))
    return out


@pytest.mark.parametrize(("strategy", "params"), [
    ("sma", SMA), ("sma", {**SMA, "long_only": True}), ("breakout", {"period": 10})])
def test_replay_through_the_runner_matches_the_backtest(tmp_path, prices, strategy, params):
    costs = {"cash": 50_000.0, "commission_bps": 5.0, "slippage_bps": 2.0,
             "commission_per_share": 0.005}
    start = "2023-03-01"
    feed = ReplayFeed(prices, "SYN", start=start)
    journal = SqliteJournal(tmp_path / "j.db")
    summary = Runner(strategy, "SYN", PaperBroker("SYN", **costs), journal, params=params,
                     history=feed.history, size=100, cash=costs["cash"]).run(feed)
    result = backtest.run(strategy, prices, size=100, start=start, **costs, **params)
    assert summary["equity"] == pytest.approx(result.metrics["final_value"], rel=1e-12)
    live_equity = live_runner.equity(journal)
    assert np.allclose(live_equity.to_numpy(), result.equity.to_numpy(), rtol=1e-12)
    fills = live_runner.fills(journal)
    expected = _fills_from_backtest(result, prices, 2e-4)
    assert len(fills) == len(expected) >= 6
    assert [(r.dt, r.qty) for r in fills.itertuples()] == [(d, q) for d, q, _ in expected]
    assert np.allclose(fills["price"], [p for _, _, p in expected], rtol=1e-12)


def test_risk_rejections_kill_switch_and_alert_are_journaled(tmp_path, prices, caplog):
    feed = ReplayFeed(prices, "SYN", start="2023-03-01")
    journal = SqliteJournal(tmp_path / "j.db")
    notifier = LogNotifier()
    runner = Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
                    size=100, limits=Limits(max_order_shares=150),
                    thresholds=Thresholds(loss=1.0), notifier=notifier)
    bars = list(feed.bars())
    with caplog.at_level(logging.INFO, logger="algotrading.live"):
        runner.run(bars[:40])
    rejections = journal.events("rejection")
    assert rejections and all("exceeds max_order_shares 150" in r["data"]["reason"]
                              for r in rejections)
    assert {r["data"]["by"] for r in rejections} == {"risk"}
    targets = {e["dt"]: e["data"]["target"] for e in journal.events("signal")}
    days = list(targets)
    for r in rejections:  # refused once per change of the wanted position, not every bar
        i = days.index(r["dt"])
        assert targets[days[i]] != targets[days[i - 1]]
    # the alert fired once, through the notifier, and was journaled
    alerts = journal.events("alert")
    assert [a["data"]["name"] for a in alerts] == ["loss"] and len(notifier.sent) == 1
    assert "PnL" in notifier.sent[0][1]
    lines = [json.loads(r.message) for r in caplog.records if r.name == "algotrading.live.metrics"]
    assert {line["metric"] for line in lines} == {"equity", "pnl", "drawdown", "position"}
    assert all(set(line) == {"metric", "value", "run", "symbol", "dt"} for line in lines)
    # the kill switch: flatten at the next bar, then stop
    held = runner.shares
    assert held
    live_runner.request_kill(journal, "test")
    summary = runner.run(bars)
    assert summary["killed"] and summary["stopped"] and summary["shares"] == 0
    kill_order = [o for o in journal.events("order") if o["data"]["why"] == "kill"]
    assert len(kill_order) == 1 and kill_order[0]["data"]["qty"] == -held
    assert journal.events("stop")[0]["dt"] == bars[41].dt  # filled at the next open, then stopped
    assert len(journal.events("bar")) == 42


def test_the_collar_sees_the_history_last_close_on_the_first_bar(tmp_path, prices):
    feed = ReplayFeed(prices, "SYN", start="2023-03-01")
    last = float(feed.history["close"].iloc[-1])
    first = list(feed.bars())[0]
    bad = Bar("SYN", first.dt, last / 100, last / 100, last / 100, last / 100, first.vol)
    journal = SqliteJournal(tmp_path / "j.db")
    runner = Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
                    fraction=1.0, limits=Limits(collar=0.1))
    assert runner.target() != 0  # the strategy wants a position at once: the first bar orders
    runner.run([bad])
    assert journal.events("order") == []
    (rejection,) = journal.events("rejection")
    assert rejection["dt"] == first.dt and rejection["data"]["by"] == "risk"
    assert rejection["data"]["reason"] == (f"price {last / 100:g} is 99.0% from the last close "
                                           f"{last:g}, outside the 10.0% collar")


def test_bars_of_a_custom_feed_pass_the_validator(tmp_path, prices):
    feed = ReplayFeed(prices, "SYN", start="2023-03-01")
    good = list(feed.bars())[:3]
    negative = Bar("SYN", good[1].dt, 10.0, 10.0, -5.0, -5.0, 1.0)
    journal = SqliteJournal(tmp_path / "j.db")
    runner = Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
                    size=100, limits=Limits(max_order_notional=50_000))
    with pytest.raises(DataError, match=rf"feed of SYN: symbol SYN: row 1 \({good[1].dt}\): "):
        runner.run(iter([good[0], negative, good[2]]))  # any iterable of bars
    assert [e["dt"] for e in journal.events("bar")] == [good[0].dt]  # stopped before using it
    assert all(o["dt"] == good[0].dt for o in journal.events("order"))
    with pytest.raises(DataError, match="feed of SYN: not a Bar: dict"):
        runner.run([good[1].to_dict()])


def test_a_kill_cancels_the_open_order_before_it_fills(tmp_path, prices):
    feed = ReplayFeed(prices, "SYN", start="2023-03-01")
    bars = list(feed.bars())
    journal = SqliteJournal(tmp_path / "j.db")
    runner = Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
                    size=100)
    orders = 0
    for i, bar in enumerate(bars):  # stop at the first bar whose close sent an order
        runner.run([bar])
        if len(journal.events("order")) > orders and runner.open:
            rest = bars[i + 1:]
            break
        orders = len(journal.events("order"))
    held, (coid,) = runner.shares, list(runner.open)
    live_runner.request_kill(journal, "test")
    summary = runner.run(rest)
    assert [c["data"]["client_order_id"] for c in journal.events("cancel")] == [coid]
    assert coid not in {f["data"]["client_order_id"] for f in journal.events("fill")}
    kill_orders = [o["data"]["qty"] for o in journal.events("order") if o["data"]["why"] == "kill"]
    assert kill_orders == ([-held] if held else [])  # flattens what was held, no reversal first
    assert summary["killed"] and summary["shares"] == 0


def test_a_restarted_runner_refuses_another_configuration(tmp_path, prices):
    feed = ReplayFeed(prices, "SYN", start="2023-03-01")
    journal = SqliteJournal(tmp_path / "j.db")
    Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
           size=100).run(list(feed.bars())[:5])
    with pytest.raises(JournalError, match="was started with"):
        Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
               size=200).run([])


# --- kill and restart: real processes ------------------------------------------------------------

def _child(tmp_path: Path, journal: Path, broker: str, kill: str = "", speed: str = "",
           env: dict | None = None, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    csv = tmp_path / "prices.csv"
    if not csv.exists():
        synthetic_prices().to_csv(csv)
    cmd = [sys.executable, str(HERE / "live_child.py"), str(journal), str(csv), broker, kill, speed]
    full_env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_runner_killed_at_several_points_resumes_without_losing_or_duplicating(tmp_path):
    clean = tmp_path / "clean.db"
    done = _child(tmp_path, clean, "paper")
    assert done.returncode == 0, done.stderr
    reference = journal_rows(clean)
    kinds = [k for k, _, _ in reference]
    first = {kind: kinds.index(kind) + 1 for kind in ("order", "fill", "position")}
    points = [f"append:{first['order']}",  # order journaled, not yet sent
              f"append:{first['fill']}",  # fill journaled, position not yet
              f"append:{first['position'] + 2}",
              f"append:{len(reference) - 3}",  # near the end
              "submit:2"]  # second order sent, not yet journaled as filled
    for point in points:
        journal = tmp_path / f"{point.replace(':', '_')}.db"
        killed = _child(tmp_path, journal, "paper", kill=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        partial = journal_rows(journal)
        assert 0 < len(partial) < len(reference) and partial == reference[:len(partial)]
        resumed = _child(tmp_path, journal, "paper")
        assert resumed.returncode == 0, resumed.stderr
        assert journal_rows(journal) == reference, point
    orders = [key for kind, key, _ in reference if kind == "order"]
    assert len(orders) == len(set(orders)) >= 5


def _count(journal: Path) -> int:
    """Events so far, read-only (the runner process is writing)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        db.close()


@pytest.mark.slow
def test_runner_killed_at_a_random_moment_resumes(tmp_path):
    clean = tmp_path / "clean.db"
    assert _child(tmp_path, clean, "paper").returncode == 0
    journal = tmp_path / "timed.db"
    proc = _child(tmp_path, journal, "paper", speed=str(86_400 * 20), wait=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # replaying 20 bars a second
        if journal.exists() and _count(journal) > 60:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # somewhere in the middle of a bar, wherever it is
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(journal_rows(journal)) < len(journal_rows(clean))
    assert _child(tmp_path, journal, "paper").returncode == 0
    assert journal_rows(journal) == journal_rows(clean)


@pytest.mark.slow
def test_alpaca_runner_killed_between_journal_and_broker_sends_each_order_once(tmp_path):
    fake_clean, fake = FakeAlpaca(), FakeAlpaca()
    with serve(fake_clean.handler()) as server:
        env = {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET,
               "APCA_API_BASE_URL": f"http://127.0.0.1:{server.server_port}"}
        assert _child(tmp_path, tmp_path / "clean.db", "alpaca", env=env).returncode == 0
    reference = journal_rows(tmp_path / "clean.db")
    first_order = [k for k, _, _ in reference].index("order") + 1
    with serve(fake.handler()) as server:
        env["APCA_API_BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
        journal = tmp_path / "j.db"
        for kill in (f"append:{first_order}", "submit:2", "submit:1"):
            run = _child(tmp_path, journal, "alpaca", kill=kill, env=env)
            assert run.returncode in (-signal.SIGKILL, 0), run.stderr
        assert _child(tmp_path, journal, "alpaca", env=env).returncode == 0
    assert journal_rows(journal) == reference
    assert fake.submitted == fake_clean.submitted  # every order once, none lost
    assert len(set(fake.submitted)) == len(fake.submitted) >= 5


# --- the CLI -------------------------------------------------------------------------------------

def test_cli_live_replay_status_flatten(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample"]) == 0
    journal = str(tmp_path / "live.db")
    args = ["live", "replay", "sma", "--symbol", "GSPC", "--from", "2018-06-01", "--journal", journal,
            "--param", "fast_period=10", "--param", "slow_period=30", "--param", "size=10"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2018-12-31" in out
    assert main(["live", "status", "--journal", journal, "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    prices = query.load_prices("GSPC")
    assert state["last_bar"] == "2018-12-31"
    assert state["events"]["bar"] == (prices.index >= "2018-06-01").sum()
    result = backtest.run("sma", prices, fast_period=10, slow_period=30, size=10, start="2018-06-01")
    assert state["equity"] == pytest.approx(result.metrics["final_value"], rel=1e-12)
    assert main(["live", "flatten", "--journal", journal, "--reason", "test"]) == 0
    assert "kill request recorded" in capsys.readouterr().out
    for command in ("flatten", "status"):  # a mistyped run name is refused, not "recorded"
        assert main(["live", command, "--journal", journal, "--run", "papr"]) == 2
        assert f"journal {journal} has no run 'papr'" in capsys.readouterr().err
    assert len(query_journal(journal, "papr")) == 0
    assert main(["live", "replay", "nope", "--symbol", "GSPC", "--from", "2018-06-01",
                 "--journal", journal]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err
    assert main(["live", "status", "--journal", str(tmp_path / "none.db")]) == 2
    assert "no journal at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def query_journal(path: str, run: str) -> list:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT key FROM events WHERE run = ?", (run,)).fetchall()
    finally:
        db.close()


# --- the container entry point ----------------------------------------------------------------------

@pytest.mark.slow
def test_container_entry_point_polls_trades_and_exits(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    monkeypatch.setenv("ALGO_LAKE", str(lake))
    assert main(["ingest", "sample"]) == 0
    journal = tmp_path / "live.db"
    with vendor(["bars_poll1.json", "bars_poll2.json"]) as (url, asked):
        env = {**os.environ, "ALGO_LAKE": str(lake), "ALGO_JOURNAL": str(journal),
               "ALGO_FEED_CONFIG": json.dumps({"url": url + "/v2/stocks/{symbol}/bars?start={start}"}),
               "ALGO_LIVE_STRATEGY": "sma", "ALGO_LIVE_SYMBOL": "GSPC",
               "ALGO_LIVE_START": "2024-01-02", "ALGO_LIVE_BROKER": "paper",
               "ALGO_LIVE_PARAMS": json.dumps({"size": 1, "fast_period": 10, "slow_period": 30})}
        run = subprocess.run([sys.executable, "-m", "algotrading.live"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert len(asked) == 1  # one poll per scheduled run
        again = subprocess.run([sys.executable, "-m", "algotrading.live"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    first = json.loads(run.stdout.strip().splitlines()[-1])
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert (first["last_bar"], second["last_bar"]) == ("2024-01-03", "2024-01-04")
    assert second["events"]["bar"] == 3  # the second run resumed from the journal
    assert any('"metric": "equity"' in line for line in again.stdout.splitlines())
    missing = subprocess.run([sys.executable, "-m", "algotrading.live"], capture_output=True,
                             text=True, timeout=120, env={k: v for k, v in env.items()
                                                          if k != "ALGO_LIVE_SYMBOL"})
    assert missing.returncode == 2 and "ALGO_LIVE_SYMBOL" in missing.stderr


# --- parity for the ML forecast strategy -----------------------------------------------------------

@pytest.mark.slow
def test_ml_forecast_replay_matches_the_backtest(tmp_path):
    """The forecaster's strategy leaves exits to the engine (take_profit, stop_loss, max_bars):
    the paper broker holds the same bracket, so the runner reproduces the backtest, including
    an exit that happens on the last bar of a live prefix (features.exits(partial=True))."""
    from algotrading import schema, sources
    from algotrading.models import forecast
    from algotrading.strategies import ml_forecast

    gspc = schema.to_prices(sources.read("sample").frame, "GSPC")
    model, _ = forecast.train(gspc, forecast.Config(epochs=3, patience=2))
    artifact = str(forecast.save(model, tmp_path / "forecast-GSPC"))
    exits = ml_forecast.engine_params(model)
    params = {"model": artifact, "long_threshold": 0.3, "short_threshold": 0.35}
    costs = {"commission_per_share": 0.005, "slippage_bps": 2.0}
    start = "2018-09-04"
    prices = gspc.loc["2014-01-01":]  # enough history for the features, a quicker replay
    feed = ReplayFeed(prices, "GSPC", start=start)
    journal = SqliteJournal(tmp_path / "j.db")
    summary = Runner("ml_forecast", "GSPC", PaperBroker("GSPC", **costs, **exits), journal,
                     params=params, history=feed.history, size=20).run(feed)
    result = backtest.run("ml_forecast", prices, size=20, start=start, **costs, **exits, **params)
    fills = live_runner.fills(journal)
    assert len(fills) >= 6 and set(fills["reason"].dropna()) & {"stop_loss", "take_profit"}
    assert summary["equity"] == pytest.approx(result.metrics["final_value"], rel=1e-12)
    assert np.allclose(live_runner.equity(journal).to_numpy(), result.equity.to_numpy(), rtol=1e-12)
    trades = result.trades  # an entry and its exit, or an entry still open at the end
    assert len(fills) == 2 * int((trades["status"] == "closed").sum()) + int(
        (trades["status"] == "open").sum())
    assert (fills["reason"] == "stop_loss").sum() == (trades["exit_reason"] == "stop_loss").sum()
