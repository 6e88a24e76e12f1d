"""The backtest engine: desired positions in, fills, cash, positions, trades and metrics out.

Semantics (see ARCHITECTURE.md "Backtest semantics"): the target decided on bar t's close is
filled at bar t+1's open (`fill="open"`, backtrader's Market order) or at bar t's close
(`fill="close"`). Stops and targets are fractions of the entry price checked on every later bar's
high/low; a gap through the level fills at the open, and when both levels are inside one bar the
stop is assumed first. After a stop, target or `max_bars` exit the engine stays flat until the
strategy's wanted position changes. Commission (per share and bps of notional) and slippage (bps,
always against us) apply to every fill; orders are never rejected for lack of cash. A position
still open at the end is marked to the last close and reported with status "open".

Fixed-size runs without stops are computed with whole-array numpy (cash is a cumulative sum of
fill flows); fraction sizing, stops and holding limits need the bar-by-bar loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from algotrading import metrics
from algotrading.strategies import Strategy, get

StrategyLike = str | Strategy | Callable[..., Any] | pd.Series | np.ndarray


@dataclass(frozen=True)
class Settings:
    """Engine parameters (all costs default 0, as in backtrader, so results compare one to one)."""

    cash: float = 100_000.0
    size: float | None = None  # shares per unit of target; default: the strategy's (workshop's)
    fraction: float | None = None  # else: this fraction of equity per position
    whole_shares: bool = True  # round fraction-sized positions down to whole shares
    commission_per_share: float = 0.0
    commission_bps: float = 0.0
    slippage_bps: float = 0.0
    fill: str = "open"  # "open": next bar's open; "close": the decision bar's close
    stop_loss: float | None = None  # e.g. 0.05 = exit 5 % below a long's entry price
    take_profit: float | None = None
    max_bars: int | None = None  # exit once a position has been held this many bars
    risk_free: float = 0.0  # annual rate for Sharpe and Sortino
    start: str | pd.Timestamp | None = None  # trade from here; earlier bars are indicator history

    def __post_init__(self) -> None:
        if self.fill not in ("open", "close"):
            raise ValueError(f"fill must be 'open' or 'close', not {self.fill!r}")
        if self.size is not None and self.fraction is not None:
            raise ValueError("give either size (shares) or fraction (of equity), not both")

    @property
    def vectorised(self) -> bool:
        """Fixed size and no path-dependent exits: the whole-array path applies."""
        return self.fraction is None and self.stop_loss is None and self.take_profit is None \
            and self.max_bars is None


ENGINE_PARAMS = frozenset(Settings.__dataclass_fields__)


@dataclass
class Result:
    """One backtest: `metrics` (dict, with a buy-and-hold `benchmark` block), `trades` (one row per
    trade, built on first use since sweeps and walk-forward never look), `equity` (value at each
    close), `positions` (shares held at each close)."""

    metrics: dict[str, Any]
    equity: pd.Series
    positions: pd.Series | pd.DataFrame
    params: dict[str, Any]
    make_trades: Callable[[], pd.DataFrame] = field(repr=False)

    @cached_property
    def trades(self) -> pd.DataFrame:
        """entry/exit date and price, side, size, pnl, return, commission, bars held, exit reason,
        status ("closed", or "open": marked to the last close)."""
        return self.make_trades()

    def report(self) -> str:
        """The workshop's "Trade Analysis Results" block for this run."""
        return metrics.report(self.metrics)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine params, strategy params) from one keyword dict."""
    engine = {k: v for k, v in params.items() if k in ENGINE_PARAMS}
    return engine, {k: v for k, v in params.items() if k not in ENGINE_PARAMS}


def resolve(strategy: StrategyLike, prices: pd.DataFrame, params: Mapping[str, Any]) -> np.ndarray:
    """Desired positions from a strategy name/object, a callable(prices, **params) or the
    positions themselves (a Series aligned on the dates, or an array)."""
    if isinstance(strategy, str | Strategy):
        return get(strategy).targets(prices, **params)
    if callable(strategy):
        out = strategy(prices, **params)
    elif params:
        raise TypeError(f"strategy parameters {sorted(params)} given with precomputed positions")
    else:
        out = strategy
    if isinstance(out, pd.Series):
        out = out.reindex(prices.index).fillna(0.0)
    out = np.asarray(out, dtype=float)
    if out.shape != (len(prices),):
        raise ValueError(f"strategy gave {out.shape} positions for {len(prices)} bars")
    return out


def default_size(strategy: StrategyLike, settings: Settings) -> Settings:
    """Fill in the sizing: the strategy's default shares (the workshop's), else all equity."""
    if settings.size is not None or settings.fraction is not None:
        return settings
    size = get(strategy).size if isinstance(strategy, str | Strategy) else None
    return Settings(**{**settings.__dict__, "size": size, "fraction": None if size else 1.0})


def run(strategy: StrategyLike, prices: pd.DataFrame, **params: Any) -> Result:
    """Backtest `strategy` on one symbol's `prices` (DatetimeIndex; open, high, low, close).

    `params` holds engine settings (see Settings) and the strategy's own parameters.
    """
    engine, own = split_params(params)
    settings = default_size(strategy, Settings(**engine))
    targets = resolve(strategy, prices, own)
    prices, targets = window(prices, targets[:, None], settings.start)
    if len(prices) == 0:
        raise ValueError("no bars to backtest (empty prices or start after the last bar)")
    if settings.vectorised and np.isin(targets, (-1, 0, 1)).all():
        sim = fixed(prices, targets, settings)
    else:
        sim = loop(prices, targets, settings)
    return result(prices, sim, settings, {**own, **engine})


def window(prices: pd.DataFrame, targets: np.ndarray, start: Any
           ) -> tuple[pd.DataFrame, np.ndarray]:
    """Drop the history before `start`: indicators saw it, the simulation does not."""
    if start is None:
        return prices, targets
    keep = prices.index >= pd.Timestamp(start)
    return prices[keep], targets[keep]


@dataclass
class Sim:
    """Raw simulation output; rows are sweep combinations or portfolio symbols."""

    positions: np.ndarray  # (rows x bars) shares at each close
    equity: np.ndarray  # (rows x bars) for fixed(), (bars,) for loop()
    traded: np.ndarray  # (rows,) total notional traded
    trades: dict[str, np.ndarray]  # flat arrays, one entry per trade, `col` names its row


def _prices(prices: pd.DataFrame, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    close = prices["close"].to_numpy(float)
    base = prices["open"].to_numpy(float) if settings.fill == "open" else close
    return base, close


def fixed(prices: pd.DataFrame, targets: np.ndarray, settings: Settings) -> Sim:
    """Whole-array simulation of fixed-size (bars x combos) targets in {-1, 0, 1}.

    Works on (combos x bars) arrays so running sums go along contiguous memory; fills are
    sparse, so prices, costs and trades are computed only where the position changes.
    """
    base, close = _prices(prices, settings)
    size = float(settings.size)
    wanted = np.ascontiguousarray(targets.T, dtype=np.int8)
    held = wanted
    if settings.fill == "open":
        held = np.zeros_like(wanted)
        held[:, 1:] = wanted[:, :-1]
    step = np.diff(held, axis=1, prepend=np.int8(0))
    col, bar = np.nonzero(step)  # row-major: grouped by combo, in bar order
    qty = step[col, bar] * size
    px = base[bar] * (1.0 + np.sign(qty) * settings.slippage_bps / 1e4)
    per_share = settings.commission_per_share + px * settings.commission_bps / 1e4
    flow = np.zeros(held.shape)
    flow[col, bar] = qty * px + np.abs(qty) * per_share
    positions = held * size
    equity = np.cumsum(flow, axis=1)
    np.subtract(settings.cash, equity, out=equity)
    equity += positions * close
    traded = np.bincount(col, np.abs(qty) * px, minlength=held.shape[0])
    after = positions[col, bar]
    return Sim(positions, equity, traded,
               _fixed_trades(col, bar, after - qty, after, px, per_share, close))


def _fixed_trades(col: np.ndarray, bar: np.ndarray, before: np.ndarray, after: np.ndarray,
                  price: np.ndarray, per_share: np.ndarray, close: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Trades from the fills: with constant size each fill closes the trade its predecessor in the
    same row opened (a reversal both closes and opens); a row's last fill may leave one open."""
    shut = np.flatnonzero(before != 0)
    opener = shut - 1
    size = before[shut]
    closed = {
        "col": col[shut], "entry_bar": bar[opener], "exit_bar": bar[shut], "size": size,
        "entry_price": price[opener], "exit_price": price[shut],
        "commission": np.abs(size) * (per_share[opener] + per_share[shut]),
        "reason": np.full(len(shut), "signal"), "open": np.zeros(len(shut), bool),
    }
    final = np.append(col[1:] != col[:-1], True) & (after != 0)  # a row's last fill, still held
    opener = np.flatnonzero(final)
    held = {
        "col": col[opener], "entry_bar": bar[opener], "exit_bar": np.full(len(opener), len(close) - 1),
        "size": after[opener], "entry_price": price[opener],
        "exit_price": np.full(len(opener), close[-1]),
        "commission": np.abs(after[opener]) * per_share[opener],
        "reason": np.full(len(opener), "open"), "open": np.ones(len(opener), bool),
    }
    out = {k: np.concatenate([closed[k], held[k]]) for k in closed}
    out["pnl"] = out["size"] * (out["exit_price"] - out["entry_price"]) - out["commission"]
    return out


