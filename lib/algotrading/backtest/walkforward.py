"""Out-of-sample evaluation: chronological splits, picking a sweep's best row, walk-forward.

Warm-up convention: a window's indicators are computed with all the history before the window
(so a 200-bar average is valid on the window's first bar and no window bars are wasted on
warm-up), but never with data after the window's last bar; trading starts flat on the window's
first bar and metrics cover only the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from algotrading import metrics
from algotrading.backtest.engine import StrategyLike, run
from algotrading.backtest.sweep import sweep


def split(prices: pd.DataFrame, train: float = 0.6, validation: float = 0.2
          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Chronological train / validation / test parts (fractions of the bars; test is the rest)."""
    if not (0 < train and 0 <= validation and train + validation < 1):
        raise ValueError("need 0 < train, 0 <= validation and train + validation < 1")
    a = int(len(prices) * train)
    b = int(len(prices) * (train + validation))
    return prices.iloc[:a], prices.iloc[a:b], prices.iloc[b:]


def best(table: pd.DataFrame, metric: str = "sharpe", maximize: bool = True) -> dict[str, Any]:
    """The parameters (non-metric columns) of the sweep row with the best `metric` (NaN loses)."""
    scores = table[metric].astype(float)
    if scores.isna().all():
        raise ValueError(f"no combination has a defined {metric}")
    row = table.loc[scores.idxmax() if maximize else scores.idxmin()]
    return {k: _plain(row[k]) for k in table.columns if k not in metrics.KEYS}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def walk_forward(strategy: StrategyLike, prices: pd.DataFrame, grid: Mapping[str, Iterable[Any]],
                 train_bars: int = 756, test_bars: int = 252, anchored: bool = False,
                 metric: str = "sharpe", **params: Any) -> pd.DataFrame:
    """Choose parameters on each training window, then trade them on the following test window.

    Rolling windows (`anchored=False`) train on the last `train_bars` bars; anchored ones on all
    bars so far. One row per window: its dates, the chosen parameters, the in-sample score
    (`in_sample_<metric>`) and the out-of-sample metrics (`metrics.KEYS`).
    """
    grid = {k: list(v) for k, v in grid.items()}
    rows = []
    for begin in range(train_bars, len(prices), test_bars):
        first = 0 if anchored else begin - train_bars
        end = min(begin + test_bars, len(prices))
        table = sweep(strategy, prices.iloc[:begin], grid, start=prices.index[first], **params)
        choice = best(table, metric)
        score = table.loc[(table[list(choice)] == pd.Series(choice)).all(axis=1), metric].iloc[0]
        oos = run(strategy, prices.iloc[:end], **{**params, **choice, "start": prices.index[begin]})
        rows.append({
            "train_start": prices.index[first], "train_end": prices.index[begin - 1],
            "test_start": prices.index[begin], "test_end": prices.index[end - 1],
            **choice, f"in_sample_{metric}": score,
            **{k: oos.metrics[k] for k in metrics.KEYS},
        })
    return pd.DataFrame(rows)
