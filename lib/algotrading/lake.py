"""The data lake: `<lake>/hist_data_daily/<SYM>.csv` in a local folder or an S3 prefix.

An ingest merges new rows into each symbol's history by (sym, dt) (or replaces it on request),
validates every merged series, and commits all symbols or none:

1. under the lake's writer lock, the new files are written to `.algotrading/staging/<txid>/`;
   a failure here (bad data, full disk, a crash) leaves the lake untouched;
2. a small journal `.algotrading/journal.json` listing the moves is written: the commit point;
3. each staged file is renamed over its lake file, then the journal is removed.

Only writers recover: an ingest first finishes an interrupted commit from its journal or removes
the staged files of one that never reached its journal. Readers never write, never need the
writer's permissions and never create anything: a local reader takes the lock shared when the
lock file exists (opened read-only), and reads a committed-but-unapplied ingest through its
journal; on S3 readers (the live runner, Athena) read the lake files as they are, with no lock and
no journal lookup. On S3 the writer lock is an object created with `If-None-Match: *`, taken over
when stale and released only with `If-Match` on its own ETag (a fenced lock); a move is
copy + delete (see docs/data.md for what S3 does not guarantee).
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from algotrading import limits
from algotrading.errors import LakeError
from algotrading.schema import NAMES, NUMERIC, TABLE, DataError, check_symbol, validate

META = ".algotrading"
JOURNAL = f"{META}/journal.json"
STAGING = f"{META}/staging"
LOCK = f"{META}/lock"
PROVENANCE = "provenance"
LOCK_TIMEOUT = 600.0  # seconds the S3 lock waits (locally: limits "lock_seconds")
LOCK_NOTICE = 1.0  # seconds of waiting before it says what it waits for
S3_LOCK_STALE = 900.0  # an S3 lock object older than this is taken to be from a dead writer


class LocalStore:
    """Files under a folder; keys are '/'-separated paths relative to it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        """The file for `key`, refusing any key that would resolve outside the root."""
        path = self.root / key if key else self.root
        if key:
            base = self.root.resolve()
            if ".." in key.split("/") or not path.resolve().is_relative_to(base):
                raise DataError(str(path), "refusing a path outside the lake folder")
        return path

    def describe(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        """The file itself, for readers that stream it (None if it is not a file)."""
        path = self._path(key)
        return path if path.is_file() else None

    def put(self, key: str, data: bytes, atomic: bool = True) -> None:
        """Write and fsync; atomically (temp file beside the target, then rename) unless the
        caller's journal makes the file count only once complete (staged files)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp") if atomic else path
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if atomic:
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def move(self, src: str, dst: str) -> None:
        """Atomic rename (same file system); `sync` makes a batch of them durable."""
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(src), target)

    def sync(self, keys: Iterable[str]) -> None:
        """fsync the folders holding `keys`, so renames into them survive a power cut."""
        for folder in {self._path(k).parent for k in keys}:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _inside(self, path: Path) -> bool:
        """A file whose real path is in the lake: a symlink leaving it is ignored (logged), so
        neither SQL (the view, `read_text`, `read_csv`) nor a reader follows it out."""
        if path.resolve().is_relative_to(self.root.resolve()):
            return True
        logging.getLogger(__name__).warning("%s: a link to %s, outside the lake; ignored", path,
                                            path.resolve())
        return False

    def keys(self, prefix: str = "") -> list[str]:
        """Files below `prefix`, skipping hidden files and folders (temporaries, metadata) and
        links that leave the lake."""
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not any(part.startswith(".") for part in
                                       p.relative_to(base).parts) and self._inside(p):
                out.append(rel)
        return sorted(out)

    def all_keys(self, prefix: str) -> list[str]:
        """Every file below `prefix`, hidden ones included (for cleaning up temporaries), but no
        link leaving the lake."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and self._inside(p))

    def remove_tree(self, prefix: str) -> None:
        import shutil

        path = self._path(prefix)
        if path.exists():
            shutil.rmtree(path)

    def exists(self) -> bool:
        return self.root.exists()

    def find(self, pattern: re.Pattern[str]) -> tuple[LocalStore, list[str]]:
        """Files directly in the folder whose name matches `pattern` (not recursive), or the
        root itself when it is a file."""
        if self.root.is_file():
            return LocalStore(self.root.parent), [self.root.name]
        return self, sorted(p.name for p in self.root.iterdir()
                            if p.is_file() and pattern.search(p.name))

    @contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """flock on `.algotrading/lock`: one writer, or any number of readers. The kernel
        releases it when the process dies, so a kill -9 never leaves the lake locked. A reader
        opens the file read-only and never creates it or its folder: with no lock file no ingest
        has ever run here (or the first is starting), and there is nothing to wait for."""
        path = self.root / LOCK
        try:
            if exclusive:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            else:
                fd = os.open(path, os.O_RDONLY)
        except OSError:
            if exclusive:
                raise
            yield  # no lock file, or one this user may not open: nothing to serialise with
            return
        try:
            timeout = limits.value("lock_seconds")
            env = limits.LIMITS["lock_seconds"].env
            deadline = time.monotonic() + timeout
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            said = False
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DataError(str(path), f"the lake is locked by another ingest for "
                                                   f"more than {timeout:g} s ({env} sets the "
                                                   "wait)") from None
                    if not said and time.monotonic() > deadline - timeout + LOCK_NOTICE:
                        said = True  # once, so a wait is never silent
                        logging.getLogger(__name__).warning(
                            "%s: waiting for %s (another process is ingesting into this lake) "
                            "to %s, up to %g s (%s sets the wait)", path,
                            "its lock" if exclusive else "the ingest to finish",
                            "write" if exclusive else "read", timeout, env)
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)


    def confirm_lock(self) -> None:
        """Nothing to check: the kernel keeps a flock for as long as this process lives."""


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
        if ".." in key.split("/"):
            raise DataError(self.describe(key), "refusing a key outside the lake prefix")
        return "/".join(p for p in (self.prefix, key) if p)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{'/'.join(p for p in (self.prefix, key) if p)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def has(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put(self, key: str, data: bytes, atomic: bool = True) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **self.put_args)

    def sync(self, keys: Iterable[str]) -> None:
        """Nothing to do: S3 acknowledges a write once it is durable."""

    def move(self, src: str, dst: str) -> None:
        """Copy then delete: the destination object is replaced atomically, the pair is not."""
        self.s3.copy_object(Bucket=self.bucket, Key=self._key(dst),
                            CopySource={"Bucket": self.bucket, "Key": self._key(src)},
                            **self.put_args)
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(src))

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=full):
            out += [o["Key"] for o in page.get("Contents", [])]
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in out)

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self._list(prefix) if not any(p.startswith(".") for p in k.split("/"))]

    def all_keys(self, prefix: str) -> list[str]:
        return self._list(prefix + "/")

    def remove_tree(self, prefix: str) -> None:
        for k in self.all_keys(prefix):
            self.delete(k)

    def exists(self) -> bool:
        return True

    def find(self, pattern: re.Pattern[str]) -> tuple[S3Store, list[str]]:
        """Objects directly under the prefix whose name matches, or the prefix itself."""
        name = self.prefix.rpartition("/")[2]
        if pattern.search(name) and self.get("") is not None:
            parent = self.prefix.rpartition("/")[0]
            return S3Store(f"s3://{self.bucket}/{parent}", self.s3, self.put_args), [name]
        return self, [k for k in self.keys() if "/" not in k and pattern.search(k)]

    @contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """A fenced writer lock: `.algotrading/lock` is created with If-None-Match: * (only one
        create succeeds). A lock older than S3_LOCK_STALE is from a dead writer: it is taken over
        by a PUT with If-Match on the ETag seen stale, so of two waiters only one wins; release
        deletes with If-Match on this writer's own ETag, so it never removes another writer's
        lock. Readers do not lock on S3; docs/data.md says why this is weaker than the flock."""
        if not exclusive:
            yield
            return
        from botocore.exceptions import ClientError

        lost = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "NotFound")
        body = json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                           "token": uuid.uuid4().hex}).encode()  # a unique body, a unique ETag
        put = {"Bucket": self.bucket, "Key": self._key(LOCK), "Body": body, **self.put_args}
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                self._lock_etag = self.s3.put_object(IfNoneMatch="*", **put)["ETag"]
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in lost:
                    raise
            try:
                head = self.s3.head_object(Bucket=self.bucket, Key=self._key(LOCK))
            except ClientError:
                continue  # released in between
            if time.time() - head["LastModified"].timestamp() > S3_LOCK_STALE:
                try:
                    self._lock_etag = self.s3.put_object(IfMatch=head["ETag"], **put)["ETag"]
                    logging.getLogger(__name__).warning(
                        "%s: took over a lock older than %.0f s", self.describe(LOCK), S3_LOCK_STALE)
                    break
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in lost:
                        raise
                    continue  # another waiter took it over, or it was released
            if time.monotonic() > deadline:
                raise DataError(self.describe(LOCK), "the lake is locked by another ingest for "
                                                     f"more than {LOCK_TIMEOUT:.0f} s")
            time.sleep(0.2)
        failed = True
        try:
            yield
            failed = False
        finally:
            etag, self._lock_etag = self._lock_etag, None
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=self._key(LOCK), IfMatch=etag)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in lost:
                    raise
                if not failed:  # never hide the error already on its way out
                    raise LakeError(f"{self.describe(LOCK)}: another writer took the lock over "
                                    f"while this ingest held it (held more than "
                                    f"{S3_LOCK_STALE:.0f} s); check the lake") from exc

    _lock_etag: str | None = None

    def confirm_lock(self) -> None:
        """Before the commit point: the lock object is still the one this writer created (a
        writer slower than S3_LOCK_STALE may have been taken over; it must not commit then)."""
        from botocore.exceptions import ClientError

        try:
            etag = self.s3.head_object(Bucket=self.bucket, Key=self._key(LOCK))["ETag"]
        except ClientError:
            etag = None
        if self._lock_etag is None or etag != self._lock_etag:
            raise LakeError(f"{self.describe(LOCK)}: this ingest no longer holds the lake lock "
                            f"(taken over after {S3_LOCK_STALE:.0f} s); nothing was committed")


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
    """`hist_data_daily/<SYM>.csv`; the symbol must already be in its normal form."""
    if check_symbol(sym, "lake") != sym:
        raise DataError("lake", f"symbol {sym!r} is not in normal form (upper case, no spaces)")
    return f"{TABLE}/{sym}.csv"


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """One symbol's rows in the lake's CSV form: header dt,sym,open,high,low,close,vol, no
    quoting, floats in their shortest exact form (the CSV reads back to the same doubles)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(frame.loc[:, list(NAMES)], preserve_index=False, nthreads=1)
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="none", quoting_header="none"))
    return buf.getvalue()


def parse_lake_csv(data: bytes, origin: str) -> pd.DataFrame:
    """A lake file's rows with the known column types (no type sniffing)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {"dt": pa.string(), "sym": pa.string()} | dict.fromkeys(NUMERIC, pa.float64())
    try:
        table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=list(NAMES)))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(origin, f"unreadable lake file ({str(exc).splitlines()[0]})") from exc
    frame = table.to_pandas()
    return frame.astype({"dt": object, "sym": object})


