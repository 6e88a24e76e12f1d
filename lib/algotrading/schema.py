"""The canonical daily-bar schema and its validator: one definition used by every source, the
lake, the DuckDB view and the Glue table."""

from __future__ import annotations

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
    frame["sym"] = frame["sym"].astype(str).str.strip()
    raw_dt = frame["dt"].astype(str).str.strip()
    parsed = pd.to_datetime(raw_dt, format="%Y-%m-%d", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        sym = frame["sym"].iloc[i]
        where = f"line {int(rows.iloc[i])}" if rows is not None else f"row {i + 1}"
        raise DataError(origin, f"column dt: unparseable date {raw_dt.iloc[i]!r} (want YYYY-MM-DD)",
                        sym, where)
    frame["dt"] = parsed.dt.strftime("%Y-%m-%d")
    for col in NUMERIC:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(origin, f"column {col}: not a finite number ({frame[col].iloc[i]!r})",
                            frame["sym"].iloc[i], _row(frame, bad, rows))
        frame[col] = values.astype(float)
    checks = (
        ((frame[list(PRICES)] <= 0).any(axis=1), "prices must be > 0"),
        (frame["high"] < frame["low"], "high < low"),  # the most specific OHLC rule first
        (frame["low"] > frame[["open", "close"]].min(axis=1), "low > min(open, close)"),
        (frame["high"] < frame[["open", "close"]].max(axis=1), "high < max(open, close)"),
        (frame["vol"] < 0, "vol must be >= 0"),
    )
    for mask, rule in checks:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise DataError(origin, rule, frame["sym"].iloc[i], _row(frame, mask, rows))
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
