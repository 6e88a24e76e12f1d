"""Readers that turn each data source into validated canonical frames (dt,sym,open,high,low,close,vol).

Sources: `sample` (S&P 500 and NASDAQ Composite shipped inside the `arch` wheel, offline),
`adx` (AWS Data Exchange / Alpha Vantage daily-adjusted CSV exports), `public` (the workshop's
16-stock NASDAQ HDF5 file) and `csv` (any CSV with the canonical columns or a mapping).

Data that cannot lie: after a source is read, its corrections are applied (the ones a source
ships, `PUBLIC_CORRECTIONS`, and the user's corrections file), then every overnight move (open
against the previous close) larger than `JUMP` is refused unless a correction explains it or the
caller accepts it: an unadjusted split or spin-off looks exactly like a crash to a backtest.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from algotrading import limits, web
from algotrading.schema import NAMES, NUMERIC, DataError, check_symbol, validate

SOURCES = ("sample", "adx", "public", "csv")
SAMPLE_SYMBOLS = {"GSPC": "sp500", "IXIC": "nasdaq"}
PUBLIC_SHA256 = "bd4ff116164d9b70c5d66e7c5779649ad17ee7f262043ba2d72c79fe9bfc69d9"
PUBLIC_URL = (
    "https://github.com/vermouth1992/drl-portfolio-management/raw/master/"
    "src/utils/datasets/stocks_history_target.h5"
)
PUBLIC_START = pd.Timestamp("2012-08-13")
JUMP = 0.3  # overnight moves |open / previous close - 1| above this need a correction or acceptance
CORRECTION_COLUMNS = ("sym", "date", "factor", "note", "source")
ADX_COLUMNS = ("timestamp", "open", "high", "low", "close", "adjusted_close", "volume",
               "dividend_amount", "split_coefficient")
ADX_FILE = re.compile(r"^daily_adjusted_(?P<sym>[^/]+)\.csv$")
# Adjustment factor adjusted_close/close: reverse splits push it above 1, splits and dividends
# below; real histories stay well inside these bounds.
ADX_FACTOR = (1e-6, 1e6)


@dataclass(frozen=True)
class Correction:
    """A known event the source did not adjust for. With a `factor`, every price (open, high,
    low, close) of `sym` before `date` is multiplied by it (back-adjustment, as data vendors do
    for splits and spin-offs; volume is left as traded); without one, the overnight move into
    `date` is accepted as real. `note` says what happened, `source` where that is documented and
    how the factor was derived."""

    sym: str
    date: str
    factor: float | None
    note: str
    source: str = ""


# PayPal was spun off from eBay (one PYPL share per EBAY share; distribution 2015-07-17, PYPL
# trading regular-way and EBAY ex-distribution from 2015-07-20; eBay Inc.'s and PayPal
# Holdings' Form 10 / press releases of July 2015). The public file holds EBAY unadjusted (close
# 66.29 on 2015-07-17, open 26.89 on 2015-07-20). The factor is derived from the file itself:
# 26.89 / 66.29, i.e. the whole overnight gap is taken to be the distribution (a vendor's factor
# from PYPL's first price would differ by that night's own move, well under 1 %).
PUBLIC_CORRECTIONS = (
    Correction("EBAY", "2015-07-20", 26.89 / 66.29,
               "PayPal spin-off: EBAY ex-distribution, 1 PYPL per EBAY share",
               "eBay/PayPal separation, July 2015; factor = open 2015-07-20 / close 2015-07-17 "
               "of this file (26.89 / 66.29)"),
)


@dataclass
class Batch:
    """What a source produced: the validated rows and, per symbol, rows dropped on purpose;
    `corrections` applied (one dict each, with the rows it changed) and overnight `jumps`
    above the threshold that were accepted as real."""

    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    origin: str = ""
    repaired: dict[str, int] = field(default_factory=dict)
    restate: bool = False  # a re-delivery may re-adjust history (ADX): see lake.write
    corrections: list[dict] = field(default_factory=list)
    jumps: list[dict] = field(default_factory=list)

    def provenance(self) -> dict[str, dict]:
        """Per symbol, what the lake records beside its prices: the source, the corrections
        applied and the jumps accepted."""
        out = {}
        for sym in sorted(set(self.frame["sym"])):
            out[sym] = {"origin": self.origin,
                        "corrections": [c for c in self.corrections if c["sym"] == sym],
                        "accepted_jumps": [j for j in self.jumps if j["sym"] == sym]}
        return out

    def summary(self) -> pd.DataFrame:
        """One row per symbol: rows kept, dropped, repaired, first and last date."""
        g = self.frame.groupby("sym")["dt"]
        out = pd.DataFrame({"rows": g.size(), "first": g.min(), "last": g.max()})
        out.insert(1, "dropped", [self.dropped.get(s, 0) for s in out.index])
        out.insert(2, "repaired", [self.repaired.get(s, 0) for s in out.index])
        return out


def read(source: str, path: str | None = None, symbols: Iterable[str] | None = None,
         columns: Mapping[str, str] | None = None, corrections: str | Iterable[Correction] | None = None,
         jump: float = JUMP, accept_jumps: bool = False) -> Batch:
    """Read `source` (one of SOURCES) from `path` and return validated canonical rows, with the
    source's shipped corrections and `corrections` (a CSV path, see `read_corrections`, or
    Correction objects) applied. An overnight move above `jump` (a fraction) that no correction
    explains is refused (DataError naming symbol, date and prices) unless `accept_jumps`."""
    wanted = [check_symbol(s, "--symbols") for s in symbols] if symbols else None
    if source == "sample":
        batch = read_sample(wanted)
    elif source == "adx":
        batch = read_adx(_need(path, "adx"), wanted)
    elif source == "public":
        batch = read_public(path, wanted)
    elif source == "csv":
        batch = read_csv(_need(path, "csv"), columns, wanted)
    else:
        raise DataError(source, f"unknown source; choose one of {', '.join(SOURCES)}")
    if wanted:
        missing = sorted(set(wanted) - set(batch.frame["sym"]))
        if missing:
            have = sorted(set(batch.frame["sym"]))
            raise DataError(batch.origin, f"symbol(s) not in this source: {', '.join(missing)}; "
                                          f"it has {' '.join(have)}")
    fixes = list(PUBLIC_CORRECTIONS if source == "public" else ())
    if isinstance(corrections, str | Path):
        fixes += read_corrections(str(corrections))
    elif corrections is not None:
        fixes += list(corrections)
    return checked_jumps(corrected(batch, fixes), jump, accept_jumps, fixes)


def read_corrections(path: str) -> list[Correction]:
    """A corrections CSV: columns sym,date,factor,note (and optionally source); factor empty to
    accept a move as real. One line per event, e.g.
    `EBAY,2015-07-20,0.40564,PayPal spin-off,derived from the file's open/previous close`."""
    import csv

    try:
        lines = list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read the corrections file ({exc})") from exc
    head = [h.strip() for h in lines[0]] if lines else []
    missing = [c for c in CORRECTION_COLUMNS[:4] if c not in head]
    if missing:
        raise DataError(path, f"corrections need the columns {', '.join(CORRECTION_COLUMNS[:4])} "
                              f"(and optionally source); missing {', '.join(missing)}")
    out = []
    for i, fields in enumerate(lines[1:]):
        where = f"line {i + 2}"
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > len(head):
            raise DataError(path, f"{len(fields)} fields where the header has {len(head)} (quote a "
                                  "note that holds a comma)", where=where)
        row = dict(zip(head, [*fields, *[""] * (len(head) - len(fields))], strict=True))
        sym = check_symbol(row["sym"].strip(), f"{path}: {where}")
        date = row["date"].strip()
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            raise DataError(path, f"date {date!r} is not YYYY-MM-DD", sym, where)
        text = row["factor"].strip()
        try:
            factor = float(text) if text else None
        except ValueError:
            raise DataError(path, f"factor {text!r} is not a number", sym, where) from None
        if factor is not None and not (math.isfinite(factor) and factor > 0):
            raise DataError(path, f"factor {factor} must be a finite number > 0", sym, where)
        if not row["note"].strip():
            raise DataError(path, "every correction needs a note saying what happened", sym, where)
        out.append(Correction(sym, date, factor, row["note"].strip(),
                              row.get("source", "").strip()))
    return out


def corrected(batch: Batch, fixes: Iterable[Correction]) -> Batch:
    """The batch with each correction's factor applied to its symbol's prices before its date;
    each applied one is listed in `batch.corrections` with the number of rows it changed."""
    frame = batch.frame
    applied = []
    for fix in fixes:
        mine = frame["sym"] == fix.sym
        if not mine.any():
            continue
        before = mine & (frame["dt"] < fix.date)
        if fix.factor is not None:
            frame = frame.copy() if frame is batch.frame else frame
            for col in ("open", "high", "low", "close"):
                frame.loc[before, col] = frame.loc[before, col] * fix.factor
        applied.append({"sym": fix.sym, "date": fix.date, "factor": fix.factor, "note": fix.note,
                        "source": fix.source, "rows": int(before.sum()) if fix.factor else 0})
    batch.frame = frame
    batch.corrections = batch.corrections + applied
    return batch


def overnight_jumps(frame: pd.DataFrame, threshold: float = JUMP) -> pd.DataFrame:
    """Bars whose open moved more than `threshold` (a fraction) from the previous close of the
    same symbol: sym, dt, prev_close, open, move."""
    rows = frame.sort_values(["sym", "dt"])
    prev = rows.groupby("sym")["close"].shift()
    move = rows["open"] / prev - 1
    hit = move.abs() > threshold
    return pd.DataFrame({"sym": rows["sym"][hit], "dt": rows["dt"][hit],
                         "prev_close": prev[hit], "open": rows["open"][hit],
                         "move": move[hit]}).reset_index(drop=True)


def checked_jumps(batch: Batch, threshold: float, accept: bool,
                  fixes: Iterable[Correction] = ()) -> Batch:
    """Refuse overnight moves above `threshold` that no correction explains (a note-only
    correction on that symbol and date accepts it); with `accept`, keep them and list them in
    `batch.jumps`."""
    if not threshold > 0:
        raise DataError(batch.origin, f"jump threshold must be > 0 (a fraction), got {threshold}")
    known = {(f.sym, f.date) for f in fixes}
    jumps = overnight_jumps(batch.frame, threshold)
    jumps = jumps[[(s, d) not in known for s, d in zip(jumps["sym"], jumps["dt"], strict=True)]]
    if len(jumps) and not accept:
        shown = "; ".join(f"{r.sym} {r.dt}: open {r.open:.2f} is {r.move:+.1%} from the previous "
                          f"close {r.prev_close:.2f}" for r in jumps.head(5).itertuples())
        more = f" (and {len(jumps) - 5} more)" if len(jumps) > 5 else ""
        raise DataError(batch.origin, f"{len(jumps)} overnight move(s) above {threshold:.0%} that no "
                                      f"correction explains: {shown}{more}. An unadjusted split, "
                                      "spin-off or dividend? add sym,date,factor,note to a "
                                      "corrections file (--corrections); a real move? accept it "
                                      "(--accept-jumps)")
    batch.jumps = batch.jumps + [
        {"sym": r.sym, "date": r.dt, "prev_close": float(r.prev_close), "open": float(r.open),
         "move": float(r.move)} for r in jumps.itertuples()]
    return batch


def _need(path: str | None, source: str) -> str:
    if not path:
        raise DataError(source, "this source needs a PATH (folder, file or s3:// prefix)")
    return path


def _adjust(frame: pd.DataFrame, adj_close: pd.Series) -> pd.DataFrame:
    """Scale open/high/low/close by adjusted/close so splits and dividends don't look like trades."""
    factor = pd.to_numeric(adj_close, errors="coerce") / pd.to_numeric(frame["close"], errors="coerce")
    frame = frame.copy()
    for col in ("open", "high", "low", "close"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce") * factor
    return frame


def read_sample(symbols: list[str] | None = None) -> Batch:
    """The real daily S&P 500 (GSPC) and NASDAQ Composite (IXIC), 1999-01-04..2018-12-31,
    shipped in the `arch` wheel: an offline default with no licence strings attached."""
    import importlib

    frames = []
    for sym, module in SAMPLE_SYMBOLS.items():
        if symbols and sym not in symbols:
            continue
        raw = importlib.import_module(f"arch.data.{module}").load()
        frame = pd.DataFrame({
            "dt": raw.index.strftime("%Y-%m-%d"), "sym": sym,
            "open": raw["Open"].to_numpy(), "high": raw["High"].to_numpy(),
            "low": raw["Low"].to_numpy(), "close": raw["Close"].to_numpy(),
            "vol": raw["Volume"].to_numpy(dtype=float),
        })
        frames.append(_adjust(frame, pd.Series(raw["Adj Close"].to_numpy())))
    origin = "sample (arch.data)"
    if not frames:
        raise DataError(origin, f"no sample symbols among {symbols}; have {list(SAMPLE_SYMBOLS)}")
    return Batch(validate(pd.concat(frames, ignore_index=True), origin), origin=origin)


def _text(data: bytes, origin: str) -> bytes:
    """UTF-8 bytes of a text file: UTF-8 (BOM optional) as is, UTF-16 with a BOM decoded."""
    if not data.strip():
        raise DataError(origin, "no data rows (empty file)")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16").encode()
        except UnicodeDecodeError as exc:
            raise DataError(origin, f"not valid UTF-16 text ({exc.reason})") from exc
    if b"\x00" in data[:4096]:
        raise DataError(origin, "not a CSV text file (binary content, or UTF-16 without a BOM: "
                                "save it as UTF-8)")
    return data.removeprefix(b"\xef\xbb\xbf")


def _open(store: object, name: str) -> bytes | Path:
    """A local file's path (pyarrow reads it without a copy in memory), else its bytes; a file
    over the ingest cap (limits: ALGO_INGEST_MAX_BYTES) is refused before it is read (an S3
    object once fetched)."""
    path = getattr(store, "local_path", lambda _: None)(name)
    if path is not None:
        limits.check("ingest_bytes", path.stat().st_size, str(path))
        return path
    data = store.get(name)
    limits.check("ingest_bytes", len(data or b""), store.describe(name))
    return data


def _csv(data: bytes | Path, origin: str, columns: Mapping[str, str] | None = None,
         numeric: Iterable[str] = NUMERIC) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV's rows (column names mapped by `columns`) and each row's line number.

    Numeric columns are parsed as float64 by pyarrow (fast, little memory); if one does not
    parse, the file is read again as text so the validator can name the line and the value.
    """
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    if isinstance(data, Path):
        with open(data, "rb") as f:
            head = f.read(1 << 16)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or not head.strip() or b"\x00" in head[:4096]:
            data = data.read_bytes()
    if isinstance(data, bytes):
        data = head = _text(data, origin)
    else:
        head = head.removeprefix(b"\xef\xbb\xbf")
    header = next(csv.reader([head.split(b"\n", 1)[0].decode("utf-8", "replace").strip("\r")]))
    names = [dict(columns or {}).get(h.strip(), h.strip()) for h in header]
    for name in names:
        if names.count(name) > 1:
            raise DataError(origin, f"column {name!r} appears more than once in the header")
    numeric = [c for c in numeric if c in names]
    read = pacsv.ReadOptions(column_names=names, skip_rows=1)
    source = str(data) if isinstance(data, Path) else None
    for types in ({c: pa.float64() for c in numeric}, {}):
        types |= {c: pa.string() for c in names if c not in types}
        try:
            table = pacsv.read_csv(source or io.BytesIO(data), read_options=read,
                                   convert_options=pacsv.ConvertOptions(
                                       column_types=types, strings_can_be_null=True,
                                       quoted_strings_can_be_null=False))
            break
        except pa.ArrowInvalid as exc:
            if any(t == pa.float64() for t in types.values()) and \
                    "CSV conversion error" in str(exc):
                continue  # a value that is not a number: the text read below names it
            raise DataError(origin, f"not a readable CSV ({str(exc).splitlines()[0]})") from exc
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    if frame.empty:
        raise DataError(origin, "no data rows (empty file)")
    return frame, np.arange(len(frame)) + 2  # line numbers (the header is line 1)


def read_adx(path: str, symbols: list[str] | None = None) -> Batch:
    """Alpha Vantage daily-adjusted exports (`daily_adjusted_<SYM>.csv`, newest first) directly
    in a folder or S3 prefix (not in subfolders), or one such file. Prices are split/dividend
    adjusted by adjusted_close/close."""
    from algotrading.lake import open_store

    store, names = open_store(path, must_exist=True).find(ADX_FILE)
    if len(names) == 1 and not ADX_FILE.search(names[0]):
        raise DataError(path, "an ADX export's file name must be daily_adjusted_<SYM>.csv")
    frames = []
    for name in names:
        origin = store.describe(name)
        sym = check_symbol(ADX_FILE.search(name)["sym"], f"{origin}: file name")
        if symbols and sym not in symbols:
            continue
        raw, rows = _csv(_open(store, name), origin,
                         numeric=("open", "high", "low", "close", "adjusted_close", "volume",
                                  "dividend_amount", "split_coefficient"))
        missing = [c for c in ADX_COLUMNS if c not in raw.columns]
        if missing:
            raise DataError(origin, f"missing column(s) {', '.join(missing)}; "
                                    f"found {list(raw.columns)}")
        frame = pd.DataFrame({"dt": raw["timestamp"], "sym": sym, "open": raw["open"],
                              "high": raw["high"], "low": raw["low"], "close": raw["close"],
                              "vol": raw["volume"]})
        validate(frame, origin, rows)  # raw values first, so a bad number is reported as written
        _check_adx_columns(raw, rows, origin, sym)
        frames.append(validate(_adjust(frame, raw["adjusted_close"]), origin, rows))
    if not frames:
        wanted = f" for {', '.join(symbols)}" if symbols else ""
        raise DataError(path, f"no daily_adjusted_<SYM>.csv files found{wanted}")
    return Batch(pd.concat(frames, ignore_index=True), origin=path, restate=True)


def _check_adx_columns(raw: pd.DataFrame, rows: np.ndarray, origin: str, sym: str) -> None:
    """The adjustment columns the prices depend on: finite, split_coefficient > 0,
    dividend_amount >= 0, adjusted_close/close inside ADX_FACTOR."""
    def num(col: str) -> np.ndarray:
        return pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)

    split, div = num("split_coefficient"), num("dividend_amount")
    factor = num("adjusted_close") / num("close")
    lo, hi = ADX_FACTOR
    for mask, rule in (
        (~np.isfinite(split) | (split <= 0), "column split_coefficient: want a number > 0"),
        (~np.isfinite(div) | (div < 0) | np.signbit(div), "column dividend_amount: want a number >= 0"),
        (~np.isfinite(factor) | (factor < lo) | (factor > hi),
         f"adjusted_close/close outside [{lo:g}, {hi:g}]"),
    ):
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise DataError(origin, rule, sym, f"line {int(rows[i])} ({raw['timestamp'].iloc[i]})")


def fetch(url_or_path: str, sha256: str | None = None, cache: Path | None = None) -> Path:
    """A local file for `url_or_path`: paths are used as they are; URLs are downloaded once into
    the cache (only when the user points at a URL) and checked against `sha256`."""
    if "://" not in url_or_path or url_or_path.startswith("file://"):
        path = Path(url_or_path.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise DataError(str(path), "file not found")
        return path
    cache = cache or Path(os.environ.get("ALGO_CACHE", Path.home() / ".cache" / "algotrading"))
    target = cache / Path(url_or_path.split("?")[0]).name
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        try:  # streamed to disk under a size cap and a deadline (web.request)
            with open(tmp, "wb") as out:
                web.request(url_or_path, timeout=60, into=out,
                            caps=("download_bytes", "download_seconds"))
        except OSError as exc:  # web.HttpError: refused URL, HTTP status, timeout, DNS, cap
            tmp.unlink(missing_ok=True)
            raise DataError(url_or_path, f"could not download it ({exc}); give a local path "
                                         "instead") from None
        tmp.replace(target)
    if sha256:
        digest = hashlib.sha256()
        with target.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest = digest.hexdigest()
        if digest != sha256:
            target.unlink()
            raise DataError(url_or_path, f"sha256 mismatch: got {digest}, want {sha256}")
    return target


def read_public(path: str | None = None, symbols: list[str] | None = None) -> Batch:
    """The workshop's 16-stock NASDAQ set (HDF5: `history` 16 x days x OHLCV, `abbreviation`).

    Day i is 2012-08-13 + i calendar days. Weekend/holiday rows are forward-filled copies of the
    previous row (volume included); they are not trading days and are dropped and counted.
    Three rows of the file (AAPL 2015-04-30, INTC 2014-01-21 and 2014-08-05) have an open above
    the high; their high/low are widened to contain open and close, and counted as repaired.
    """
    import h5py

    from algotrading.config import settings

    where = path or settings().public_data or PUBLIC_URL
    try:
        file = fetch(where, PUBLIC_SHA256 if "://" in where else None)
    except DataError as exc:
        if where != PUBLIC_URL:
            raise
        raise DataError(str(exc), "offline? download stocks_history_target.h5 elsewhere and "
                                  "set ALGO_PUBLIC_DATA to its path (or pass the path)") from exc
    origin = str(where)
    try:
        with h5py.File(file, "r") as h5:
            history = np.asarray(h5["history"], dtype=float)
            names = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a)
                     for a in h5["abbreviation"]]
    except OSError as exc:
        raise DataError(origin, f"not an HDF5 file ({exc})") from exc
    except KeyError as exc:
        raise DataError(origin, f"missing dataset {exc} (want 'history' and 'abbreviation')") from exc
    if history.ndim != 3 or history.shape[2] != 5 or history.shape[0] != len(names):
        raise DataError(origin, f"history has shape {history.shape}; want (symbols, days, 5)")
    dates = (PUBLIC_START + pd.to_timedelta(np.arange(history.shape[1]), unit="D")).strftime(
        "%Y-%m-%d")
    if not names:
        raise DataError(origin, "the file holds no symbols ('abbreviation' is empty)")
    names = [check_symbol(n, f"{origin}: abbreviation[{k}]") for k, n in enumerate(names)]
    frames, dropped, repaired = [], {}, {}
    for k, sym in enumerate(names):
        if symbols and sym not in symbols:
            continue
        bars = history[k].copy()
        o, c = bars[:, 0], bars[:, 3]
        bad = (bars[:, 1] < np.maximum(o, c)) | (bars[:, 2] > np.minimum(o, c))
        repaired[sym] = int(bad.sum())
        bars[:, 1] = np.maximum(bars[:, 1], np.maximum(o, c))
        bars[:, 2] = np.minimum(bars[:, 2], np.minimum(o, c))
        repeat = np.zeros(len(bars), dtype=bool)
        repeat[1:] = (bars[1:] == bars[:-1]).all(axis=1)
        dropped[sym] = int(repeat.sum())
        keep = ~repeat
        frame = pd.DataFrame(bars[keep], columns=["open", "high", "low", "close", "vol"])
        frame.insert(0, "sym", sym)
        frame.insert(0, "dt", dates[keep])
        frames.append(validate(frame, origin))
    if not frames:
        raise DataError(origin, f"symbol(s) not in this source: {', '.join(symbols or [])}; "
                                f"it has {' '.join(names)}")
    return Batch(pd.concat(frames, ignore_index=True), dropped, origin, repaired)


def read_csv(path: str, columns: Mapping[str, str] | None = None,
             symbols: list[str] | None = None) -> Batch:
    """CSV file(s) directly in a folder (or one file) with the canonical columns; `columns` maps
    source names to canonical ones (e.g. {"Date": "dt", "Close": "close", "Volume": "vol"}).

    A file without a `sym` column takes its symbol from its file name (`AAPL.csv`), as
    Yahoo-style exports need; a column mapped to `adj_close` split/dividend-adjusts the prices
    by adj_close/close, as the adx source does."""
    from algotrading.lake import open_store

    store, names = open_store(path, must_exist=True).find(re.compile(r"\.csv$", re.I))
    frames = []
    for name in names:
        origin = store.describe(name)
        frame = _csv_frame(_open(store, name), origin, columns, name)
        frames.append(frame[frame["sym"].isin(symbols)] if symbols else frame)
    if not frames:
        raise DataError(path, "no .csv files found")
    if len(frames) == 1:
        return Batch(frames[0], origin=path)
    both = pd.concat([f.assign(_file=i) for i, f in enumerate(frames)], ignore_index=True)
    dup = both.duplicated(["sym", "dt"], keep=False).to_numpy()
    if dup.any():
        first = both[dup].sort_values(["sym", "dt", "_file"]).iloc[:2]
        sym, day = first["sym"].iloc[0], first["dt"].iloc[0]
        where = [f"{store.describe(names[i])} line "
                 f"{_line_of(store.get(names[i]), columns, names[i], sym, day)}"
                 for i in first["_file"]]
        raise DataError(path, f"date {day} appears twice: {' and '.join(where)} "
                              "(one row per symbol and date)", sym)
    both = both.drop(columns="_file").sort_values(["sym", "dt"], kind="stable")
    return Batch(both.reset_index(drop=True), origin=path)


def _csv_frame(data: bytes | Path, origin: str, columns: Mapping[str, str] | None,
               name: str) -> pd.DataFrame:
    """One CSV file -> validated canonical rows."""
    raw, rows = _csv(data, origin, columns, numeric=(*NUMERIC, "adj_close"))
    if "sym" not in raw.columns:
        raw["sym"] = check_symbol(Path(name).stem, f"{origin}: file name (no sym column)")
    missing = [c for c in NAMES if c not in raw.columns]
    if missing:
        raise DataError(origin, f"missing column(s) {', '.join(missing)}; found "
                                f"{list(raw.columns)} (map yours with --columns Name=canonical)")
    if "adj_close" not in raw.columns:
        return validate(raw, origin, rows)
    validate(raw, origin, rows)
    return validate(_adjust(raw, raw["adj_close"]), origin, rows)


def _line_of(data: bytes, columns: Mapping[str, str] | None, name: str, sym: str,
             day: str) -> int:
    """The line of (sym, day) in a CSV file, for an error message."""
    raw, rows = _csv(data, name, columns)
    syms = raw["sym"].astype(str).str.strip().str.upper() if "sym" in raw.columns else sym
    hit = np.flatnonzero(((raw["dt"].astype(str).str.strip() == day) & (syms == sym)).to_numpy())
    return int(rows[hit[0]]) if len(hit) else 0