# ---------------------------------------------------------------- transactions and recovery


def journal_moves(store: Store, data: bytes) -> list[tuple[str, str]]:
    """The moves of an ingest journal, checked to be what `write` writes: staged files of one
    transaction moved onto the lake files of the same symbols (nothing else is ever moved)."""
    where = store.describe(JOURNAL)

    def bad(why: str) -> LakeError:
        return LakeError(f"{where}: not an ingest journal ({why}); nothing was moved. If no "
                         f"ingest wrote it, delete it and {store.describe(STAGING)}")

    try:
        journal = json.loads(data)
    except ValueError as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(journal, dict) or not isinstance(journal.get("txid"), str) \
            or not re.fullmatch(r"[0-9a-f]{12}", journal["txid"]) \
            or not isinstance(journal.get("moves"), list):
        raise bad("want {\"txid\": 12 hex digits, \"moves\": [[staged, lake file], ...]}")
    moves = []
    for move in journal["moves"]:
        if not (isinstance(move, list) and len(move) == 2 and all(isinstance(m, str) for m in move)):
            raise bad(f"move {move!r} is not a [staged, lake file] pair")
        src, dst = move
        match = re.fullmatch(rf"{TABLE}/([^/]+)\.csv", dst)
        try:
            ok = match is not None and key(match[1]) == dst
        except DataError:
            ok = False
        if not ok or src != f"{STAGING}/{journal['txid']}/{dst}":
            raise bad(f"move {src!r} -> {dst!r} is not a staged file onto its symbol's lake file")
        moves.append((src, dst))
    return moves


