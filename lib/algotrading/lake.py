"""The data lake: `<lake>/hist_data_daily/<SYM>.csv` in a local folder or an S3 prefix.

Writes are atomic per file (temp file + rename locally, one PUT on S3) and an ingest is all or
nothing: if any symbol fails to write, every file it touched is put back byte for byte.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from algotrading.schema import NAMES, NUMERIC, TABLE, DataError, validate


class LocalStore:
    """Files under a folder; keys are '/'-separated paths relative to it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def describe(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def get(self, key: str) -> bytes | None:
        path = self.root / key if key else self.root
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def exists(self) -> bool:
        return self.root.exists()

    def find(self, pattern: re.Pattern[str]) -> tuple[LocalStore, list[str]]:
        """Keys matching `pattern` when the root is a folder, or the root itself when a file."""
        if self.root.is_file():
            return LocalStore(self.root.parent), [self.root.name]
        return self, [k for k in self.keys() if pattern.search(k)]


class S3Store:
    """Objects under s3://bucket/prefix; a PUT is atomic, so no temp objects are needed."""

    def __init__(self, url: str, client: object | None = None,
                 put_args: dict[str, object] | None = None):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        if client is None:
            from algotrading.aws import client as aws_client

            client = aws_client("s3")
        self.s3 = client
        if put_args is None:  # SSE-KMS headers when a key is configured (ALGO_KMS_KEY / the stack)
            from algotrading.config import settings

            put_args = settings().s3_put_args()
        self.put_args = put_args

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, key) if p)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **self.put_args)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=full):
            out += [o["Key"] for o in page.get("Contents", [])]
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in out)

    def exists(self) -> bool:
        return True

    def find(self, pattern: re.Pattern[str]) -> tuple[S3Store, list[str]]:
        if pattern.search(self.prefix) and self.get("") is not None:
            parent, _, name = self.prefix.rpartition("/")
            return S3Store(f"s3://{self.bucket}/{parent}", self.s3, self.put_args), [name]
        return self, [k for k in self.keys() if pattern.search(k)]


Store = LocalStore | S3Store


def open_store(location: str | Path, must_exist: bool = False) -> Store:
    """A store for a folder/file path or an s3:// URL."""
    location = str(location)
    if location.startswith("s3://"):
        return S3Store(location)
    store = LocalStore(Path(location).expanduser())
    if must_exist and not store.exists():
        raise DataError(location, "no such file or folder")
    return store


def lake_store(lake: str | None = None) -> Store:
    """The configured lake (ALGO_LAKE) unless `lake` is given."""
    if lake is None:
        from algotrading.config import settings

        lake = settings().lake_path()
    return open_store(lake)


def key(sym: str) -> str:
    return f"{TABLE}/{sym}.csv"


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """One symbol's rows in the lake's CSV form (header dt,sym,open,high,low,close,vol)."""
    buf = io.StringIO()
    frame.loc[:, list(NAMES)].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def write(frame: pd.DataFrame, lake: str | None = None, store: Store | None = None) -> list[str]:
    """Replace each symbol's file with its rows in `frame`; all symbols or none.

    Every payload is built (and the frame validated) before the first write; if a write fails,
    the files already replaced are restored to their previous bytes (or removed if new).
    """
    store = store or lake_store(lake)
    frame = validate(frame, "ingest")
    payloads = {key(sym): to_csv_bytes(rows) for sym, rows in frame.groupby("sym", sort=True)}
    previous = {k: store.get(k) for k in payloads}
    written: list[str] = []
    try:
        for k, data in payloads.items():
            store.put(k, data)
            written.append(k)
    except BaseException:
        for k in written:
            if previous[k] is None:
                store.delete(k)
            else:
                store.put(k, previous[k])
        raise
    return sorted(frame["sym"].unique().tolist())


def symbols(lake: str | None = None, store: Store | None = None) -> list[str]:
    """Symbols stored in the lake."""
    store = store or lake_store(lake)
    pat = re.compile(rf"^{TABLE}/([^/]+)\.csv$")
    return [m[1] for k in store.keys(TABLE) if (m := pat.match(k))]


def read(sym: str, lake: str | None = None, store: Store | None = None) -> pd.DataFrame:
    """One symbol's canonical rows from the lake."""
    store = store or lake_store(lake)
    data = store.get(key(sym))
    if data is None:
        raise DataError(store.describe(key(sym)), f"symbol {sym} is not in the lake; ingest it")
    return pd.read_csv(io.BytesIO(data), dtype={"dt": str, "sym": str} | dict.fromkeys(NUMERIC, float))


def read_all(syms: Iterable[str] | None = None, lake: str | None = None,
             store: Store | None = None) -> pd.DataFrame:
    """Several symbols' canonical rows (all of them by default)."""
    store = store or lake_store(lake)
    names = list(syms) if syms is not None else symbols(store=store)
    if not names:
        raise DataError(store.describe(TABLE), "the lake is empty; run `algotrading ingest sample`")
    return pd.concat([read(s, store=store) for s in names], ignore_index=True)
