"""The backtest engine: desired positions in, fills, cash, positions, trades and metrics out.

Semantics (docs/backtests.md; the fill, cost, sizing, buying-power, stop and
bankruptcy rules are the Broker's, see broker.py and ARCHITECTURE.md "Where the trading rules live"):
- The target decided on bar t's close fills at bar t+1's open (`fill="open"`, backtrader's
  Market order) or at bar t's close (`fill="close"`).
- Sizing is all-in by default (`fraction=1.0` of equity at the fill, whole shares, as
  backtesting.py and vectorbt's `size=inf`); `size=N` trades N shares per unit of target (the
  workshop's fixed counts, used by reproductions and the backtrader cross-checks).
- No order needs more than equity x `leverage` (default 1: no margin); one that would is rejected
  and counted in `orders_rejected`. Equity <= 0 stops trading and sets `bankrupt`; ratio metrics
  are then not computed.
- A position still open at the end is marked to the last close and reported as "open".

Paths: `run` drives the Broker bar by bar (no compile step: a one-off run or the CLI starts at
once); batches (`sweep`, `run_many`, `scenarios.run`) use the compiled kernel (kernel.py), and
`run_portfolio` the compiled shared-cash loop (shared.py; `loop` drives the Broker over the same
symbols as its reference). All decide every size, cost, fill and exit with the same functions
(`algotrading.rules`), and tests/parity holds them to each other trade for trade.

Building blocks for such batch paths (public, used by sweep.py and scenarios.py): `split_params`
(engine settings apart from strategy parameters), `checked` (the validated frame and its OHLC
arrays), `resolve` (desired positions from any StrategyLike), `ohlc`, and `curve_metrics` (the
equity-curve metrics from the kernel's statistics); `Settings.rules` is what the kernel reads.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from algotrading import metrics
from algotrading.backtest.broker import Broker
from algotrading.backtest.settings import ENGINE_PARAMS, Settings
from algotrading.rules import REASONS
from algotrading.schema import DataError
from algotrading.strategies import Strategy, get, positions

if TYPE_CHECKING:  # imported where used: numba only loads for a portfolio, not for `run` or the CLI
    from algotrading.backtest.shared import Run

StrategyLike = str | Strategy | Callable[..., Any] | pd.Series | np.ndarray
TRADE_KEYS = ("col", "entry_bar", "exit_bar", "size", "entry_price", "exit_price", "commission",
              "reason", "open", "pnl")


@dataclass
class Result:
    """One backtest: `metrics` (dict, with a buy-and-hold `benchmark` block), `trades` (one row per
    trade, built on first use since sweeps and walk-forward never look), `equity` (value at each
    close), `positions` (shares held at each close), `prices` (the bars it ran on, so `plot()`
    needs nothing else). Plain data, so it pickles."""

    metrics: dict[str, Any]
    equity: pd.Series
    positions: pd.Series | pd.DataFrame
    params: dict[str, Any]
    fills: dict[str, np.ndarray] = field(repr=False)  # the raw trade arrays (see TRADE_KEYS)
    symbols: list[str] | None = field(default=None, repr=False)
    prices: pd.DataFrame | None = field(default=None, repr=False)

    @cached_property
    def trades(self) -> pd.DataFrame:
        """entry/exit date and price, side, size, pnl, return, commission, bars held, exit reason,
        status ("closed", or "open": marked to the last close)."""
        return trade_frame(self.fills, self.equity.index, self.symbols)

    def report(self) -> str:
        """The workshop's "Trade Analysis Results" block for this run."""
        return metrics.report(self.metrics)

    def plot(self, **kwargs: Any) -> Any:
        """Price, trades, equity and drawdown in one matplotlib figure, e.g. `result.plot()` or
        `result.plot(lines={"sma 50": ...}, start="2018")` (see algotrading.plots.result_chart)."""
        from algotrading.plots import result_chart

        if self.prices is None and kwargs.get("prices") is None:
            raise ValueError("plot() draws one symbol's run; for a portfolio, plot each symbol's "
                             "run or the equity (result.equity.plot())")
        return result_chart(self, **kwargs)

    def __repr__(self) -> str:
        m, b = self.metrics, self.metrics.get("benchmark", {})

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:+.1%}"

        def num(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        flags = " BANKRUPT" if m.get("bankrupt") else ""
        return (f"Result({params or 'defaults'}; {m['start']}..{m['end']}: final "
                f"{m['final_value']:,.0f} ({pct(m['total_return'])}), sharpe {num(m['sharpe'])}, "
                f"max drawdown {m['max_drawdown']:.1%}, gross exposure {m['gross_exposure']:.2f}, "
                f"{m['trades_closed']} closed + {m['trades_open']} open trades{flags}; "
                f"buy and hold {b.get('final_value', float('nan')):,.0f} "
                f"({pct(b.get('total_return'))}), sharpe {num(b.get('sharpe'))})")


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine params, strategy params) from one keyword dict."""
    engine = {k: v for k, v in params.items() if k in ENGINE_PARAMS}
    return engine, {k: v for k, v in params.items() if k not in ENGINE_PARAMS}


OHLC = ("open", "high", "low", "close")


def check_prices(prices: pd.DataFrame) -> pd.DataFrame:
    """The price frame the engine accepts, or DataError naming the row and rule: a sorted, unique
    DatetimeIndex and finite open/high/low/close > 0 with low <= open, close <= high.
    Capitalised column names (Open, High, ...) are accepted."""
    return checked(prices)[0]


def checked(prices: pd.DataFrame) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
    """`check_prices` and the checked open/high/low/close arrays (read once)."""
    if not isinstance(prices, pd.DataFrame):
        raise DataError("prices", f"want a DataFrame, got {type(prices).__name__}")
    if not all(k in prices.columns for k in OHLC):
        lower = {str(c).lower(): c for c in prices.columns}
        if not set(OHLC) <= set(lower) or len(lower) < len(prices.columns):
            raise DataError("prices", f"need columns open, high, low, close; got {list(prices.columns)}")
        prices = prices.rename(columns={c: str(c).lower() for c in prices.columns})
    for k in OHLC:
        if not isinstance(prices.columns.get_loc(k), int | np.integer):
            raise DataError("prices", f"column {k!r} appears more than once")
    index = prices.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError("prices", f"the index must be a DatetimeIndex, not {type(index).__name__}")
    if not (index.is_monotonic_increasing and index.is_unique):  # both cached by pandas
        steps = np.diff(index.asi8)
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        rule = "duplicate date" if steps[i - 1] == 0 else "dates not in increasing order"
        raise DataError("prices", rule, where=f"row {i + 1} ({index[i].date()})")
    arrays = o, h, lo, c = ohlc(prices)
    with np.errstate(invalid="ignore"):
        # The common case in few passes (NaN fails every comparison, and 0 < low <= open, close
        # <= high < inf leaves every price finite and positive); else find the first bad row.
        if (lo.min(initial=np.inf) > 0 and h.max(initial=0.0) < np.inf and (np.minimum(o, c) >= lo).all()
                and (np.maximum(o, c) <= h).all()):
            return prices, arrays
        checks = (
            (~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)),
             "open/high/low/close must be finite numbers"),
            ((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "prices must be > 0"),
            (h < lo, "high < low"),
            ((lo > np.minimum(o, c)) | (h < np.maximum(o, c)), "open/close outside low..high"),
        )
    for bad, rule in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError("prices", rule, where=f"row {i + 1} ({index[i].date()})")
    return prices, arrays


def strategy_of(strategy: StrategyLike) -> Strategy | None:
    """The Strategy behind a name, spec, Strategy or function (None for precomputed positions);
    a function parameter that shares an engine setting's name is refused (it could not be set)."""
    if not (isinstance(strategy, str | Strategy) or callable(strategy)):
        return None
    strat = get(strategy)
    if strat.function is not None:
        clash = [k for k in strat.params if k in ENGINE_PARAMS]
        if clash:
            raise ValueError(f"{strat.owner}: parameter {clash[0]!r} is the name of an engine "
                             "setting; rename it in the function")
    return strat


