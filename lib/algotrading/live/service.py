"""Wiring for the command line and the container: journal, broker and notifier from settings.

Settings (environment): `ALGO_JOURNAL` (a SQLite path, default data/live/journal.db under the
project, or `dynamodb://TABLE`), `ALGO_ALERT_TOPIC` (an SNS topic ARN; else alerts are logged),
`ALGO_FEED_CONFIG` (the vendor feed's JSON config, for `poll`), and Alpaca's `APCA_API_KEY_ID`,
`APCA_API_SECRET_KEY`, `APCA_API_BASE_URL` for `broker="alpaca"`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from algotrading.backtest import SETTINGS
from algotrading.config import project_root
from algotrading.live.alerts import LogNotifier, Notifier, SnsNotifier, Thresholds
from algotrading.live.brokers import AlpacaBroker, BrokerAdapter, PaperBroker
from algotrading.live.feeds import Feed, PollingFeed, ReplayFeed, VendorConfig
from algotrading.live.journal import Journal, open_journal
from algotrading.live.risk import Limits
from algotrading.live.runner import Runner
from algotrading.params import build

SIZING = ("size", "fraction", "cash")
COSTS = PaperBroker.SETTINGS  # costs and the bracket exits the paper broker holds


def journal(location: str | None = None, run: str = "paper", must_exist: bool = False) -> Journal:
    where = location or os.environ.get("ALGO_JOURNAL") or str(project_root() / "data" / "live"
                                                              / "journal.db")
    if must_exist and not where.startswith("dynamodb://") and not os.path.isfile(where):
        raise ValueError(f"no journal at {where} (run `algotrading live replay` first)")
    return open_journal(where, run)


def notifier() -> Notifier:
    topic = os.environ.get("ALGO_ALERT_TOPIC")
    return SnsNotifier(topic) if topic else LogNotifier()


def broker(kind: str, symbol: str, costs: Mapping[str, Any]) -> BrokerAdapter:
    if kind == "paper":
        return PaperBroker(symbol, **costs)
    if kind == "alpaca":
        return AlpacaBroker()
    raise ValueError(f"broker {kind!r}: choose paper or alpaca")


def runner(strategy: str, symbol: str, feed: Feed, params: Mapping[str, Any],
           limits: Mapping[str, Any] | None = None, alerts: Mapping[str, Any] | None = None,
           journal_at: str | None = None, run: str = "paper", broker_kind: str = "paper") -> Runner:
    """A Runner from flat parameters: sizing (size, fraction, cash), the paper broker's costs
    (commission_bps, commission_per_share, slippage_bps, leverage) and the strategy's own."""
    sizing = {k: SETTINGS[k].check(k, v) for k, v in params.items() if k in SIZING}
    costs = {k: v for k, v in params.items() if k in COSTS}
    own = {k: v for k, v in params.items() if k not in SIZING and k not in COSTS}
    history = getattr(feed, "history", None)
    return Runner(strategy, symbol, broker(broker_kind, symbol, costs), journal(journal_at, run),
                  params=own, history=history, limits=build(Limits, limits or {}, "the risk limits"),
                  thresholds=build(Thresholds, alerts or {}, "the alert thresholds"),
                  notifier=notifier(), **sizing)


def replay(strategy: str, symbol: str, start: str, speed: float | None = None, end: str | None = None,
           **kw: Any) -> dict[str, Any]:
    """Replay the lake's bars of `symbol` from `start` through a runner (paper broker default)."""
    feed = ReplayFeed.from_lake(symbol, start, end, speed)
    return runner(strategy, symbol, feed, **kw).run(feed)


def poll(strategy: str, symbol: str, start: str, polls: int | None = 1, **kw: Any) -> dict[str, Any]:
    """Poll the configured vendor (ALGO_FEED_CONFIG) and trade the new bars: the container's job
    after each close. Indicator history comes from the lake."""
    config = os.environ.get("ALGO_FEED_CONFIG")
    if not config:
        raise ValueError("set ALGO_FEED_CONFIG to the vendor feed's JSON config (or a file path)")
    from algotrading.query import load_prices

    history = load_prices(symbol, end=start)
    feed = PollingFeed(VendorConfig.load(config), symbol, start, polls=polls,
                       history=history[history.index < start])
    return runner(strategy, symbol, feed, **kw).run(feed)