class _Book:
    """Cash, positions and open trades of the bar-by-bar loop."""

    def __init__(self, settings: Settings, cols: int):
        self.s = settings
        self.cash = settings.cash
        self.shares = [0.0] * cols
        self.traded = np.zeros(cols)
        self.open: list[dict[str, Any] | None] = [None] * cols
        self.done: list[dict[str, Any]] = []

    def fill(self, col: int, qty: float, base: float, bar: int, reason: str) -> None:
        """Execute `qty` shares at `base` (before slippage): cash, commission, trade records."""
        s = self.s
        px = base * (1.0 + np.sign(qty) * s.slippage_bps / 1e4)
        comm = abs(qty) * (s.commission_per_share + px * s.commission_bps / 1e4)
        self.cash -= qty * px + comm
        self.traded[col] += abs(qty) * px
        held = self.shares[col]
        trade = self.open[col]
        if held and np.sign(qty) != np.sign(held):  # reduce, close or reverse
            closing = min(abs(qty), abs(held))
            trade["pnl"] += closing * np.sign(held) * (px - trade["entry_price"])
            trade["commission"] += comm * closing / abs(qty)
            if closing == abs(held):
                trade.update(exit_bar=bar, exit_price=px, reason=reason, open=False)
                self.done.append(trade)
                self.open[col] = None
            comm *= 1 - closing / abs(qty)
        new = held + qty
        if new and (not held or np.sign(new) != np.sign(held)):  # a new trade opens
            self.open[col] = {"col": col, "entry_bar": bar, "entry_price": px, "size": new,
                              "pnl": 0.0, "commission": comm, "open": True}
        elif new and abs(new) > abs(held):  # add: average the entry price
            trade["entry_price"] = (trade["entry_price"] * abs(held) + px * abs(qty)) / abs(new)
            trade["size"] = new
            trade["commission"] += comm
        self.shares[col] = new

    def exit_level(self, col: int, o: float, h: float, lo: float) -> tuple[float, str] | None:
        """The stop or target hit on this bar (price, reason), stop first, gaps at the open."""
        s, trade, side = self.s, self.open[col], np.sign(self.shares[col])
        entry = trade["entry_price"]
        stop = entry * (1 - side * s.stop_loss) if s.stop_loss is not None else None
        goal = entry * (1 + side * s.take_profit) if s.take_profit is not None else None
        worst, best = (lo, h) if side > 0 else (h, lo)
        if stop is not None and side * (o - stop) <= 0:
            return o, "stop_loss"
        if goal is not None and side * (o - goal) >= 0:
            return o, "take_profit"
        if stop is not None and side * (worst - stop) <= 0:
            return stop, "stop_loss"
        if goal is not None and side * (best - goal) >= 0:
            return goal, "take_profit"
        return None


