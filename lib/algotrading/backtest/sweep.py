"""Parameter sweeps: every combination of a grid, one row of key metrics each.

Fixed-size strategies without stops are scored all at once: the strategy's `grid` gives a
(bars x combos) target matrix and the engine's whole-array path turns it into equity and trades
per column. Anything path-dependent (fraction sizing, stops, holding limits, callables) loops
over `run`, with a progress bar when the loop is long.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from algotrading import metrics
from algotrading.backtest.engine import (
    Settings,
    StrategyLike,
    default_size,
    fixed,
    run,
    split_params,
    window,
)
from algotrading.strategies import Strategy, get

CHUNK = 256  # combinations per block: bounds memory at (bars x CHUNK) floats per array


def combinations(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values that the strategy accepts (e.g. fast < slow)."""
    keys = list(grid)
    combos = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(list(grid[k]) for k in keys))]
    if isinstance(strategy, str | Strategy):
        strat = get(strategy)
        combos = [c for c in combos if strat.valid({**strat.defaults, **c})]
    return combos


def sweep(strategy: StrategyLike, prices: pd.DataFrame, grid: Mapping[str, Iterable[Any]],
          progress: bool | None = None, **params: Any) -> pd.DataFrame:
    """Backtest every combination of `grid` (name -> values) with the other `params` fixed.

    Returns one row per combination: the grid's parameters, then `metrics.KEYS`.
    `progress` shows a tqdm bar (default: when the loop path has more than 20 combinations).
    """
    combos = combinations(strategy, grid)
    engine, own = split_params(params)
    settings = default_size(strategy, Settings(**engine))
    swept_engine = any(k in Settings.__dataclass_fields__ for k in grid)
    if isinstance(strategy, str | Strategy) and settings.vectorised and not swept_engine:
        table = _vectorised(get(strategy), prices, combos, own, settings)
    else:
        bar = tqdm(combos, disable=not (progress if progress is not None else len(combos) > 20),
                   desc="sweep")
        table = pd.DataFrame([run(strategy, prices, **{**params, **c}).metrics for c in bar],
                             columns=list(metrics.KEYS))
    return pd.concat([pd.DataFrame(combos, columns=list(grid)), table], axis=1)


def _vectorised(strategy: Strategy, prices: pd.DataFrame, combos: list[dict[str, Any]],
                own: dict[str, Any], settings: Settings) -> pd.DataFrame:
    """Score all combinations row-wise with the engine's whole-array path, a block per thread
    (numpy releases the GIL, so blocks run in parallel on the available cores)."""
    def score(block: list[dict[str, Any]]) -> pd.DataFrame:
        full = [{**strategy.defaults, **own, **c} for c in block]
        frame, targets = window(prices, strategy.grid(prices, full), settings.start)
        if len(frame) == 0:
            raise ValueError("no bars to backtest (empty prices or start after the last bar)")
        sim = fixed(frame, targets, settings)
        k = len(block)
        out = metrics.equity_metrics(sim.equity, settings.cash, sim.positions, sim.traded,
                                     settings.risk_free)
        is_open = sim.trades["open"]
        closed = ~is_open
        out.update(metrics.trade_stats(sim.trades["pnl"][closed], sim.trades["col"][closed], k))
        out["trades_open"] = np.bincount(sim.trades["col"][is_open], minlength=k)
        return pd.DataFrame({key: np.broadcast_to(out[key], (k,)) for key in metrics.KEYS})

    blocks = [combos[i:i + CHUNK] for i in range(0, len(combos), CHUNK)]
    if not blocks:
        return pd.DataFrame(columns=list(metrics.KEYS))
    with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
        return pd.concat(list(pool.map(score, blocks)), ignore_index=True)
