"""Small builders for test inputs in the exact formats the sources read."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

ADX_HEADER = "timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient"


def adx_rows(n: int = 5, start: str = "2020-01-06", base: float = 100.0) -> list[list[object]]:
    """n business days of consistent bars, oldest first, adjusted_close = close * 0.5."""
    days = pd.bdate_range(start, periods=n)
    rows = []
    for i, day in enumerate(days):
        o = base + i
        c = o + 0.5
        rows.append([day.strftime("%Y-%m-%d"), o, c + 1, o - 1, c, c * 0.5, 1000 + i, 0.0, 1.0])
    return rows


def write_adx(folder: Path, sym: str, rows: list[list[object]]) -> Path:
    """An Alpha Vantage daily-adjusted export: newest row first, as Alpha Vantage writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"daily_adjusted_{sym}.csv"
    lines = [ADX_HEADER] + [",".join(str(v) for v in row) for row in reversed(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below folder, to prove nothing changed."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def random_walk(n: int, seed: int, start: str = "2010-01-04", base: float = 50.0,
                drift: float = 2e-4, vol: float = 0.015) -> pd.DataFrame:
    """n business days of a seeded geometric random walk with consistent OHLC bars (gaps at the
    open, wicks beyond max/min(open, close)), in the engine's price format."""
    import numpy as np

    rng = np.random.default_rng(seed)
    close = base * np.exp(np.cumsum(rng.normal(drift, vol, n)))
    open_ = np.concatenate([[base], close[:-1]]) * np.exp(rng.normal(0, vol / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol / 2.5, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol / 2.5, n)))
    index = pd.bdate_range(start, periods=n, name="dt")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "vol": np.full(n, 1e6)}, index=index)