def loop(prices: pd.DataFrame | list[pd.DataFrame], targets: np.ndarray, settings: Settings) -> Sim:
    """Bar-by-bar simulation with shared cash over one or more aligned symbols (columns)."""
    frames = prices if isinstance(prices, list) else [prices]
    n, m = targets.shape
    o, h, lo, c = ([f[k].to_numpy(float).tolist() for f in frames]  # [symbol][bar]
                   for k in ("open", "high", "low", "close"))
    want = [column.tolist() for column in targets.T]
    book = _Book(settings, m)
    stops = settings.stop_loss is not None or settings.take_profit is not None
    pending: list[tuple[float, str] | None] = [None] * m
    blocked: list[float | None] = [None] * m  # target an engine exit must not re-enter
    held_for: list[float] = [0.0] * m  # the target the current position was sized for
    positions = np.zeros((n, m))
    equity = np.zeros(n)
    for t in range(n):
        for a in range(m):
            if pending[a] is not None:
                book.fill(a, pending[a][0], o[a][t], t, pending[a][1])
                pending[a] = None
            if stops and book.shares[a]:
                hit = book.exit_level(a, o[a][t], h[a][t], lo[a][t])
                if hit:
                    book.fill(a, -book.shares[a], hit[0], t, hit[1])
                    blocked[a] = want[a][t - 1] if t else None
        value = book.cash + sum(book.shares[a] * c[a][t] for a in range(m))
        for a in range(m):
            target, reason = want[a][t], "signal"
            if blocked[a] is not None and target != blocked[a]:
                blocked[a] = None
            held = book.shares[a]
            bars = t - book.open[a]["entry_bar"] + (settings.fill == "open") if held else 0
            if settings.max_bars is not None and held and bars >= settings.max_bars:
                blocked[a], reason = target, "max_bars"
            if blocked[a] is not None:
                goal = 0.0
            elif held and target == held_for[a]:
                goal = held
            else:
                goal = _shares(target, value, c[a][t], settings)
                held_for[a] = target
            if goal != held:
                if settings.fill == "close":
                    book.fill(a, goal - held, c[a][t], t, reason)
                else:
                    pending[a] = (goal - held, reason)
        positions[t] = book.shares
        equity[t] = book.cash + sum(book.shares[a] * c[a][t] for a in range(m))
    for a, trade in enumerate(book.open):
        if trade is not None:
            held = book.shares[a]
            trade.update(exit_bar=n - 1, exit_price=c[a][-1], reason="open",
                         pnl=trade["pnl"] + held * (c[a][-1] - trade["entry_price"]))
            book.done.append(trade)
    done = sorted(book.done, key=lambda tr: (tr["entry_bar"], tr["col"]))
    trades = {k: np.array([tr[k] for tr in done]) for k in
              ("col", "entry_bar", "exit_bar", "size", "entry_price", "exit_price",
               "commission", "reason", "open", "pnl")}
    trades["pnl"] = trades["pnl"] - trades["commission"] if done else trades["pnl"]
    return Sim(positions.T, equity, book.traded, trades)


