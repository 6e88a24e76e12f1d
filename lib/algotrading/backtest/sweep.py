"""Parameter sweeps: every combination of a grid, one row of key metrics each.

Every value is checked against the strategy's or the engine's declared parameters before any
work starts, unknown names are refused, duplicates dropped, combinations the strategy's rule
rejects (e.g. fast >= slow) skipped, and grids beyond `MAX_COMBOS` combinations or `MAX_WORK`
bar-combinations refused. Work runs in blocks of at most `BLOCK` combination-bars, and no more
blocks than keep every core busy (each block costs a hand-over of the GIL); with `top`, only the
best rows of each block are kept, so memory stays bounded however large the grid.

Each block gets its targets from the strategy's `grid` (all combinations at once), then runs
through the compiled kernel (the Broker's rules, kernel.py; metrics computed inside the loop, no
equity matrices), blocks in a thread per core. The built-in SMA, EMA and breakout, with no engine
setting in the grid, skip the blocks: one table of averages or channels, then every combination in
one compiled parallel loop (fused.py). Every row equals `backtest.run` with the same parameters.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from algotrading import metrics
from algotrading.backtest.engine import (
    OHLC,
    Settings,
    StrategyLike,
    block,
    check_prices,
    checked,
    curve_metrics,
    ohlc,
    resolve,
    split_params,
    strategy_of,
)
from algotrading.backtest.settings import ENGINE_PARAMS, SETTINGS
from algotrading.schema import DataError
from algotrading.strategies import Strategy, unknown_message

BLOCK = 2_000_000  # combination-bars per block: bounds memory at ~16 MB per float array
MAX_COMBOS = 200_000  # ~40 s on 5,000 bars; the combinations and their rows stay in memory
MAX_WORK = 2e9  # combinations x bars
PORTFOLIO_BLOCK = 8_000_000  # combination-bar-symbols per block of sweep_portfolio: 64 MB of targets


def _values(strat: Strategy | None, grid: Mapping[str, Iterable[Any]], bars: int | None
            ) -> dict[str, list[Any]]:
    """Each grid name's checked, de-duplicated values (order kept); lookbacks below `bars`."""
    own = dict(strat.params) if strat is not None else {}
    schema = {**SETTINGS, **own}
    out = {}
    for name, values in grid.items():
        if name not in schema:
            if strat is not None and strat.extra:  # a function's **kwargs: passed as given
                out[name] = list(values)
                if not out[name]:
                    raise ValueError(f"the grid's {name!r} has no values")
                continue
            owner = strat.owner if strat is not None else "precomputed positions"
            raise ValueError(unknown_message(owner, [name], own, also=" (or an engine "
                                             f"setting: {', '.join(SETTINGS)})"))
        try:
            checked = [schema[name].check(name, v) for v in values]
        except ValueError as e:
            raise strat.error(e) if strat is not None and name in own else e from None
        out[name] = list(dict.fromkeys(checked))
        if bars is not None and schema[name].lookback and max(out[name], default=0) >= bars:
            raise ValueError(f"parameter {name}={max(out[name])} needs more bars than the "
                             f"{bars} given")
        if not out[name]:
            raise ValueError(f"the grid's {name!r} has no values")
    return out


def combinations(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]], bars: int | None = None,
                 fixed_params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every combination of the grid's (checked) values that the strategy accepts (e.g. fast <
    slow), with the strategy's other parameters from `fixed_params`."""
    names, rows, _ = _rows(strategy, grid, bars, fixed_params)
    return [dict(zip(names, row, strict=True)) for row in rows]