def resolve(strategy: StrategyLike, prices: pd.DataFrame, params: Mapping[str, Any]) -> np.ndarray:
    """Desired positions from a strategy (see `strategy_of`) or the positions themselves (a
    Series aligned on the dates, or an array)."""
    strat = strategy_of(strategy)
    if strat is not None:
        return strat.targets(prices, **params)
    if params:
        raise ValueError(f"strategy parameters {sorted(params)} given with precomputed positions")
    return positions(strategy, prices, "the positions")


def run(strategy: StrategyLike, prices: pd.DataFrame, **params: Any) -> Result:
    """Backtest `strategy` on one symbol's `prices` (DatetimeIndex; open, high, low, close).

    `strategy` is a registered name ("sma"), a Strategy, your own function
    `f(prices, **params) -> positions` (its keyword parameters are checked like the built-ins'),
    a "path/to/file.py:function" or "package.module:function" spec, or the positions themselves.
    `params` holds engine settings (see settings.SETTINGS) and the strategy's own parameters.
    """
    engine, own = split_params(params)
    settings = Settings(**engine)
    prices, arrays = checked(prices)
    targets = resolve(strategy, prices, own)
    if settings.start is not None:
        keep = np.asarray(prices.index >= pd.Timestamp(settings.start))
        prices, targets, arrays = prices[keep], targets[keep], tuple(a[keep] for a in arrays)
    if len(prices) == 0:
        raise ValueError("no bars to backtest (empty prices or start after the last bar)")
    return result(prices, loop(prices, targets[:, None], settings), settings, {**own, **engine})


