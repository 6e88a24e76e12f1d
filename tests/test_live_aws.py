"""The live package's aws backend against the moto server (fixtures of tests/test_aws.py).

What the emulator proves: the DynamoDB journal's table layout, conditional puts and paged
queries work through boto3, so a runner on DynamoDB resumes exactly like one on SQLite; alerts
reach an SNS topic (read back through an SQS subscription). What only a real account proves:
IAM as AWS evaluates it (tests/test_iam.py runs the runner's role on moto with IAM enforced),
encryption at rest, throughput and SNS delivery to e-mail.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("moto.server")

from test_aws import aws_env, moto_url  # noqa: E402,F401  (the shared moto fixtures)

from algotrading import aws  # noqa: E402
from algotrading.live import (  # noqa: E402
    DynamoJournal,
    JournalError,
    PaperBroker,
    ReplayFeed,
    Runner,
    SnsNotifier,
    SqliteJournal,
    Thresholds,
)

from live_fakes import synthetic_prices  # noqa: E402

pytestmark = pytest.mark.aws
SMA = {"fast_period": 5, "slow_period": 15}


def _run(journal, bars, thresholds=None, notifier=None):
    feed = ReplayFeed(synthetic_prices(), "SYN", start="2023-03-01")
    runner = Runner("sma", "SYN", PaperBroker("SYN"), journal, params=SMA, history=feed.history,
                    size=100, thresholds=thresholds, notifier=notifier)
    return runner.run(list(feed.bars())[:bars])


def test_dynamodb_journal_appends_once_and_resumes_like_sqlite(tmp_path):
    DynamoJournal.create_table("algo-journal")
    journal = DynamoJournal("algo-journal", run="r1")
    assert journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.5})
    assert not journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 1.5})
    with pytest.raises(JournalError, match="differs"):
        journal.append("bar", "bar:2024-01-02", "2024-01-02", {"close": 2.0})
    stale = DynamoJournal("algo-journal", run="r1")
    journal.append("bar", "bar:2024-01-03", "2024-01-03", {"close": 1.6})
    with pytest.raises(JournalError, match="another writer"):  # the conditional put
        stale.append("bar", "bar:2024-01-03", "2024-01-03", {"close": 1.6})
    # a run interrupted after 30 bars and resumed equals one uninterrupted run, event for event
    _run(DynamoJournal("algo-journal", run="split"), 30)
    resumed = _run(DynamoJournal("algo-journal", run="split"), 80)
    whole = _run(SqliteJournal(tmp_path / "j.db", run="split"), 80)
    assert resumed == whole
    rows = [(e["kind"], e["key"], e["data"]) for e in DynamoJournal("algo-journal", "split").events()]
    assert rows == [(e["kind"], e["key"], e["data"])
                    for e in SqliteJournal(tmp_path / "j.db", "split").events()]
    assert len(rows) > 200  # bars, signals, orders, fills and positions of 80 bars


def test_alerts_reach_an_sns_topic():
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name="algo-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    DynamoJournal.create_table("algo-journal")
    _run(DynamoJournal("algo-journal", run="alerts"), 60, Thresholds(loss=1.0, drawdown=0.001),
         SnsNotifier(topic))
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    bodies = [json.loads(m["Body"]) for m in messages]
    assert sorted(b["Subject"].rsplit(": ", 1)[1] for b in bodies) == ["drawdown", "loss"]
    assert any("PnL" in b["Message"] for b in bodies)
