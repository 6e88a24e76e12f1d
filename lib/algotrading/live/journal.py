"""The book of records: an append-only journal of one run's events (SQLite or DynamoDB).

Every event has a unique, deterministic key (e.g. `order:<client order id>`). Appending a key
that is already there is a no-op if the event is the same and an error if it differs, so a
runner restarted after a crash can redo its work from the start: what was written is not
written twice, and any divergence from the record stops it. Nothing is ever updated or deleted
(SQLite refuses UPDATE and DELETE with triggers; the DynamoDB writer only puts new items).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from algotrading.errors import AlgotradingError

KINDS = ("start", "bar", "signal", "order", "rejection", "fill", "cancel", "position", "alert",
         "kill_request", "kill", "stop")


class JournalError(AlgotradingError, RuntimeError):
    """The journal disagrees with what the runner is about to record (or belongs to another run)."""


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, allow_nan=False)


class Journal(Protocol):
    run: str

    def append(self, kind: str, key: str, dt: str, data: dict[str, Any]) -> bool: ...
    def get(self, key: str) -> dict[str, Any] | None: ...
    def reload(self) -> None: ...
    def events(self, kind: str | None = None) -> list[dict[str, Any]]: ...


class _Cached:
    """Shared logic: the known events in memory, the duplicate/divergence rule."""

    run: str

    def _reset(self) -> None:
        self._known: dict[str, dict[str, Any]] = {}
        self._order: list[dict[str, Any]] = []
        self._seq = 0

    def _load(self, rows: list[dict[str, Any]]) -> None:
        """Add the rows read from the store that are newer than the ones already known."""
        for row in sorted(rows, key=lambda r: r["seq"]):
            if row["seq"] > self._seq:
                self._known[row["key"]] = row
                self._order.append(row)
                self._seq = row["seq"]

    def get(self, key: str) -> dict[str, Any] | None:
        return self._known.get(key)

    def append(self, kind: str, key: str, dt: str, data: dict[str, Any]) -> bool:
        """Record an event; False if it was already recorded (identically)."""
        if kind not in KINDS:
            raise ValueError(f"journal: unknown event kind {kind!r}")
        text = _dump(data)
        old = self._known.get(key)
        if old is not None:
            if old["kind"] != kind or _dump(old["data"]) != text:
                raise JournalError(f"journal {self.run}: event {key} differs from the record "
                                   f"({old['data']} recorded, {data} now)")
            return False
        self._seq += 1
        self._write(self._seq, kind, key, dt, text)
        row = {"seq": self._seq, "kind": kind, "key": key, "dt": dt, "data": json.loads(text)}
        self._known[key] = row
        self._order.append(row)
        return True

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The run's events in the order they were recorded (optionally one kind)."""
        return [r for r in self._order if kind is None or r["kind"] == kind]

    def _write(self, seq: int, kind: str, key: str, dt: str, text: str) -> None:
        raise NotImplementedError  # each store writes its own way


class SqliteJournal(_Cached):
    """The journal in a SQLite file; each append is its own committed transaction."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (
        run TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        dt TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run, key), UNIQUE (run, seq));
    CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS events_no_replace BEFORE INSERT ON events
        WHEN EXISTS (SELECT 1 FROM events WHERE run = NEW.run AND (key = NEW.key OR seq = NEW.seq))
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    """  # events_no_replace: INSERT OR REPLACE deletes without firing the DELETE trigger

    def __init__(self, path: str | Path, run: str = "paper"):
        self.path, self.run = Path(path), run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size == 0:  # SQLite would start afresh
            raise JournalError(f"journal {self.path} is an empty file (0 bytes): a journal is "
                               "never empty once opened; restore it, or give a new path for a "
                               "new run")
        existed = self.path.exists()
        self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit per statement
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(f"journal {self.path}: not a SQLite journal ({exc})") from None
        if existed and "events" not in tables:
            self._db.close()
            raise JournalError(f"journal {self.path}: an existing file without the journal's "
                               "events table; give a new path for a new run")
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a committed append survives the process being killed
        # (the case the runner's restart handles); only a power cut may lose the last ones.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(self.SCHEMA)
        self._reset()
        self.reload()

    def reload(self) -> None:
        """Re-read the run's events (another process may have appended, e.g. a kill request)."""
        rows = self._db.execute("SELECT seq, kind, key, dt, data FROM events WHERE run = ? "
                                "AND seq > ?", (self.run, self._seq)).fetchall()
        self._load([{"seq": s, "kind": k, "key": key, "dt": dt, "data": json.loads(d)}
                    for s, k, key, dt, d in rows])

    def _write(self, seq: int, kind: str, key: str, dt: str, text: str) -> None:
        try:
            self._db.execute("INSERT INTO events (run, seq, kind, key, dt, data) "
                             "VALUES (?,?,?,?,?,?)", (self.run, seq, kind, key, dt, text))
        except sqlite3.IntegrityError:
            raise JournalError(f"journal {self.path} run {self.run}: {key} (event {seq}) was "
                               "written by another writer: one runner per run") from None

    def close(self) -> None:
        self._db.close()


class DynamoJournal(_Cached):
    """The journal in a DynamoDB table (partition key `run`, sort key `key`), for the aws
    backend. A put is conditional on the key being new, so two writers cannot both record it."""

    def __init__(self, table: str, run: str = "paper", client: Any = None):
        from algotrading import aws

        self.table, self.run = table, run
        self._client = client or aws.client("dynamodb")
        self._reset()
        self.reload()

    def reload(self) -> None:
        """Re-read the run's events (another process may have appended, e.g. a kill request)."""
        table, run = self.table, self.run
        rows: list[dict[str, Any]] = []
        start = None
        while True:
            kw = {"ExclusiveStartKey": start} if start else {}
            page = self._client.query(TableName=table, KeyConditionExpression="#r = :r",
                                      ExpressionAttributeNames={"#r": "run"},
                                      ExpressionAttributeValues={":r": {"S": run}},
                                      ConsistentRead=True, **kw)
            rows += [{"seq": int(i["seq"]["N"]), "kind": i["kind"]["S"], "key": i["key"]["S"],
                      "dt": i["dt"]["S"], "data": json.loads(i["data"]["S"])}
                     for i in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        self._load(rows)

    @staticmethod
    def create_table(table: str, client: Any = None) -> None:
        """The table the CloudFormation template declares (for tests and local setups)."""
        from algotrading import aws

        (client or aws.client("dynamodb")).create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "run", "AttributeType": "S"},
                                  {"AttributeName": "key", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "run", "KeyType": "HASH"},
                       {"AttributeName": "key", "KeyType": "RANGE"}])

    def _write(self, seq: int, kind: str, key: str, dt: str, text: str) -> None:
        from botocore.exceptions import ClientError

        item = {"run": {"S": self.run}, "key": {"S": key}, "seq": {"N": str(seq)},
                "kind": {"S": kind}, "dt": {"S": dt}, "data": {"S": text}}
        try:
            self._client.put_item(TableName=self.table, Item=item,
                                  ConditionExpression="attribute_not_exists(#k)",
                                  ExpressionAttributeNames={"#k": "key"})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise JournalError(f"journal {self.run}: {key} was written by another writer") from None
            raise


def open_journal(location: str, run: str = "paper") -> SqliteJournal | DynamoJournal:
    """`dynamodb://TABLE` or a SQLite file path."""
    if location.startswith("dynamodb://"):
        return DynamoJournal(location.removeprefix("dynamodb://"), run)
    return SqliteJournal(location, run)