@dataclass
class Sim:
    """Raw simulation output; rows are sweep combinations or portfolio symbols."""

    positions: np.ndarray  # (rows x bars) shares at each close
    equity: np.ndarray  # (bars,)
    traded: np.ndarray  # (rows,) total notional traded
    trades: dict[str, np.ndarray]  # flat arrays, one entry per trade, `col` names its row
    rejected: int = 0
    bankrupt: bool = False


def ohlc(prices: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """open, high, low, close as contiguous float64 arrays (the kernel's inputs): rows of
    `block`."""
    values, rows = block(prices)
    return tuple(values[i] for i in rows)


def block(prices: pd.DataFrame) -> tuple[np.ndarray, tuple[int, ...]]:
    """The frame's numbers as one C-contiguous float64 (columns x bars) array and the rows of
    open, high, low and close in it.

    A narrow frame of numbers (OHLCV and a few more) is read as one 2-D block (for an all-float64
    frame a view, ~1 us) rather than column by column (~12 us each): most of `run_many`'s cost
    per symbol was this, and its batched path reads each symbol's block in place. A wide frame
    is read by name (the four columns stacked), so no copy grows with its width."""
    if len(prices.columns) <= 2 * len(OHLC):
        try:
            values = prices.to_numpy(float).T
            return (np.ascontiguousarray(values),
                    tuple(int(prices.columns.get_loc(k)) for k in OHLC))
        except (TypeError, ValueError):  # a column that is not numbers (e.g. a symbol)
            pass
    return np.stack([prices[k].to_numpy(float) for k in OHLC]), (0, 1, 2, 3)


CURVE = ("final_value", "cagr", "sharpe", "sortino", "max_drawdown", "max_drawdown_money",
         "calmar", "exposure", "gross_exposure", "turnover")


def curve_metrics(stats: np.ndarray, cash: float | np.ndarray) -> dict[str, Any]:
    """metrics.equity_metrics' keys from the kernel's statistics (kernel.STATS_DTYPE records:
    one run or many)."""
    named = stats
    out = {k: named[k] for k in CURVE}
    out["pnl"] = named["final_value"] - cash
    out["total_return"] = named["final_value"] / cash - 1.0
    return out


def loop(prices: pd.DataFrame | list[pd.DataFrame], targets: np.ndarray, settings: Settings) -> Sim:
    """Bar-by-bar simulation through one Broker over one or more aligned symbols (columns)."""
    frames = prices if isinstance(prices, list) else [prices]
    n, m = targets.shape
    o, h, lo, c = (np.stack([f[k].to_numpy(float) for f in frames], axis=1).tolist()  # [bar][sym]
                   for k in ("open", "high", "low", "close"))
    want = targets.tolist()
    broker = Broker(settings, m)
    journal, submit = broker.journal, broker.submit
    held: list[list[float]] = []  # shares at each close, one list per bar (numpy at the end)
    equity = [0.0] * n
    paused = gc.isenabled()
    gc.disable()  # the loop makes small objects only; a collection pass would scan them all
    try:
        for t in range(n):
            broker.on_bar(t, o[t], h[t], lo[t])
            fills = len(journal)
            value = broker.mark(c[t])
            for a, target in enumerate(want[t]):
                submit(a, target)
            # no fill since the close was marked: cash and shares are as mark() valued them
            equity[t] = value if len(journal) == fills else broker.equity
            held.append(broker.shares[:])
    finally:
        if paused:
            gc.enable()
    positions = np.array(held, dtype=float).reshape(n, m)
    done = sorted(broker.trades(), key=lambda tr: (tr["entry_bar"], tr["col"]))
    trades = {k: np.array([tr[k] for tr in done]) for k in TRADE_KEYS}
    if not done:
        trades = {k: np.array([], dtype=object if k == "reason" else float) for k in TRADE_KEYS}
    return Sim(positions.T, np.array(equity), np.array(broker.traded), trades, broker.rejected,
               broker.bankrupt)


def trade_frame(trades: dict[str, np.ndarray], index: pd.DatetimeIndex,
                symbols: list[str] | None = None) -> pd.DataFrame:
    """The trades as a table: dates, prices, side, size, pnl, return, bars held, exit reason."""
    tr = trades
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


def _stats(sim: Sim, equity: np.ndarray, value: np.ndarray, traded: float,
           index: pd.DatetimeIndex, settings: Settings) -> dict[str, Any]:
    """metrics.summarize over the closed trades in exit order, plus the period."""
    tr = sim.trades
    closed = np.flatnonzero(~tr["open"].astype(bool))
    closed = closed[np.argsort(tr["exit_bar"][closed], kind="stable")]
    stats = metrics.summarize(equity, settings.cash, value, traded,
                              tr["pnl"][closed].astype(float), _trade_returns(tr)[closed],
                              int(tr["open"].astype(bool).sum()), settings.risk_free,
                              rejected=sim.rejected, bankrupt=sim.bankrupt)
    return stats | {"start": index[0].date().isoformat(), "end": index[-1].date().isoformat()}


def result(prices: pd.DataFrame, sim: Sim, settings: Settings, params: dict[str, Any]) -> Result:
    """Package one single-symbol simulation as a Result with metrics and benchmark."""
    close = prices["close"].to_numpy(float)
    values = sim.equity
    shares = sim.positions[0]
    stats = _stats(sim, values, shares * close, float(sim.traded[0]), prices.index, settings)
    stats["benchmark"] = metrics.benchmark(close, settings.cash, settings.risk_free)
    return Result(stats, pd.Series(values, index=prices.index, name="equity"),
                  pd.Series(shares, index=prices.index, name="position"), params, sim.trades,
                  prices=prices)


class Universe(NamedTuple):
    """A portfolio's symbols: each one's checked frame (`full`: indicators see its whole
    history), the mask of its rows on the dates all symbols share (`rows`) and its frame on those
    dates (`frames`: the bars the account trades)."""

    symbols: list[str]
    full: list[pd.DataFrame]
    rows: list[np.ndarray]
    frames: list[pd.DataFrame]


def portfolio_frames(prices: Mapping[str, pd.DataFrame]) -> Universe:
    """The checked `Universe` of a portfolio's prices (DataError naming the symbol)."""
    symbols = list(prices)
    if not symbols:
        raise ValueError("a portfolio needs at least one symbol")
    full = []
    for s in symbols:
        try:
            full.append(check_prices(prices[s]))
        except DataError as e:
            raise DataError(e.origin, e.rule, sym=s, where=e.where) from None
    dates = functools.reduce(pd.Index.intersection, (f.index for f in full))
    rows = [np.asarray(f.index.isin(dates)) for f in full]
    return Universe(symbols, full, rows, [f if keep.all() else f[keep]
                                          for f, keep in zip(full, rows, strict=True)])


def portfolio_settings(settings: Settings, symbols: int) -> Settings:
    """Equal weight: with `fraction` (default 1), each symbol gets fraction / symbols of equity."""
    if settings.size is None:
        return replace(settings, fraction=settings.fraction / symbols)
    return settings


def run_portfolio(strategy: StrategyLike, prices: Mapping[str, pd.DataFrame],
                  **params: Any) -> Result:
    """Run `strategy` on several symbols with one shared cash account, equal weight: each
    position gets fraction (default 1) / n_symbols of equity; with `size`, each gets `size`
    shares. Bars are the dates all symbols share.

    It runs the compiled shared-cash loop (shared.py: the Broker's bar cycle and rules, compiled
    once and cached on disk); `loop` (the Broker itself) is the reference tests/parity holds it
    to, trade for trade."""
    from algotrading.backtest import shared

    engine, own = split_params(params)
    settings = Settings(**engine)
    symbols, full, shared_rows, frames = portfolio_frames(prices)
    targets = np.stack([resolve(strategy, f, own)[rows]
                        for f, rows in zip(full, shared_rows, strict=True)], axis=1)
    settings = portfolio_settings(settings, len(symbols))
    dates = frames[0].index
    keep = np.ones(len(dates), bool) if settings.start is None else dates >= pd.Timestamp(
        settings.start)
    if not keep.all():
        frames, targets = [f[keep] for f in frames], targets[keep]
    if len(targets) == 0:
        raise ValueError("no bars to backtest (no shared dates, or start after the last bar)")
    run = shared.simulate_one(*(shared.prices_2d(frames, k) for k in OHLC), targets,
                              settings.rules)
    sim = portfolio_sim(run)
    index = frames[0].index
    closes = np.stack([f["close"].to_numpy(float) for f in frames], axis=1)
    gross = np.abs(sim.positions.T * closes).sum(axis=1)
    stats = _stats(sim, sim.equity, gross, float(sim.traded.sum()), index, settings)
    stats["benchmark"] = metrics.benchmark((closes / closes[0]).mean(axis=1), settings.cash,
                                           settings.risk_free)
    return Result(stats, pd.Series(sim.equity, index=index, name="equity"),
                  pd.DataFrame(sim.positions.T, index=index, columns=symbols), {**own, **engine},
                  sim.trades, symbols)


def portfolio_sim(run: Run) -> Sim:
    """A compiled portfolio run (shared.Run) in `loop`'s terms: trades as TRADE_KEYS arrays with
    the reasons named."""
    tr = run.trades
    if len(tr) == 0:
        trades = {k: np.array([], dtype=object if k == "reason" else float) for k in TRADE_KEYS}
    else:
        reason = np.array([REASONS[int(code)] for code in tr["reason"]])
        trades = {"col": tr["col"], "entry_bar": tr["entry_bar"], "exit_bar": tr["exit_bar"],
                  "size": tr["size"], "entry_price": tr["entry_price"],
                  "exit_price": tr["exit_price"], "commission": tr["commission"],
                  "reason": reason, "open": reason == "open", "pnl": tr["pnl"]}
    return Sim(run.positions.T, run.equity, run.traded, trades, int(run.stats["orders_rejected"]),
               bool(run.stats["bankrupt"]))
