"""The bars every engine sees: the last 2,000 GSPC days of the offline sample, and a seeded
synthetic universe (geometric random walks with consistent OHLC) for the many-symbols case."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from algotrading import schema, sources

PUBLIC = Path(os.environ.get("ALGO_PUBLIC_DATA",
                             Path(__file__).parents[2] / "shared" / "data" / "stocks_history_target.h5"))

SEED = 20240601


def gspc(bars: int | None = 2000) -> pd.DataFrame:
    """The last `bars` (None: all 5,031) daily bars of the S&P 500 shipped with the `arch` wheel
    (offline)."""
    prices = schema.to_prices(sources.read("sample", symbols=["GSPC"]).frame, "GSPC")
    return prices if bars is None else prices.iloc[-bars:]


def intc() -> pd.DataFrame | None:
    """INTC's 1,258 daily bars from the public dataset (None if it is not on this machine)."""
    if not PUBLIC.exists():
        return None
    return schema.to_prices(sources.read("public", str(PUBLIC), ["INTC"]).frame, "INTC")


def universe(symbols: int = 500, bars: int = 5000, seed: int = SEED,
             start: str = "2000-01-03") -> dict[str, pd.DataFrame]:
    """`symbols` seeded random walks of `bars` business days each, in the engine's price format.

    close follows a geometric random walk (0.03 % drift, 1.5 % daily volatility); open gaps off
    the previous close; high/low extend beyond max/min(open, close), so every bar is valid OHLC.
    (100,000 business days from 2000 would pass pandas' last date, 2262: start earlier.)
    """
    rng = np.random.default_rng(seed)
    shape = (bars, symbols)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, shape), axis=0))
    prev = np.vstack([np.full((1, symbols), 100.0), close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, 0.004, shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.006, shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.006, shape)))
    vol = rng.integers(100_000, 5_000_000, shape).astype(float)
    index = pd.bdate_range(start, periods=bars, name="dt")
    return {
        f"S{j:03d}": pd.DataFrame({"open": open_[:, j], "high": high[:, j], "low": low[:, j],
                                   "close": close[:, j], "vol": vol[:, j]}, index=index)
        for j in range(symbols)
    }
