"""Operations: PnL and drawdown alerts through a pluggable notifier, and metric log lines.

Metric lines are single JSON objects on the `algotrading.live.metrics` logger, e.g.
`{"metric": "drawdown", "value": 0.031, "run": "paper", "symbol": "SPY", "dt": "2024-05-02"}`,
so a CloudWatch Logs metric filter `{ $.metric = "drawdown" }` with value `$.value` turns them
into a metric (the aws backend ships container stdout to CloudWatch Logs).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from algotrading.params import check, param

METRICS = logging.getLogger("algotrading.live.metrics")
ALERTS = logging.getLogger("algotrading.live.alerts")


class Notifier(Protocol):
    def notify(self, subject: str, message: str) -> None: ...


class LogNotifier:
    """Alerts as WARNING log lines (the local backend); keeps what it sent in `sent`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def notify(self, subject: str, message: str) -> None:
        self.sent.append((subject, message))
        ALERTS.warning("%s: %s", subject, message)


class SnsNotifier:
    """Alerts published to an SNS topic (the aws backend; the topic fans out to e-mail etc.)."""

    def __init__(self, topic_arn: str, client: Any = None):
        from algotrading import aws

        self.topic_arn = topic_arn
        self._client = client or aws.client("sns")

    def notify(self, subject: str, message: str) -> None:
        self._client.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=message)


@dataclass(frozen=True)
class Thresholds:
    """Alert when PnL falls to -`loss` (money) or below, or drawdown from the equity peak reaches
    `drawdown` (fraction). Each alert fires once per run."""

    loss: float | None = param(None, float, gt=0, optional=True, help="money")
    drawdown: float | None = param(None, float, gt=0, optional=True, help="fraction")

    def __post_init__(self) -> None:
        check(self, "the alert thresholds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def crossed(self, pnl: float, drawdown: float) -> list[tuple[str, str]]:
        """(name, message) of each threshold crossed now."""
        out = []
        if self.loss is not None and pnl <= -self.loss:
            out.append(("loss", f"PnL {pnl:,.2f} is at or below -{self.loss:,.2f}"))
        if self.drawdown is not None and drawdown >= self.drawdown:
            out.append(("drawdown", f"drawdown {drawdown:.2%} reached the {self.drawdown:.2%} threshold"))
        return out


def log_metrics(run: str, symbol: str, dt: str, values: dict[str, float]) -> None:
    """One JSON line per metric (see the module docstring for the CloudWatch filter)."""
    for name, value in values.items():
        METRICS.info(json.dumps({"metric": name, "value": value, "run": run, "symbol": symbol,
                                 "dt": dt}, sort_keys=True))
