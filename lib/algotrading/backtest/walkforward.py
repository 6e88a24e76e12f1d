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
from algotrading.backtest.sweep import rank, sweep


def split(prices: pd.DataFrame, train: float = 0.6, validation: float = 0.2
          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Chronological train / validation / test parts (fractions of the bars; test is the rest)."""
    if not (0 < train and 0 <= validation and train + validation < 1):
        raise ValueError("need 0 < train, 0 <= validation and train + validation < 1")
    a = int(len(prices) * train)
    b = int(len(prices) * (train + validation))
    return prices.iloc[:a], prices.iloc[a:b], prices.iloc[b:]


def best(table: pd.DataFrame, metric: str = "sharpe", maximize: bool = True) -> dict[str, Any]:
    """The parameters (non-metric columns) of the sweep row with the best `metric` (NaN loses,
    bankrupt rows lose whatever their score)."""
    row = rank(table, metric, ascending=not maximize).iloc[0]
    if pd.isna(row[metric]):
        raise ValueError(f"no combination has a defined {metric}")
    return {k: _plain(row[k]) for k in table.columns if k not in metrics.KEYS}


def lookup(table: pd.DataFrame, params: Mapping[str, Any]) -> pd.Series:
    """The sweep row whose parameters equal `params`."""
    return table.loc[(table[list(params)] == pd.Series(params)).all(axis=1)].iloc[0]


def periods(index: pd.DatetimeIndex, train_end: str, validation_end: str
            ) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """Chronological, disjoint train / validation / test date ranges: train from the first bar to
    `train_end`, validation to `validation_end`, test to the last bar."""
    train, valid = pd.Timestamp(train_end), pd.Timestamp(validation_end)
    if not index[0] <= train < valid < index[-1]:
        raise ValueError(f"need {index[0].date()} <= train_end < validation_end < {index[-1].date()}")
    day = pd.Timedelta(days=1)
    return {"train": (index[0], train), "validation": (train + day, valid),
            "test": (valid + day, index[-1])}


def run_period(strategy: StrategyLike, prices: pd.DataFrame,
               bounds: tuple[pd.Timestamp, pd.Timestamp], **params: Any):
    """Backtest on one period: indicators see the history before it, never a bar after it."""
    start, end = bounds
    return run(strategy, prices.loc[:end], start=start, **params)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def walk_forward(strategy: StrategyLike, prices: pd.DataFrame, grid: Mapping[str, Iterable[Any]],
                 train_bars: int = 756, test_bars: int = 252, anchored: bool = False,
                 metric: str = "sharpe", progress: bool | None = None, **params: Any) -> pd.DataFrame:
    """Choose parameters on each training window, then trade them on the following test window.

    Rolling windows (`anchored=False`) train on the last `train_bars` bars; anchored ones on all
    bars so far. One row per window: its dates, the chosen parameters, the in-sample score
    (`in_sample_<metric>`) and the out-of-sample metrics (`metrics.KEYS`). `progress` goes to
    each window's sweep.
    """
    grid = {k: list(v) for k, v in grid.items()}
    rows = []
    for begin in range(train_bars, len(prices), test_bars):
        first = 0 if anchored else begin - train_bars
        end = min(begin + test_bars, len(prices))
        table = sweep(strategy, prices.iloc[:begin], grid, start=prices.index[first],
                      progress=progress, **params)
        choice = best(table, metric)
        score = lookup(table, choice)[metric]
        oos = run(strategy, prices.iloc[:end], **{**params, **choice, "start": prices.index[begin]})
        rows.append({
            "train_start": prices.index[first], "train_end": prices.index[begin - 1],
            "test_start": prices.index[begin], "test_end": prices.index[end - 1],
            **choice, f"in_sample_{metric}": score,
            **{k: oos.metrics[k] for k in metrics.KEYS},
        })
    return pd.DataFrame(rows)