def _shares(target: float, value: float, price: float, settings: Settings) -> float:
    """Shares for a target: fixed size, or a fraction of equity at the decision bar's close."""
    if settings.fraction is None:
        return target * float(settings.size)
    shares = abs(target) * settings.fraction * max(value, 0.0) / price
    return float(np.sign(target) * (np.floor(shares) if settings.whole_shares else shares))


def trade_frame(sim: Sim, frames: list[pd.DataFrame], symbols: list[str] | None = None
                ) -> pd.DataFrame:
    """The trades as a table: dates, prices, side, size, pnl, return, bars held, exit reason."""
    tr = sim.trades
    index = frames[0].index
    size = tr["size"].astype(float)
    out = pd.DataFrame({
        "entry_date": index[tr["entry_bar"].astype(int)] if len(size) else pd.DatetimeIndex([]),
        "exit_date": index[tr["exit_bar"].astype(int)] if len(size) else pd.DatetimeIndex([]),
        "side": np.where(size > 0, "long", "short"),
        "size": np.abs(size),
        "entry_price": tr["entry_price"].astype(float),
        "exit_price": tr["exit_price"].astype(float),
        "pnl": tr["pnl"].astype(float),
        "return": _trade_returns(tr),
        "commission": tr["commission"].astype(float),
        "bars_held": (tr["exit_bar"] - tr["entry_bar"]).astype(int),
        "exit_reason": tr["reason"].astype(str),
        "status": np.where(tr["open"].astype(bool), "open", "closed"),
    })
    if symbols is not None:
        out.insert(0, "symbol", [symbols[int(i)] for i in tr["col"]])
    return out


