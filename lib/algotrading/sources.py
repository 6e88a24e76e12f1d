"""Readers that turn each data source into validated canonical frames (dt,sym,open,high,low,close,vol).

Sources: `sample` (S&P 500 and NASDAQ Composite shipped inside the `arch` wheel, offline),
`adx` (AWS Data Exchange / Alpha Vantage daily-adjusted CSV exports), `public` (the workshop's
16-stock NASDAQ HDF5 file) and `csv` (any CSV with the canonical columns or a mapping).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from algotrading.schema import DataError, validate

SOURCES = ("sample", "adx", "public", "csv")
SAMPLE_SYMBOLS = {"GSPC": "sp500", "IXIC": "nasdaq"}
PUBLIC_SHA256 = "bd4ff116164d9b70c5d66e7c5779649ad17ee7f262043ba2d72c79fe9bfc69d9"
PUBLIC_URL = (
    "https://github.com/vermouth1992/drl-portfolio-management/raw/master/"
    "src/utils/datasets/stocks_history_target.h5"
)
PUBLIC_START = pd.Timestamp("2012-08-13")
ADX_COLUMNS = ("timestamp", "open", "high", "low", "close", "adjusted_close", "volume",
               "dividend_amount", "split_coefficient")
ADX_FILE = re.compile(r"daily_adjusted_(?P<sym>[A-Za-z0-9.\-_]+)\.csv$")


@dataclass
class Batch:
    """What a source produced: the validated rows and, per symbol, rows dropped on purpose."""

    frame: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    origin: str = ""
    repaired: dict[str, int] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per symbol: rows kept, dropped, repaired, first and last date."""
        g = self.frame.groupby("sym")["dt"]
        out = pd.DataFrame({"rows": g.size(), "first": g.min(), "last": g.max()})
        out.insert(1, "dropped", [self.dropped.get(s, 0) for s in out.index])
        out.insert(2, "repaired", [self.repaired.get(s, 0) for s in out.index])
        return out


def read(source: str, path: str | None = None, symbols: Iterable[str] | None = None,
         columns: Mapping[str, str] | None = None) -> Batch:
    """Read `source` (one of SOURCES) from `path` and return validated canonical rows."""
    wanted = [s.upper() for s in symbols] if symbols else None
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
            raise DataError(batch.origin, f"symbol(s) not in this source: {', '.join(missing)}")
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


def _csv(data: bytes, origin: str) -> pd.DataFrame:
    if not data.strip():
        raise DataError(origin, "no data rows (empty file)")
    if b"\x00" in data[:4096]:
        raise DataError(origin, "not a CSV text file (binary content)")
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(origin, f"not a readable CSV ({str(exc).splitlines()[0]})") from exc


def read_adx(path: str, symbols: list[str] | None = None) -> Batch:
    """Alpha Vantage daily-adjusted exports (`daily_adjusted_<SYM>.csv`, newest first) from a
    folder, one file or an S3 prefix. Prices are split/dividend adjusted by adjusted_close/close."""
    from algotrading.lake import open_store

    store, names = open_store(path, must_exist=True).find(ADX_FILE)
    frames = []
    for name in names:
        sym = ADX_FILE.search(name)["sym"].upper()
        if symbols and sym not in symbols:
            continue
        origin = store.describe(name)
        raw = _csv(store.get(name), origin)
        missing = [c for c in ADX_COLUMNS if c not in raw.columns]
        if missing:
            raise DataError(origin, f"missing column(s) {', '.join(missing)}; "
                                    f"found {list(raw.columns)}")
        frame = pd.DataFrame({"dt": raw["timestamp"], "sym": sym, "open": raw["open"],
                              "high": raw["high"], "low": raw["low"], "close": raw["close"],
                              "vol": raw["volume"]})
        rows = pd.Series(np.arange(len(raw)) + 2)  # line number in the file (header is line 1)
        validate(frame, origin, rows)  # raw values first, so a bad number is reported as written
        frames.append(validate(_adjust(frame, raw["adjusted_close"]), origin, rows))
    if not frames:
        wanted = f" for {', '.join(symbols)}" if symbols else ""
        raise DataError(path, f"no daily_adjusted_<SYM>.csv files found{wanted}")
    return Batch(pd.concat(frames, ignore_index=True), origin=path)


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
        with urllib.request.urlopen(url_or_path, timeout=60) as resp, open(tmp, "wb") as out:
            out.write(resp.read())
        tmp.replace(target)
    if sha256:
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
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
    file = fetch(where, PUBLIC_SHA256 if "://" in where else None)
    origin = str(where)
    try:
        with h5py.File(file, "r") as h5:
            history = np.asarray(h5["history"], dtype=float)
            names = [a.decode() if isinstance(a, bytes) else str(a) for a in h5["abbreviation"]]
    except OSError as exc:
        raise DataError(origin, f"not an HDF5 file ({exc})") from exc
    except KeyError as exc:
        raise DataError(origin, f"missing dataset {exc} (want 'history' and 'abbreviation')") from exc
    if history.ndim != 3 or history.shape[2] != 5 or history.shape[0] != len(names):
        raise DataError(origin, f"history has shape {history.shape}; want (symbols, days, 5)")
    dates = (PUBLIC_START + pd.to_timedelta(np.arange(history.shape[1]), unit="D")).strftime(
        "%Y-%m-%d")
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
    return Batch(pd.concat(frames, ignore_index=True), dropped, origin, repaired)


def read_csv(path: str, columns: Mapping[str, str] | None = None,
             symbols: list[str] | None = None) -> Batch:
    """CSV file(s) with the canonical columns; `columns` maps source names to canonical ones
    (e.g. {"Date": "dt", "Ticker": "sym", "Volume": "vol"})."""
    from algotrading.lake import open_store

    store, names = open_store(path, must_exist=True).find(re.compile(r"\.csv$", re.I))
    frames = []
    for name in names:
        origin = store.describe(name)
        raw = _csv(store.get(name), origin)
        if columns:
            raw = raw.rename(columns=dict(columns))
        frame = validate(raw, origin, pd.Series(np.arange(len(raw)) + 2))
        frames.append(frame[frame["sym"].isin(symbols)] if symbols else frame)
    if not frames:
        raise DataError(path, "no .csv files found")
    # once more over all files: a symbol and date may repeat across files
    return Batch(validate(pd.concat(frames, ignore_index=True), path), origin=path)
