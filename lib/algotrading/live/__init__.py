"""Paper and live trading: the backtests' strategies run forward, bar by bar, against a feed.

- `feeds`: market data adapters (replay from the lake, polling a vendor's daily-bars API); every
  incoming bar passes the ingest validator (`algotrading.schema.validate`).
- `brokers`: broker adapters (a paper broker on `algotrading.backtest.Broker`, Alpaca's REST API).
- `risk`: pre-trade limits; the kill switch lives in the runner.
- `journal`: the append-only book of records (SQLite locally, DynamoDB on AWS).
- `alerts`: PnL/drawdown thresholds through a pluggable notifier, and metric log lines.
- `runner`: the event loop tying them together; restarts resume from the journal.
"""

from algotrading.live.alerts import LogNotifier, SnsNotifier, Thresholds
from algotrading.live.brokers import AlpacaBroker, Order, OrderStatus, PaperBroker
from algotrading.live.feeds import Bar, PollingFeed, ReplayFeed, VendorConfig
from algotrading.live.journal import DynamoJournal, JournalError, SqliteJournal
from algotrading.live.risk import Limits
from algotrading.live.runner import Runner

__all__ = ["AlpacaBroker", "Bar", "DynamoJournal", "JournalError", "Limits", "LogNotifier", "Order",
           "OrderStatus", "PaperBroker", "PollingFeed", "ReplayFeed", "Runner", "SnsNotifier",
           "SqliteJournal", "Thresholds", "VendorConfig"]
