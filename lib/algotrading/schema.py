"""The canonical daily-bar schema and its validator: one definition used by every source, the
lake, the DuckDB view and the Glue table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from algotrading.errors import AlgotradingError

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


class DataError(AlgotradingError, ValueError):
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
    frame = frame.loc[:, list(NAMES)].reset_index(drop=True)  # a lazy copy (copy on write)
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
    frame["sym"] = pd.array(norm, dtype="str").take(codes)  # compact strings, no objects
    sym_key = _ranks(norm)[codes]
    codes, uniques = pd.factorize(frame["dt"], use_na_sentinel=False)
    days = pd.Series(uniques, dtype=object)
    days = days.where(days.map(lambda v: isinstance(v, str)), "").astype("string[pyarrow]").str.strip()
    ok = days.str.fullmatch(DATE.pattern).to_numpy(dtype=bool, na_value=False)
    parsed = pd.to_datetime(days.where(ok, None), format="%Y-%m-%d", errors="coerce")
    bad_u = ~ok | parsed.isna().to_numpy()
    if bad_u.any():
        i = int(np.flatnonzero(bad_u[codes])[0])
        where = f"line {int(rows.iloc[i])}" if rows is not None else f"row {i + 1}"
        raise DataError(origin, f"column dt: unparseable date {days.iloc[codes[i]]!r} "
                                "(want YYYY-MM-DD)", frame["sym"].iloc[i], where)
    frame["dt"] = days.astype("str").array.take(codes)
    dt_key = parsed.to_numpy().astype("datetime64[D]").astype(np.int64)[codes]
    dt_key -= dt_key.min()
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
        if frame[col].dtype != np.float64:
            frame[col] = values.astype(float)
    first: dict[str, int] = {}
    for start in range(0, len(frame), CHUNK):  # chunks keep the temporaries small
        part = frame.iloc[start:start + CHUNK]
        for rule, mask in _value_rules(part[list(PRICES)].to_numpy(), part["vol"].to_numpy()):
            if rule not in first and mask.any():
                first[rule] = start + int(np.flatnonzero(mask)[0])
    if first:
        rule = min(first, key=list(RULES).index)
        mask = np.zeros(len(frame), dtype=bool)
        mask[first[rule]] = True
        raise _first(frame, mask, rows, origin, rule)
    key = sym_key * (int(dt_key.max()) + 1) + dt_key
    del sym_key, dt_key, codes
    if (key[1:] > key[:-1]).all():
        return frame  # already sorted by symbol and date, no repeats
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    repeats = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeats):
        dup = np.zeros(len(frame), dtype=bool)
        dup[order[repeats + 1].min()] = True
        i = int(np.flatnonzero(dup)[0])
        raise DataError(origin, "duplicate date (one row per symbol and date)",
                        frame["sym"].iloc[i], _row(frame, dup, rows))
    return frame.take(order).reset_index(drop=True)


CHUNK = 1 << 18
RULES = ("prices must be > 0", f"price outside [{PRICE_MIN:g}, {PRICE_MAX:g}]", "high < low",
         "low > min(open, close)", "high < max(open, close)", "vol must be >= 0 (no sign)",
         f"vol above {VOL_MAX:g}")


def _value_rules(prices: np.ndarray, vol: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(rule, rows breaking it) for bars of open, high, low, close and volume, in RULES order:
    the most specific OHLC rule first."""
    masks = (
        (prices <= 0).any(axis=1),
        ((prices < PRICE_MIN) | (prices > PRICE_MAX)).any(axis=1),
        prices[:, 1] < prices[:, 2],
        prices[:, 2] > np.minimum(prices[:, 0], prices[:, 3]),
        prices[:, 1] < np.maximum(prices[:, 0], prices[:, 3]),
        np.signbit(vol),
        vol > VOL_MAX,
    )
    yield from zip(RULES, masks, strict=True)


def _ranks(values: list[str]) -> np.ndarray:
    """Each value's position in sorted order (equal values share a rank), as int64."""
    uniq = sorted(set(values))
    pos = {v: i for i, v in enumerate(uniq)}
    return np.fromiter((pos[v] for v in values), dtype=np.int64, count=len(values))


def to_prices(frame: pd.DataFrame, sym: str | None = None) -> pd.DataFrame:
    """Canonical long rows of one symbol -> the price frame the strategies and engine use:
    DatetimeIndex `dt`, columns open, high, low, close, vol (float)."""
    if sym is not None:
        frame = frame[frame["sym"] == sym]
    out = frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame["dt"]), name="dt"))
    return out.loc[:, list(NUMERIC)].astype(float).sort_index()