def _rows(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]], bars: int | None,
          fixed_params: Mapping[str, Any] | None) -> tuple[list[str], list[tuple], dict[str, Any]]:
    """`combinations` as the grid's names and one tuple of values per accepted combination, in
    product order, and the strategy's parameters that the grid leaves fixed (its defaults and
    `fixed_params`; empty without a strategy): tuples, so a sweep of thousands of combinations
    builds no dict per combination (the rule checks one dict, updated in place)."""
    strat = strategy_of(strategy)
    values = _values(strat, grid, bars)
    count = math.prod(len(v) for v in values.values())
    if count > MAX_COMBOS or (bars and count * bars > MAX_WORK):
        raise ValueError(f"the grid has {count:,} combinations over {bars or '?'} bars; the limit "
                         f"is {MAX_COMBOS:,} combinations and {MAX_WORK:.0e} combination-bars: "
                         "use fewer values or a coarser step")
    names = list(values)
    rows = list(itertools.product(*values.values()))
    if strat is None:
        return names, rows, {}
    mine = [i for i, k in enumerate(names) if k not in ENGINE_PARAMS]  # the strategy's (or **kwargs')
    fixed = {k: v for k, v in (fixed_params or {}).items() if k not in ENGINE_PARAMS}
    base = strat.complete({**fixed, **{names[i]: values[names[i]][0] for i in mine}}, bars)
    own = [names[i] for i in mine]
    picked = rows if len(own) == len(names) else [tuple(row[i] for i in mine) for row in rows]
    full = dict(base)
    keep = []
    for chosen in picked:
        full.update(zip(own, chosen, strict=True))
        keep.append(strat.valid(full))
    if rows and not any(keep):
        full.update(zip(own, picked[0], strict=True))
        raise ValueError(f"no combination of the grid is valid for {strat.owner}: "
                         f"{strat.rule(full)}")
    return names, list(itertools.compress(rows, keep)), base


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

    `strategy` is anything `run` takes; the grid's names are its parameters (a function's own
    keyword names) and engine settings. Returns one row per combination: the grid's parameters,
    then `metrics.KEYS`; with `sort`, best first (bankrupt rows last, see `rank`); with `top`,
    only that many rows.
    `progress` shows a tqdm bar (default: when there are more than 20 blocks).
    """
    if top is not None and top < 1:
        raise ValueError(f"top={top}: want a positive number of rows")
    if sort is not None and sort not in metrics.KEYS:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {list(metrics.KEYS)}")
    prices = check_prices(prices)
    Settings(**split_params(params)[0])  # bad fixed settings fail before any work
    strategy = strategy_of(strategy) or strategy  # a name, spec or function: resolved once
    names, rows, base = _rows(strategy, grid, len(prices), split_params(params)[1])
    kind = _fusable(strategy, grid) if rows else None
    if kind:
        columns = {k: np.array(column) for k, column in zip(names, zip(*rows, strict=True),
                                                               strict=True)}
        table = pd.DataFrame({**columns, **_fused_cross(kind, prices, columns, base, params)})
        return _keep(table, sort, top).reset_index(drop=True)
    combos = [dict(zip(names, row, strict=True)) for row in rows]
    from algotrading.backtest.fused import threads

    size = max(1, min(-(-len(combos) // threads()), BLOCK // len(prices)))
    blocks = [combos[i:i + size] for i in range(0, len(combos), size)]

    def score(block: list[dict[str, Any]]) -> pd.DataFrame:
        table = pd.concat([pd.DataFrame(block, columns=list(grid)),
                           _score(strategy, prices, block, params)], axis=1)
        return _keep(table, sort, top)

    show = progress if progress is not None else len(blocks) > 20
    from tqdm import tqdm  # only for the progress bar: the live runner's image has no tqdm

    parts = list(tqdm(_map(score, blocks), total=len(blocks), disable=not show, desc="sweep"))
    if not parts:
        return pd.DataFrame(columns=[*grid, *metrics.KEYS])
    return _keep(pd.concat(parts, ignore_index=True), sort, top).reset_index(drop=True)


def _fusable(strategy: StrategyLike, grid: Mapping[str, Iterable[Any]]) -> str | None:
    """"sma", "ema" or "breakout" for the built-in strategies with one engine setting for every
    row (the fused sweep, fused.py), else None."""
    from algotrading.strategies import breakout, ema, sma

    strat = strategy_of(strategy)
    if strat is None or any(k in ENGINE_PARAMS for k in grid):
        return None
    return {sma.grid: "sma", ema.grid: "ema", breakout.grid: "breakout"}.get(strat.grid)


def _fused_cross(kind: str, prices: pd.DataFrame, columns: dict[str, np.ndarray],
                 base: dict[str, Any], params: dict[str, Any]) -> dict[str, np.ndarray]:
    """metrics.KEYS for every SMA, EMA or breakout combination (the grid's `columns`, the other
    parameters from `base`) in one compiled, parallel call (fused.py)."""
    from algotrading.backtest import fused, kernel

    settings = Settings(**split_params(params)[0])
    count = len(next(iter(columns.values())))
    first = 0 if settings.start is None else \
        int(np.searchsorted(prices.index, pd.Timestamp(settings.start), side="left"))
    if first >= len(prices):
        raise ValueError("no bars to backtest (empty prices or start after the last bar)")
    arrays = ohlc(prices)
    bars = kernel.Bars(*(a[first:] for a in arrays))

    def column(name: str, dtype: type) -> np.ndarray:
        return columns[name].astype(dtype) if name in columns else np.full(count, base[name], dtype)

    if kind == "breakout":
        stats = fused.run_breakout(bars, arrays[3], first, column("period", np.int64),
                                   column("go_long", bool), column("go_short", bool),
                                   settings.rules)
    else:
        stats = fused.run_cross(kind, bars, arrays[3], first, column("fast_period", np.int64),
                                column("slow_period", np.int64), column("long_only", bool),
                                settings.rules)
    return _columns(stats, np.full(count, settings.cash))


def _keep(table: pd.DataFrame, sort: str | None, top: int | None) -> pd.DataFrame:
    table = rank(table, sort) if sort else table
    return table.head(top) if top else table


def _map(func: Any, blocks: list[Any]) -> Iterator[Any]:
    """func over blocks, in order, a thread per core (the kernel releases the GIL)."""
    if len(blocks) < 2:
        yield from map(func, blocks)
        return
    from algotrading.backtest.fused import threads

    with ThreadPoolExecutor(max_workers=min(len(blocks), threads())) as pool:
        yield from pool.map(func, blocks)


def _score(strategy: StrategyLike, prices: pd.DataFrame, combos: list[dict[str, Any]],
           params: dict[str, Any]) -> pd.DataFrame:
    """metrics.KEYS for one block of combinations: targets for all of them at once (the
    strategy's `grid`), then the kernel per group of combinations sharing engine settings."""
    from algotrading.backtest import kernel

    split = [split_params({**params, **c}) for c in combos]
    wants = _targets(strategy, prices, combos, params)
    bars = kernel.Bars(*ohlc(prices))
    stats = kernel.stats_table(len(combos))
    cash = np.empty(len(combos))
    groups: dict[tuple, list[int]] = {}
    for i, (eng, _) in enumerate(split):
        groups.setdefault(tuple(sorted(eng.items(), key=lambda kv: kv[0])), []).append(i)
    for key, rows in groups.items():
        settings = Settings(**dict(key))
        keep = np.ones(len(prices), bool) if settings.start is None else \
            np.asarray(prices.index >= pd.Timestamp(settings.start))
        if not keep.any():
            raise ValueError("no bars to backtest (empty prices or start after the last bar)")
        block = np.ascontiguousarray(wants[rows][:, keep], dtype=float)
        out = kernel.stats_table(len(rows))
        kernel.simulate_many(kernel.Bars(*(a[keep] for a in bars)), block, settings.rules, out)
        stats[rows] = out
        cash[rows] = settings.cash
    return _table(stats, cash)


def _targets(strategy: StrategyLike, prices: pd.DataFrame, combos: list[dict[str, Any]],
             params: dict[str, Any]) -> np.ndarray:
    """Desired positions of every combination (combos x bars): the strategy's `grid` at once."""
    strat = strategy_of(strategy)
    if strat is not None:  # values were checked by `combinations`
        mine = [k for k in combos[0] if k not in ENGINE_PARAMS]
        base = strat.complete({**split_params(params)[1], **{k: combos[0][k] for k in mine}})
        return strat.grid(prices, [{**base, **{k: c[k] for k in mine}} for c in combos]).T
    return np.stack([resolve(strategy, prices, split_params({**params, **c})[1]) for c in combos])


def curves(strategy: StrategyLike, prices: pd.DataFrame, grid: Mapping[str, Iterable[Any]],
           **params: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Every combination of `grid` (the table's rows) and its equity at each bar's close
    (combos x bars, from `start` if given): the sweep's combinations, targets and kernel, for
    what a metrics row cannot show, such as how alike the trials' returns are (the study's
    effective trial count). Memory is combos x bars floats, so keep grids to a few thousand."""
    from algotrading.backtest import kernel

    prices = check_prices(prices)
    strategy = strategy_of(strategy) or strategy
    combos = combinations(strategy, grid, len(prices), split_params(params)[1])
    if not combos:
        return pd.DataFrame(columns=list(grid)), np.empty((0, 0))
    wants = _targets(strategy, prices, combos, params)
    arrays = ohlc(prices)
    rows = []
    for i, combo in enumerate(combos):
        settings = Settings(**split_params({**params, **combo})[0])
        keep = np.ones(len(prices), bool) if settings.start is None else \
            np.asarray(prices.index >= pd.Timestamp(settings.start))
        if rows and keep.sum() != len(rows[0]):
            raise ValueError("curves: every combination must cover the same bars (sweep `start` "
                             "as a fixed setting, not in the grid)")
        run = kernel.simulate_one(kernel.Bars(*(a[keep] for a in arrays)), wants[i][keep],
                                  settings.rules)
        rows.append(run.equity)
    return pd.DataFrame(combos, columns=list(grid)), np.stack(rows)


def sweep_portfolio(strategy: StrategyLike, prices: Mapping[str, pd.DataFrame],
                    grid: Mapping[str, Iterable[Any]], sort: str | None = None,
                    top: int | None = None, **params: Any) -> pd.DataFrame:
    """`run_portfolio` (one shared cash account over every symbol of `prices`) for every
    combination of `grid`, with the other `params` fixed: one row per combination, the grid's
    parameters then `metrics.KEYS`, each equal to `run_portfolio(strategy, prices, **params,
    **combination).metrics`; `sort` and `top` as in `sweep`.

    Targets come from the strategy's `grid` on each symbol's own history (all combinations at
    once), then every combination runs in one compiled call (backtest/shared.py: the Broker's
    shared-cash bar cycle), combinations in parallel on numba's threads (NUMBA_NUM_THREADS bounds
    them), in blocks of at most `PORTFOLIO_BLOCK` combination-bar-symbols (at least one
    combination per thread) so memory stays bounded."""
    from algotrading.backtest import kernel, shared
    from algotrading.backtest.engine import OHLC, portfolio_frames, portfolio_settings

    if top is not None and top < 1:
        raise ValueError(f"top={top}: want a positive number of rows")
    if sort is not None and sort not in metrics.KEYS:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {list(metrics.KEYS)}")
    Settings(**split_params(params)[0])  # bad fixed settings fail before any work
    symbols, full, rows, frames = portfolio_frames(prices)
    strategy = strategy_of(strategy) or strategy
    combos = combinations(strategy, grid, min(len(f) for f in full), split_params(params)[1])
    if not combos:
        return pd.DataFrame(columns=[*grid, *metrics.KEYS])
    arrays = {k: shared.prices_2d(frames, k) for k in OHLC}
    n, m = arrays["close"].shape
    if n == 0:
        raise ValueError(f"the symbols {symbols} share no dates")
    from algotrading.backtest.fused import threads

    size = max(threads(), PORTFOLIO_BLOCK // (n * m))
    parts = []
    for lo in range(0, len(combos), size):
        block = combos[lo:lo + size]
        wants = np.empty((len(block), n, m))
        for a, (frame, keep) in enumerate(zip(full, rows, strict=True)):
            want = _targets(strategy, frame, block, params)
            wants[:, :, a] = want if keep.all() else want[:, keep]
        stats = kernel.stats_table(len(block))
        cash = np.empty(len(block))
        groups: dict[tuple, list[int]] = {}
        for i, combo in enumerate(block):
            engine = split_params({**params, **combo})[0]
            groups.setdefault(tuple(sorted(engine.items(), key=lambda kv: kv[0])), []).append(i)
        for key, members in groups.items():
            settings = portfolio_settings(Settings(**dict(key)), m)
            dates = frames[0].index
            keep = np.ones(n, bool) if settings.start is None else \
                np.asarray(dates >= pd.Timestamp(settings.start))
            if not keep.any():
                raise ValueError("no bars to backtest (no shared dates, or start after the last "
                                 "bar)")
            out = kernel.stats_table(len(members))
            part = wants if len(members) == len(block) else wants[members]
            bars = [arrays[k] for k in OHLC]
            if not keep.all():
                part = np.ascontiguousarray(part[:, keep])
                bars = [np.ascontiguousarray(a[keep]) for a in bars]
            shared.simulate_grid(*bars, part, settings.rules, out)
            stats[members] = out
            cash[members] = settings.cash
        table = pd.concat([pd.DataFrame(block, columns=list(grid)), _table(stats, cash)], axis=1)
        parts.append(_keep(table, sort, top))
    return _keep(pd.concat(parts, ignore_index=True), sort, top).reset_index(drop=True)


def _table(rows: np.ndarray, cash: np.ndarray) -> pd.DataFrame:
    """The sweep's metrics.KEYS columns from the kernel's per-combination statistics."""
    return pd.DataFrame(_columns(rows, cash))


def _columns(stats: np.ndarray, cash: np.ndarray) -> dict[str, np.ndarray]:
    """metrics.KEYS (in order) from the kernel's per-combination statistics."""
    out = curve_metrics(stats, cash)
    out.update(metrics.trade_stats_from_sums(stats["trades_closed"], stats["trades_won"],
                                             stats["pnl_sum"], stats["pnl_squares"],
                                             stats["gross_profit"], stats["gross_loss"]))
    out["trades_closed"] = stats["trades_closed"].astype(int)
    out["trades_open"] = stats["trades_open"].astype(int)
    out["orders_rejected"] = stats["orders_rejected"].astype(int)
    out["bankrupt"] = stats["bankrupt"].astype(bool)
    return {k: out[k] for k in metrics.KEYS}


def run_many(strategy: StrategyLike, prices: Mapping[str, pd.DataFrame], **params: Any
             ) -> pd.DataFrame:
    """`run` on each symbol's own account (not shared cash: see run_portfolio), metrics only:
    one row per symbol (metrics.KEYS), each equal to `run(strategy, prices[symbol], **params)`.

    The built-in SMA, EMA and breakout without `start` run batched: one compiled parallel call
    per `CHUNK` symbols reads each symbol's prices in place (no copy of an all-float frame),
    checks them (engine.checked's rules), computes the indicators and targets and simulates
    (fused.run_blocks); symbols may differ in length. Anything else runs symbol by symbol:
    `checked`, the strategy's targets, the kernel.

    Measured by `make bench` (2-core AMD EPYC, load 1.0-1.1, SMA 10/30 on 5,000 bars a symbol):
    500 symbols 27 ms on one core (NUMBA_NUM_THREADS=1), 17 ms on both; 5,000 symbols 0.25 /
    0.15 s; under 1 MB of memory beyond the prices (docs/speed.md).
    """
    from algotrading.backtest import kernel

    settings_, own = split_params(params)
    settings = Settings(**settings_)
    symbols = list(prices)
    strat = strategy_of(strategy)
    full = strat.check(own) if strat else own  # once, not per symbol
    lookback = max((full[k] for k, p in strat.params.items() if p.lookback), default=0) \
        if strat else 0
    out = kernel.stats_table(len(symbols))
    kind = _fusable(strat, {}) if strat is not None and settings.start is None else None
    frames = [prices[s] for s in symbols]
    todo = _batched(kind, frames, full, lookback, settings, out) if kind else None
    _each(strategy, frames, symbols, range(len(symbols)) if todo is None else todo, full,
          lookback, settings, out)
    return _table(out, np.full(len(symbols), settings.cash)).set_index(
        pd.Index(symbols, name="symbol"))


CHUNK = 256  # symbols per compiled call of run_many's batched path: bounds the blocks it holds


def _batched(kind: str, frames: list[pd.DataFrame], full: dict[str, Any], lookback: int,
             settings: Settings, out: np.ndarray) -> list[int] | None:
    """run_many's rows of the built-in `kind` into `out`: at most CHUNK symbols at a time, each
    read in place (engine.block) and run through fused.run_blocks. Returns the symbols left to
    `_each` (those whose prices broke a rule, in order: its `checked` names the first bad bar),
    or None, having run nothing, when a frame fails a check before any run (then `_each` runs
    them all and raises the first error in symbol order, as symbol by symbol)."""
    from algotrading.backtest import fused

    for i, frame in enumerate(frames):
        if not _plain(frame):
            try:
                frames[i] = checked(frame)[0]  # e.g. capitalised names: read as checked reads it
            except DataError:
                return None
        if lookback >= len(frames[i]):
            return None
    if kind == "breakout":
        a, b, x, y = full["period"], 0, full["go_long"], full["go_short"]
    else:
        a, b, x, y = full["fast_period"], full["slow_period"], full["long_only"], False
    bad: list[int] = []
    for first in range(0, len(frames), CHUNK):
        part = range(first, min(first + CHUNK, len(frames)))
        blocks, rows = zip(*(block(frames[i]) for i in part), strict=True)
        ok = np.empty(len(part), np.bool_)
        fused.run_blocks(fused.KINDS[kind], *fused.addresses(blocks), np.array(rows, np.int64),
                         int(a), int(b), bool(x), bool(y), settings.rules, out,
                         np.arange(part.start, part.stop), ok)  # `blocks` alive till it returns
        bad.extend(part[j] for j in np.flatnonzero(~ok).tolist())
    return bad


def _plain(frame: Any) -> bool:
    """A frame `checked` takes as it is, by its layout (a DataFrame with one each of open, high,
    low, close and sorted unique dates): its prices are checked in the batch."""
    if type(frame) is not pd.DataFrame:
        return False
    index, columns = frame.index, frame.columns
    if not (isinstance(index, pd.DatetimeIndex) and index.is_monotonic_increasing
            and index.is_unique):
        return False
    try:
        return all(isinstance(columns.get_loc(k), int | np.integer) for k in OHLC)
    except KeyError:
        return False


def _each(strategy: StrategyLike, frames: list[pd.DataFrame], symbols: list[str],
          rows: Iterable[int], full: dict[str, Any], lookback: int, settings: Settings,
          out: np.ndarray) -> None:
    """run_many's rows, symbol by symbol: `checked` (DataError names the symbol), the
    strategy's targets (its `grid` for one combination), then the kernel."""
    from algotrading.backtest import kernel

    strat = strategy_of(strategy)
    start = None if settings.start is None else pd.Timestamp(settings.start)
    for i in rows:
        symbol = symbols[i]
        try:
            frame, arrays = checked(frames[i])
        except DataError as e:
            raise DataError(e.origin, e.rule, sym=symbol, where=e.where) from None
        if strat is None:
            want = resolve(strategy, frame, full)
        elif lookback >= len(frame):
            raise ValueError(f"{symbol}: a lookback of {lookback} needs more than its "
                             f"{len(frame)} bars")
        else:
            want = strat.grid(frame, [full])[:, 0]
        if start is not None:
            keep = np.asarray(frame.index >= start)
            want, arrays = want[keep], tuple(a[keep] for a in arrays)
        if len(want) == 0:
            raise ValueError(f"{symbol}: no bars to backtest (start after the last bar)")
        kernel.simulate_many(kernel.Bars(*arrays), np.ascontiguousarray(want[None, :], dtype=float),
                             settings.rules, out[i:i + 1])
