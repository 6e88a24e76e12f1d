"""The canonical daily-bar schema and its validator: one definition used by every source, the
lake, the DuckDB view and the Glue table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd

TABLE = "hist_data_daily"
# (column, SQL type) -- the same list defines the lake CSV header, the DuckDB view and the Glue table.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("dt", "string"),
    ("sym", "string"),
    ("open", "double"),
    ("high", "double"),
    ("low", "double"),
    ("close", "double"),
    ("vol", "double"),
)
NAMES = tuple(name for name, _ in COLUMNS)
PRICES = ("open", "high", "low", "close")
NUMERIC = (*PRICES, "vol")

# Symbols: 1-20 of upper-case letters, digits and . - ^ = _, starting with a letter, digit or ^.
# Input is stripped and upper-cased first (tickers are case-insensitive in every feed we read), so
# `aapl` and `AAPL` are one symbol and one file. A symbol is a file name in the lake: this grammar
# is what keeps every write inside `hist_data_daily/`.
SYMBOL = re.compile(r"[A-Z0-9^][A-Z0-9.\-^=_]{0,19}")
SYMBOL_RULE = "symbols are 1-20 of A-Z 0-9 . - ^ = _ starting with a letter, digit or ^"
# Bounds real daily data never leaves; anything outside is a unit, parsing or typing error.
FIRST_DAY = "1920-01-01"
PRICE_MIN, PRICE_MAX = 1e-6, 1e9
VOL_MAX = 1e13
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class DataError(ValueError):
    """Bad input data; the message names the file, symbol, row/date and the broken rule."""

    def __init__(self, origin: str, rule: str, sym: str | None = None, where: str | None = None):
        parts = [origin]
        if sym:
            parts.append(f"symbol {sym}")
        if where:
            parts.append(where)
        super().__init__(f"{': '.join(parts)}: {rule}")
        self.origin, self.rule, self.sym, self.where = origin, rule, sym, where


def _row(frame: pd.DataFrame, mask: np.ndarray | pd.Series, rows: pd.Series | None) -> str:
    """'line N (dt)' (N: line in the source file) or 'row N (dt)' (1-based row of an in-memory
    frame) of the first True in mask."""
    i = int(np.flatnonzero(np.asarray(mask))[0])
    label = f"line {int(rows.iloc[i])}" if rows is not None else f"row {i + 1}"
    dt = frame["dt"].iloc[i]
    return f"{label} ({dt})" if isinstance(dt, str) and dt else label


def today() -> str:
    """The last date a bar may carry (UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def check_symbol(sym: object, origin: str = "symbol") -> str:
    """The normalised (stripped, upper-cased) symbol, or DataError naming the rule."""
    text = sym.strip().upper() if isinstance(sym, str) else ""
    if not SYMBOL.fullmatch(text):
        shown = repr(sym) if len(repr(sym)) <= 40 else repr(sym)[:37] + "...'"
        raise DataError(origin, f"bad symbol {shown}: {SYMBOL_RULE}")
    return text


def _first(frame: pd.DataFrame, mask: np.ndarray, rows: pd.Series | None, origin: str,
           rule: str) -> DataError:
    i = int(np.flatnonzero(mask)[0])
    sym = frame["sym"].iloc[i]
    return DataError(origin, rule, sym if isinstance(sym, str) else None, _row(frame, mask, rows))


def validate(frame: pd.DataFrame, origin: str, rows: pd.Series | None = None) -> pd.DataFrame:
    """Check a frame against the canonical schema and return it typed and sorted.

    `origin` names the file (or source) in errors; `rows` gives each row's line number in the
    source file so an error points at the line a person would open. Raises DataError on the first problem.
    """
    if frame.empty:
        raise DataError(origin, "no data rows (empty file)")
    missing = [c for c in NAMES if c not in frame.columns]
    if missing:
        raise DataError(origin, f"missing column(s) {', '.join(missing)}; found {list(frame.columns)}")
    frame = frame.loc[:, list(NAMES)].reset_index(drop=True)
    if rows is not None:
        rows = pd.Series(np.asarray(rows)).reset_index(drop=True)
    # symbols and dates repeat: check each distinct value once, then map back
    codes, uniques = pd.factorize(frame["sym"], use_na_sentinel=False)
    norm = [u.strip().upper() if isinstance(u, str) else "" for u in uniques]
    bad_u = [not SYMBOL.fullmatch(n) for n in norm]
    if any(bad_u):
        i = int(np.flatnonzero(np.asarray(bad_u)[codes])[0])
        where = f"line {int(rows.iloc[i])}" if rows is not None else f"row {i + 1}"
        raw = uniques[codes[i]]
        shown = repr(raw) if isinstance(raw, str) and raw.strip() else "(empty)"
        shown = shown if len(shown) <= 40 else shown[:37] + "...'"
        raise DataError(origin, f"column sym: bad symbol {shown}: {SYMBOL_RULE}", where=where)
    frame["sym"] = np.asarray(norm, dtype=object)[codes]
    codes, uniques = pd.factorize(frame["dt"], use_na_sentinel=False)
    days = pd.Series([u.strip() if isinstance(u, str) else "" for u in uniques], dtype=object)
    parsed = pd.to_datetime(days, format="%Y-%m-%d", errors="coerce")
    bad_u = (~days.str.fullmatch(DATE.pattern).to_numpy(dtype=bool)) | parsed.isna().to_numpy()
    if bad_u.any():
        i = int(np.flatnonzero(bad_u[codes])[0])
        where = f"line {int(rows.iloc[i])}" if rows is not None else f"row {i + 1}"
        raise DataError(origin, f"column dt: unparseable date {days.iloc[codes[i]]!r} "
                                "(want YYYY-MM-DD)", frame["sym"].iloc[i], where)
    frame["dt"] = days.to_numpy()[codes]
    last = today()
    for mask, rule in ((days < FIRST_DAY, f"date before {FIRST_DAY}"),
                       (days > last, f"date after today ({last})")):
        if mask.any():
            raise _first(frame, mask.to_numpy()[codes], rows, origin, rule)
    for col in NUMERIC:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(origin, f"column {col}: not a finite number ({frame[col].iloc[i]!r})",
                            frame["sym"].iloc[i], _row(frame, bad, rows))
        frame[col] = values.astype(float)
    prices = frame[list(PRICES)].to_numpy()
    vol = frame["vol"].to_numpy()
    checks = (
        ((prices <= 0).any(axis=1), "prices must be > 0"),
        (((prices < PRICE_MIN) | (prices > PRICE_MAX)).any(axis=1),
         f"price outside [{PRICE_MIN:g}, {PRICE_MAX:g}]"),
        (frame["high"] < frame["low"], "high < low"),  # the most specific OHLC rule first
        (frame["low"] > frame[["open", "close"]].min(axis=1), "low > min(open, close)"),
        (frame["high"] < frame[["open", "close"]].max(axis=1), "high < max(open, close)"),
        (np.signbit(vol), "vol must be >= 0 (no sign)"),
        (vol > VOL_MAX, f"vol above {VOL_MAX:g}"),
    )
    for mask, rule in checks:
        mask = np.asarray(mask)
        if mask.any():
            raise _first(frame, mask, rows, origin, rule)
    dup = frame.duplicated(["sym", "dt"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(origin, "duplicate date (one row per symbol and date)",
                        frame["sym"].iloc[i], _row(frame, dup, rows))
    return frame.sort_values(["sym", "dt"], kind="stable").reset_index(drop=True)


def to_prices(frame: pd.DataFrame, sym: str | None = None) -> pd.DataFrame:
    """Canonical long rows of one symbol -> the price frame the strategies and engine use:
    DatetimeIndex `dt`, columns open, high, low, close, vol (float)."""
    if sym is not None:
        frame = frame[frame["sym"] == sym]
    out = frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame["dt"]), name="dt"))
    return out.loc[:, list(NUMERIC)].astype(float).sort_index()
