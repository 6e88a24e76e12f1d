"""Parameter sweeps: every combination of a grid, one row of key metrics each.

Every value is checked against the strategy's or the engine's declared parameters before any
work starts, unknown names are refused, duplicates dropped, combinations the strategy's rule
rejects (e.g. fast >= slow) skipped, and grids beyond `MAX_COMBOS` combinations or `MAX_WORK`
bar-combinations refused. Work runs in blocks of `CHUNK` combinations; with `top`, only the best
rows of each block are kept, so memory stays bounded however large the grid.

Fixed-size strategies without stops are scored a block at a time with the engine's whole-array
path; rows where a buying-power or bankruptcy rule bound, and every path-dependent setting
(fraction sizing, stops, holding limits, callables), run through `run`. Every row equals
`backtest.run` with the same parameters.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from algotrading import metrics
from algotrading.backtest.engine import (
    Settings,
    StrategyLike,
    check_prices,
    fixed,
    run,
    split_params,
    window,
)
from algotrading.backtest.settings import SETTINGS
from algotrading.strategies import Strategy, get

CHUNK = 256  # combinations per block: bounds memory at (bars x CHUNK) floats per array
MAX_COMBOS = 1_000_000
MAX_WORK = 5e9  # combinations x bars


def _values(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]]) -> dict[str, list[Any]]:
    """Each grid name's checked, de-duplicated values (order kept)."""
    schema = dict(SETTINGS)
    if isinstance(strategy, str | Strategy):
        schema.update(get(strategy).params)
    out = {}
    for name, values in grid.items():
        if name not in schema:
            raise ValueError(f"--grid {name}: no such parameter; choose from {sorted(schema)}")
        checked = [schema[name].check(name, v) for v in values]
        out[name] = list(dict.fromkeys(checked))
        if not out[name]:
            raise ValueError(f"--grid {name}: no values")
    return out


def combinations(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]], bars: int | None = None,
                 fixed_params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every combination of the grid's (checked) values that the strategy accepts (e.g. fast <
    slow), with the strategy's other parameters from `fixed_params`."""
    values = _values(strategy, grid)
    count = math.prod(len(v) for v in values.values())
    if count > MAX_COMBOS or (bars and count * bars > MAX_WORK):
        raise ValueError(f"the grid has {count:,} combinations over {bars or '?'} bars; the limit "
                         f"is {MAX_COMBOS:,} combinations and {MAX_WORK:.0e} combination-bars: "
                         "use fewer values or a coarser step")
    combos = [dict(zip(values, v, strict=True)) for v in itertools.product(*values.values())]
    if isinstance(strategy, str | Strategy):
        strat = get(strategy)
        own = {k: v for k, v in (fixed_params or {}).items() if k in strat.params}
        full = [strat.complete({**own, **{k: c[k] for k in c if k in strat.params}}, bars)
                for c in combos]
        keep = [strat.valid(f) for f in full]
        if combos and not any(keep):
            raise ValueError(f"no combination of the grid is valid for strategy {strat.name!r}: "
                             f"{strat.rule(full[0])}")
        combos = [c for c, k in zip(combos, keep, strict=True) if k]
    return combos


def rank(table: pd.DataFrame, by: str, ascending: bool = False) -> pd.DataFrame:
    """Rows best first by `by`; bankrupt rows and undefined values always last."""
    if by not in table.columns:
        raise ValueError(f"cannot sort by {by!r}; choose one of {list(table.columns)}")
    key = table[by].astype(float)
    key = key if ascending else -key
    broke = table["bankrupt"].astype(bool) if "bankrupt" in table else False
    order = pd.DataFrame({"broke": broke, "missing": key.isna(), "key": key})
    return table.loc[order.sort_values(["broke", "missing", "key"], kind="stable").index]