def _trade_returns(trades: dict[str, np.ndarray]) -> np.ndarray:
    """PnL over the money put in at entry (shares x entry price)."""
    cost = np.abs(trades["size"].astype(float)) * trades["entry_price"].astype(float)
    return np.divide(trades["pnl"].astype(float), cost, out=np.zeros(len(cost)), where=cost > 0)


def _stats(sim: Sim, equity: np.ndarray, positions: np.ndarray, traded: float,
           index: pd.DatetimeIndex, settings: Settings) -> dict[str, Any]:
    """metrics.summarize over the closed trades in exit order, plus the period."""
    tr = sim.trades
    closed = np.flatnonzero(~tr["open"].astype(bool))
    closed = closed[np.argsort(tr["exit_bar"][closed], kind="stable")]
    stats = metrics.summarize(equity, settings.cash, positions, traded,
                              tr["pnl"][closed].astype(float), _trade_returns(tr)[closed],
                              int(tr["open"].astype(bool).sum()), settings.risk_free)
    return stats | {"start": index[0].date().isoformat(), "end": index[-1].date().isoformat()}


def result(prices: pd.DataFrame, sim: Sim, settings: Settings, params: dict[str, Any]) -> Result:
    """Package one single-symbol simulation as a Result with metrics and benchmark."""
    values = np.asarray(sim.equity).reshape(-1, len(prices))[0]
    stats = _stats(sim, values, sim.positions[0], float(sim.traded[0]), prices.index, settings)
    stats["benchmark"] = metrics.benchmark(prices["close"].to_numpy(float), settings.cash,
                                           settings.risk_free)
    return Result(stats, pd.Series(values, index=prices.index, name="equity"),
                  pd.Series(sim.positions[0], index=prices.index, name="position"), params,
                  lambda: trade_frame(sim, [prices]))


def run_portfolio(strategy: StrategyLike, prices: Mapping[str, pd.DataFrame],
                  **params: Any) -> Result:
    """Run `strategy` on several symbols with one shared cash account, equal weight: with
    `fraction` (default 1) each position gets fraction / n_symbols of equity; with `size`, each
    gets `size` shares. Bars are the dates all symbols share."""
    engine, own = split_params(params)
    settings = Settings(**engine)
    symbols = list(prices)
    dates = functools.reduce(pd.Index.intersection, (p.index for p in prices.values())).sort_values()
    frames = [prices[s].loc[dates] for s in symbols]
    targets = np.stack([resolve(strategy, prices[s], own)[prices[s].index.isin(dates)]
                        for s in symbols], axis=1)
    if settings.size is None:
        share = (settings.fraction if settings.fraction is not None else 1.0) / len(symbols)
        settings = Settings(**{**settings.__dict__, "fraction": share})
    keep = np.ones(len(dates), bool) if settings.start is None else dates >= pd.Timestamp(
        settings.start)
    frames, targets = [f[keep] for f in frames], targets[keep]
    sim = loop(frames, targets, settings)
    index = frames[0].index
    stats = _stats(sim, sim.equity, sim.positions.any(axis=0), float(sim.traded.sum()), index,
                   settings)
    closes = np.stack([f["close"].to_numpy(float) for f in frames], axis=1)
    stats["benchmark"] = metrics.benchmark((closes / closes[0]).mean(axis=1), settings.cash,
                                           settings.risk_free)
    return Result(stats, pd.Series(sim.equity, index=index, name="equity"),
                  pd.DataFrame(sim.positions.T, index=index, columns=symbols), {**own, **engine},
                  lambda: trade_frame(sim, frames, symbols))