def recover(store: Store) -> str | None:
    """Finish an interrupted commit (journal present: redo its remaining moves) and remove
    staged files of an ingest that never committed. Call with the writer lock held.
    Returns what was done, or None if there was nothing to do."""
    done = None
    data = store.get(JOURNAL)
    if data is not None:
        moves = journal_moves(store, data)
        for src, dst in moves:
            if store.has(src):
                store.move(src, dst)
        store.sync(dst for _, dst in moves)
        store.delete(JOURNAL)
        done = f"completed an interrupted ingest ({len(moves)} file(s))"
    if store.all_keys(STAGING):
        done = done or "removed the temporary files of an interrupted ingest"
    store.remove_tree(STAGING)
    if done:
        logging.getLogger(__name__).warning("%s: %s", store.describe(""), done)
    return done


def _journal_view(store: Store) -> dict[str, str]:
    """Lake key -> staged key holding its committed bytes, for an ingest that reached its
    journal but whose writer died before every move was applied (empty when there is none)."""
    data = store.get(JOURNAL)
    if data is None:
        return {}
    return {dst: src for src, dst in journal_moves(store, data) if store.has(src)}


@contextmanager
def reading(store: Store) -> Iterator[Callable[[str], str]]:
    """Hold the lake steady while reading; yields `where(key)`, the key that holds `key`'s
    committed bytes. Readers recover nothing and create nothing (the next ingest recovers):
    locally they share the lock and read an interrupted commit through its journal; on S3 they
    read the lake files as they are (no lock, no journal: the runner's role may read only
    hist_data_daily/)."""
    if isinstance(store, S3Store):
        yield lambda k: k
        return
    with store.lock(exclusive=False):
        view = _journal_view(store)
        yield lambda k: view.get(k, k)