def sweep(strategy: StrategyLike, prices: pd.DataFrame, grid: Mapping[str, Iterable[Any]],
          progress: bool | None = None, sort: str | None = None, top: int | None = None,
          **params: Any) -> pd.DataFrame:
    """Backtest every combination of `grid` (name -> values) with the other `params` fixed.

    Returns one row per combination: the grid's parameters, then `metrics.KEYS`; with `sort`,
    best first (bankrupt rows last, see `rank`); with `top`, only that many rows.
    `progress` shows a tqdm bar (default: when there are more than 20 blocks or loop runs).
    """
    if top is not None and top < 1:
        raise ValueError(f"top={top}: want a positive number of rows")
    prices = check_prices(prices)
    engine, own = split_params(params)
    settings = Settings(**engine)
    combos = combinations(strategy, grid, len(prices), own)
    swept_engine = any(k in SETTINGS for k in grid)
    fast = isinstance(strategy, str | Strategy) and settings.vectorised and not swept_engine
    blocks = [combos[i:i + CHUNK] for i in range(0, len(combos), CHUNK)]

    def score(block: list[dict[str, Any]]) -> pd.DataFrame:
        if fast:
            table = _vectorised(get(strategy), prices, block, own, engine)
        else:
            table = pd.DataFrame([run(strategy, prices, **{**params, **c}).metrics for c in block],
                                 columns=list(metrics.KEYS))
        table = pd.concat([pd.DataFrame(block, columns=list(grid)), table], axis=1)
        return _keep(table, sort, top)

    show = progress if progress is not None else (len(blocks) > 20 or (not fast and len(combos) > 20))
    parts = list(tqdm(_map(score, blocks, threads=fast), total=len(blocks), disable=not show,
                      desc="sweep"))
    if not parts:
        return pd.DataFrame(columns=[*grid, *metrics.KEYS])
    return _keep(pd.concat(parts, ignore_index=True), sort, top).reset_index(drop=True)


def _keep(table: pd.DataFrame, sort: str | None, top: int | None) -> pd.DataFrame:
    table = rank(table, sort) if sort else table
    return table.head(top) if top else table


def _map(func: Any, blocks: list[Any], threads: bool) -> Iterator[Any]:
    """func over blocks, in order; numpy releases the GIL, so whole-array blocks use threads."""
    if not threads or len(blocks) < 2:
        yield from map(func, blocks)
        return
    with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
        yield from pool.map(func, blocks)


def _vectorised(strategy: Strategy, prices: pd.DataFrame, combos: list[dict[str, Any]],
                own: dict[str, Any], engine: dict[str, Any]) -> pd.DataFrame:
    """Score one block of combinations row-wise with the engine's whole-array path; rows where
    the buying-power or bankruptcy rule bound are run again through `run`."""
    settings = Settings(**engine)
    full = [strategy.check({**own, **c}) for c in combos]
    frame, targets = window(prices, strategy.grid(prices, full), settings.start)
    if len(frame) == 0:
        raise ValueError("no bars to backtest (empty prices or start after the last bar)")
    sim = fixed(frame, targets, settings)
    k = len(combos)
    close = frame["close"].to_numpy(float)
    out = metrics.equity_metrics(sim.equity, settings.cash, sim.positions * close, sim.traded,
                                 settings.risk_free)
    is_open = sim.trades["open"]
    closed = ~is_open
    out.update(metrics.trade_stats(sim.trades["pnl"][closed], sim.trades["col"][closed], k))
    out["trades_open"] = np.bincount(sim.trades["col"][is_open], minlength=k)
    out["orders_rejected"], out["bankrupt"] = 0, False
    table = pd.DataFrame({key: np.broadcast_to(out[key], (k,)) for key in metrics.KEYS})
    table = table.astype({"orders_rejected": int, "bankrupt": bool})
    for i in np.flatnonzero(~sim.exact):
        m = run(strategy, prices, **own, **engine, **combos[i]).metrics
        table.iloc[i] = [m[key] if m[key] is not None else np.nan for key in metrics.KEYS]
    return table