def _diff(old: pd.DataFrame, new: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks: old rows whose date is in new, those of them whose values differ, new rows whose
    date is not in old."""
    in_new = old["dt"].isin(new["dt"]).to_numpy()
    added = ~new["dt"].isin(old["dt"]).to_numpy()
    a = old[in_new].set_index("dt")[list(NUMERIC)]
    b = new[~added].set_index("dt")[list(NUMERIC)].reindex(a.index)
    same = np.isclose(a.to_numpy(), b.to_numpy(), rtol=1e-12, atol=0).all(axis=1)
    changed = np.zeros(len(old), dtype=bool)
    changed[np.flatnonzero(in_new)[~same]] = True
    return in_new, changed, added


def provenance_key(sym: str) -> str:
    """`provenance/<SYM>.json`: where the symbol's prices came from and what was corrected."""
    return f"{PROVENANCE}/{key(sym).split('/')[-1][:-4]}.json"


def provenance(sym: str, lake: str | None = None, store: Store | None = None) -> dict[str, Any]:
    """What the last ingest of `sym` recorded: its origin, the corrections applied (symbol,
    date, factor, note, source, rows changed) and the overnight jumps accepted; {} if none."""
    store = store or lake_store(lake)
    with reading(store):
        data = store.get(provenance_key(sym))
    return json.loads(data) if data else {}


def write(frame: pd.DataFrame, lake: str | None = None, store: Store | None = None,
          replace: bool = False, restate: bool = False,
          provenance: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Merge `frame` into the lake, all symbols or none; returns one row per symbol:
    action, rows added / changed / kept / removed, rows after.

    Default: upsert by (sym, dt) into each symbol's history. `replace`: each symbol's history
    becomes exactly its rows in `frame`. `restate` (ADX re-deliveries): a symbol whose
    overlapping days differ (a new split or dividend re-adjusts every earlier bar) is replaced
    from `frame` instead of merged, and its action says so. Every merged series is validated
    before anything is staged; nothing in the lake changes until every new file is staged.
    `provenance` (per symbol, e.g. `sources.Batch.provenance()`) is written beside the prices
    in the same transaction (`provenance_key`).
    """
    store = store or lake_store(lake)
    if frame.empty:
        raise DataError("ingest", "no data rows")
    groups = _by_symbol(frame)  # validated symbol by symbol, each before it is staged
    report = []
    txid = uuid.uuid4().hex[:12]
    with store.lock(exclusive=True):
        recover(store)
        moves: list[tuple[str, str]] = []
        try:
            for sym, new in groups:
                k = key(sym)
                old_bytes = store.get(k)
                row = {"symbol": sym, "action": "new", "added": len(new), "changed": 0,
                       "kept": 0, "removed": 0}
                merged, data = new, to_csv_bytes(new)
                if old_bytes == data:  # the same history again: nothing to do
                    row.update(action="replaced" if replace else "merged", added=0, kept=len(new))
                elif old_bytes is not None:
                    old = parse_lake_csv(old_bytes, store.describe(k))
                    in_new, changed, added = _diff(old, new)
                    row.update(added=int(added.sum()), changed=int(changed.sum()))
                    if replace or (restate and changed.any()):
                        row.update(action="replaced" if replace else
                                   "replaced (re-adjusted history)",
                                   kept=int((in_new & ~changed).sum()),
                                   removed=int((~in_new).sum()))
                    else:
                        row.update(action="merged", kept=int((~changed).sum()))
                        merged = pd.concat([old[~in_new], new], ignore_index=True)
                        merged = validate(merged, store.describe(k))
                        data = to_csv_bytes(merged)
                row["rows"] = len(merged)
                report.append(row)
                if provenance and sym in provenance:
                    note = json.dumps(provenance[sym], indent=1, sort_keys=True, default=str).encode()
                    if store.get(provenance_key(sym)) != note:
                        staged = f"{STAGING}/{txid}/{provenance_key(sym)}"
                        store.put(staged, note, atomic=False)
                        moves.append((staged, provenance_key(sym)))
                if data == old_bytes:
                    continue
                staged = f"{STAGING}/{txid}/{k}"
                store.put(staged, data, atomic=False)
                moves.append((staged, k))
            if moves:
                store.confirm_lock()
                store.put(JOURNAL, json.dumps({"txid": txid, "moves": moves}).encode())
        except BaseException as exc:
            note = _abort(store)
            if isinstance(exc, OSError):
                failed = LakeError(f"ingest failed, nothing in the lake changed: "
                                 f"{exc.strerror or exc}{note}")
                failed.errno = exc.errno
                raise failed from exc
            if note and isinstance(exc, Exception):
                exc.args = (f"{exc}{note}",)
            raise
        _apply(store, moves)
    return pd.DataFrame(report).set_index("symbol")


def _by_symbol(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(symbol, validated rows) per normalised symbol, in symbol order. Validating symbol by
    symbol keeps the temporaries of a large ingest small."""
    if "sym" not in frame.columns:
        validate(frame, "ingest")  # names the missing column
    codes, uniques = pd.factorize(frame["sym"], use_na_sentinel=False)
    norm = [check_symbol(u, "ingest") if isinstance(u, str) else check_symbol("", "ingest")
            for u in uniques]
    ids, names = pd.factorize(pd.Index(norm, dtype=object), sort=True)
    group = ids[codes]
    bounds = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True])
    if len(bounds) - 1 == len(names) and (np.diff(group) >= 0).all():  # sorted: slices
        parts = ((group[a], frame.iloc[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    else:
        order = np.argsort(group, kind="stable")
        cuts = np.searchsorted(group[order], np.arange(len(names) + 1))
        parts = ((g, frame.iloc[order[cuts[g]:cuts[g + 1]]]) for g in range(len(names)))
    for g, rows in parts:
        yield names[g], validate(rows, "ingest")


def _abort(store: Store) -> str:
    """Remove this ingest's journal (if written) and staged files; the lake files themselves
    were not touched. Returns a note for the error message if that cleanup failed."""
    try:
        store.delete(JOURNAL)
        store.remove_tree(STAGING)
    except OSError as cleanup:
        return (f"; could not remove its temporary files ({cleanup}), the next ingest "
                "removes them")
    return ""


def _apply(store: Store, moves: list[tuple[str, str]]) -> None:
    """Move the staged files into place and drop the journal; if that fails part way, the
    journal stays and the next ingest finishes the moves."""
    try:
        for src, dst in moves:
            store.move(src, dst)
        if moves:
            store.sync(dst for _, dst in moves)
            store.delete(JOURNAL)
        store.remove_tree(STAGING)
    except OSError as exc:
        failed = LakeError(f"ingest committed but not fully applied ({exc.strerror or exc}); "
                         "the next ingest completes it")
        failed.errno = exc.errno
        raise failed from exc


def symbols(lake: str | None = None, store: Store | None = None) -> list[str]:
    """Symbols stored in the lake."""
    store = store or lake_store(lake)
    with reading(store):
        return _symbols(store)


def _symbols(store: Store) -> list[str]:
    """Symbols with a lake file, plus (locally) new ones an interrupted commit has staged."""
    pat = re.compile(rf"^{TABLE}/([^/]+)\.csv$")
    staged = list(_journal_view(store)) if isinstance(store, LocalStore) else []
    return sorted({m[1] for k in [*store.keys(TABLE), *staged] if (m := pat.match(k))})


def missing(store: Store, sym: str) -> DataError:
    """The error for a symbol the lake does not hold, listing the ones it does."""
    have = _symbols(store)
    shown = " ".join(have[:30]) + (f" ... ({len(have)} in all)" if len(have) > 30 else "")
    return DataError(store.describe(TABLE), f"symbol {sym} is not in the lake; it has: "
                                            f"{shown or '(nothing; run `algotrading ingest`)'}")


def read(sym: str, lake: str | None = None, store: Store | None = None) -> pd.DataFrame:
    """One symbol's canonical rows from the lake."""
    store = store or lake_store(lake)
    sym = check_symbol(sym)
    with reading(store) as where:
        data = store.get(where(key(sym)))
        if data is None:
            raise missing(store, sym)
    return parse_lake_csv(data, store.describe(key(sym)))


def read_all(syms: Iterable[str] | None = None, lake: str | None = None,
             store: Store | None = None) -> pd.DataFrame:
    """Several symbols' canonical rows (all of them by default), from one consistent state."""
    store = store or lake_store(lake)
    with reading(store) as where:
        names = [check_symbol(s) for s in syms] if syms is not None else _symbols(store)
        if not names:
            raise DataError(store.describe(TABLE), "the lake is empty; run `algotrading ingest sample`")
        frames = []
        for s in names:
            data = store.get(where(key(s)))
            if data is None:
                raise missing(store, s)
            frames.append(parse_lake_csv(data, store.describe(key(s))))
    return pd.concat(frames, ignore_index=True)
