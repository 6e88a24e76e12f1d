"""The research protocol a strategy notebook follows, so each notebook is parameters, a few calls
and prose, and every strategy (rules, forecasts, RL policies) is judged the same way:

1. `Study(strategy, prices, train_end, validation_end, rule, costs)`: chronological, disjoint
   train / validation / test periods (`periods()` shows them);
2. `test_run()`: the rule on the test period with and without costs, beside buy-and-hold;
3. `choose(grid)`: sweep the grid on train, pick the best `metric` there, check the same grid on
   validation, and the choice on test; how much of the best train score luck explains (deflated
   Sharpe ratio) and whether the choice sits on the grid's edge;
4. `walk_forward(grid)`: re-choose on rolling windows over the whole data and stitch the
   out-of-sample equity beside buy-and-hold;
5. `conclusion()`: what the numbers say, in sentences computed from them; `record(name)` saves the
   key results (and the test-period curves and trades the report draws).

`strategy` is anything `backtest.run` takes: a registered name, a Strategy, your own function
`f(prices, period=14, ...) -> positions` (its keyword parameters can be swept by name), or a
"file.py:function" spec. The study is named after it (`name` overrides). Windows follow the
backtest warm-up convention: indicators see the history before a period, never a bar after it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from algotrading import backtest, metrics, plots
from algotrading.backtest import Result
from algotrading.params import CASH
from algotrading.strategies import Strategy, get

EULER_GAMMA = 0.5772156649015329
PERIODS = ("train", "validation", "test")


def grid_range(first: int | float, last: int | float, step: int | float = 1) -> list:
    """The inclusive range a parameters cell writes as `[first, last, step]`."""
    count = int(round((last - first) / step)) + 1
    return [first + i * step for i in range(count)]


@dataclass
class TestRun:
    """The rule on the test period: `with_costs`, `no_costs`, buy-and-hold's equity `hold`, and
    `table` (one row each, the metrics a reader compares first)."""

    with_costs: Result
    no_costs: Result
    hold: pd.Series
    table: pd.DataFrame


@dataclass
class Choice:
    """A parameter choice made on train: the sweep `train` and `validation` tables (with
    buy-and-hold columns), the `chosen` parameters, `table` (the choice on every period beside
    buy-and-hold), `edges` (chosen values on the grid's edge) and `luck` (deflated Sharpe)."""

    metric: str
    grid: dict[str, list]
    train: pd.DataFrame
    validation: pd.DataFrame
    chosen: dict[str, Any]
    runs: dict[str, Result]
    table: pd.DataFrame
    edges: list[str]
    luck: dict[str, float]

    def top(self, n: int = 10) -> pd.DataFrame:
        """The n best combinations on train with their validation score and buy-and-hold's."""
        keys = list(self.grid)
        best = self.train.nlargest(n, self.metric)[keys + [self.metric, f"hold_{self.metric}"]]
        val = self.validation[keys + [self.metric, f"hold_{self.metric}"]]
        out = best.merge(val, on=keys, how="left", suffixes=("", "_validation")).set_index(best.index)
        return out.rename(columns={self.metric: f"{self.metric}_train",
                                   f"hold_{self.metric}": f"hold_{self.metric}_train"})

    def heatmaps(self, x: str, y: str) -> Figure:
        """The metric over the (x, y) grid on train and on validation, the choice circled."""
        return plots.sweep_heatmaps({"train (in-sample)": self.train,
                                     "validation (out-of-sample)": self.validation},
                                    x, y, self.metric, self.chosen)


@dataclass
class WalkForward:
    """Walk-forward windows (`windows`: dates, chosen parameters, in-sample score, out-of-sample
    metrics and buy-and-hold's), the stitched out-of-sample `equity`, buy-and-hold's `hold` over
    the same days, and `table` comparing the two."""

    windows: pd.DataFrame
    equity: pd.Series
    hold: pd.Series
    table: pd.DataFrame

    def overview(self, digits: int = 3) -> pd.DataFrame:
        """One row per window: its test dates, the choice, the in-sample score, and the
        out-of-sample Sharpe and return beside buy-and-hold's."""
        keys = [c for c in self.windows.columns if c.startswith("in_sample_")]
        params = list(self.windows.columns[4:self.windows.columns.get_loc(keys[0])])
        shown = [*keys, "sharpe", "hold_sharpe", "total_return", "hold_total_return"]
        return self.windows[["test_start", "test_end", *params, *shown, "trades_closed"]].round(
            dict.fromkeys(shown, digits))

    def chart(self, title: str = "") -> Figure:
        marks = list(pd.to_datetime(self.windows["test_start"]))[1:]
        return plots.equity_and_drawdown({"walk-forward (out-of-sample)": self.equity,
                                          "buy and hold": self.hold}, title, marks=marks)


@dataclass
class Study:
    """One strategy on one symbol through the protocol; each step's result is kept for the
    conclusion and the record. `rule` holds the strategy's parameters and any engine settings
    (sizing, stops); `costs` the commission and slippage the main results carry."""

    strategy: Any
    prices: pd.DataFrame
    train_end: str
    validation_end: str
    rule: Mapping[str, Any] = field(default_factory=dict)
    costs: Mapping[str, Any] = field(default_factory=dict)
    symbol: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.bounds = backtest.periods(self.prices.index, self.train_end, self.validation_end)
        self.name = self.name or strategy_name(self.strategy)
        self.test: TestRun | None = None
        self.choice: Choice | None = None
        self.walk: WalkForward | None = None

    @property
    def cash(self) -> float:
        """Starting cash of every run (the engine's default unless the rule sets `cash`)."""
        return float(self.rule.get("cash", CASH))

    # -- 1. periods -------------------------------------------------------------------------------
    def periods(self) -> pd.DataFrame:
        """First and last bar and the number of bars of each period."""
        rows = {}
        for name, (s, e) in self.bounds.items():
            days = self.prices.loc[s:e].index
            rows[name] = {"first": days[0].date(), "last": days[-1].date(), "bars": len(days)}
        return pd.DataFrame(rows).T

    def run(self, part: str, /, **params: Any) -> Result:
        """Backtest on one period, "train", "validation" or "test" (indicators see the history
        before it, never a bar after)."""
        return backtest.run_period(self.strategy, self.prices, self.bounds[part], **params)

    # -- 2. the rule on the test period -----------------------------------------------------------
    def test_run(self) -> TestRun:
        """The rule on the test period with and without costs, beside buy-and-hold."""
        paid = self.run("test", **self.rule, **self.costs)
        free = self.run("test", **self.rule)
        start, end = self.bounds["test"]
        hold = plots.hold_equity(self.prices.loc[start:end, "close"], self.cash)
        table = metrics.compare({"with costs": paid, "no costs": free})
        self.test = TestRun(paid, free, hold, table)
        return self.test

    def chart(self, lines: Mapping[str, pd.Series] | None = None, **kwargs: Any) -> Figure:
        """The test run with costs: price, trades, equity and drawdown against buy-and-hold."""
        run = self.test or self.test_run()
        start, end = self.bounds["test"]
        title = kwargs.pop("title", f"{self.symbol} {self.name}: test period, with costs".strip())
        shown = {k: v.loc[start:end] for k, v in (lines or {}).items()}
        return plots.result_chart(run.with_costs, self.prices.loc[start:end], shown, title, **kwargs)

    # -- 3. choosing parameters on train ----------------------------------------------------------
    def fixed(self, grid: Mapping[str, Iterable[Any]]) -> dict[str, Any]:
        """The rule's parameters the grid does not sweep, plus the costs."""
        return {**{k: v for k, v in self.rule.items() if k not in grid}, **self.costs}

    def choose(self, grid: Mapping[str, Iterable[Any]], metric: str = "sharpe") -> Choice:
        """Sweep `grid` on train and validation (with costs), choose the best `metric` on train,
        and run the choice on every period beside buy-and-hold."""
        grid = {k: list(v) for k, v in grid.items()}
        fixed = self.fixed(grid)
        tables = {}
        for period in ("train", "validation"):
            start, end = self.bounds[period]
            table = backtest.sweep(self.strategy, self.prices.loc[:end], grid, start=start,
                                   progress=False, **fixed)
            hold = metrics.benchmark(self.prices.loc[start:end, "close"].to_numpy(float), self.cash)
            if period == "train":
                chosen = typed(backtest.best(table, metric), grid)
            tables[period] = table.assign(**{f"hold_{metric}": hold[metric],
                                             "hold_total_return": hold["total_return"]})
        runs = {period: self.run(period, **fixed, **chosen) for period in PERIODS}
        table = pd.DataFrame({
            col: pd.Series(r.metrics if who == "strategy" else r.metrics["benchmark"])
            .reindex(metrics.SHOWN)
            for period, r in runs.items()
            for who, col in (("strategy", period), ("hold", f"{period} buy-and-hold"))
        }).astype(float)
        luck = deflated_sharpe(tables["train"]["sharpe"], runs["train"])
        self.choice = Choice(metric, grid, tables["train"], tables["validation"], chosen, runs,
                             table, edges(chosen, grid), luck)
        return self.choice

    # -- 4. walk-forward --------------------------------------------------------------------------
    def walk_forward(self, grid: Mapping[str, Iterable[Any]], train_bars: int = 756,
                     test_bars: int = 252, anchored: bool = False, metric: str = "sharpe"
                     ) -> WalkForward:
        """Re-choose on each training window, trade the choice on the next `test_bars` bars, over
        the whole data; stitch the out-of-sample equity (each window starts flat from the
        previous window's end value; a position open at a window's end is marked to its last
        close, and the next window starts flat without paying to close it)."""
        grid = {k: list(v) for k, v in grid.items()}
        fixed = self.fixed(grid)
        table = backtest.walk_forward(self.strategy, self.prices, grid, train_bars=train_bars,
                                      test_bars=test_bars, anchored=anchored, metric=metric,
                                      progress=False, **fixed)
        for k in grid:
            table[k] = [typed({k: v}, grid)[k] for v in table[k]]
        parts, holds = [], []
        for _, row in table.iterrows():
            r = backtest.run_period(self.strategy, self.prices, (row["test_start"], row["test_end"]),
                                    **fixed, **{k: row[k] for k in grid})
            parts.append(pd.Series(metrics.returns(r.equity.to_numpy(), self.cash), r.equity.index))
            holds.append(r.metrics["benchmark"])
        table["hold_sharpe"] = [h["sharpe"] for h in holds]
        table["hold_total_return"] = [h["total_return"] for h in holds]
        equity = self.cash * (1 + pd.concat(parts)).cumprod()
        hold = plots.hold_equity(self.prices["close"].loc[equity.index[0]:], self.cash)
        summary = pd.DataFrame({"walk-forward": _curve_metrics(equity, self.cash),
                                "buy and hold": _curve_metrics(hold, self.cash)}).T
        self.walk = WalkForward(table, equity, hold, summary)
        return self.walk

    # -- 5. conclusion and record -----------------------------------------------------------------
    def conclusion(self) -> str:
        """What the numbers say, one sentence per step that has run."""
        return conclusion(self)

    def summary(self) -> dict[str, Any]:
        """The key results as plain values (what `record` saves)."""
        out: dict[str, Any] = {"symbol": self.symbol, "strategy": self.name, "rule": dict(self.rule),
                               "costs": dict(self.costs),
                               "periods": {k: [str(a.date()), str(b.date())]
                                           for k, (a, b) in self.bounds.items()}}
        if self.test is not None:
            t = self.test.table
            out["test"] = {"with_costs": t.loc["with costs"].to_dict(),
                           "no_costs": t.loc["no costs"].to_dict(),
                           "buy_and_hold": t.loc["buy and hold"].to_dict()}
        if self.choice is not None:
            c = self.choice
            out["sweep"] = {
                "combinations": len(c.train), "metric": c.metric, "chosen": c.chosen,
                "on_edge": c.edges,
                **{f"{c.metric}_{p}": c.table.loc[c.metric, p] for p in PERIODS},
                **{f"hold_{c.metric}_{p}": c.table.loc[c.metric, f"{p} buy-and-hold"] for p in PERIODS},
                f"median_{c.metric}_train": float(c.train[c.metric].median()),
                f"median_{c.metric}_validation": float(c.validation[c.metric].median()),
                "deflated_sharpe": c.luck,
            }
        if self.walk is not None:
            w = self.walk
            out["walk_forward"] = {
                "windows": len(w.windows), "first": str(w.equity.index[0].date()),
                "last": str(w.equity.index[-1].date()),
                "mean_oos_sharpe": float(w.windows["sharpe"].mean()),
                "oos": w.table.loc["walk-forward"].to_dict(),
                "buy_and_hold": w.table.loc["buy and hold"].to_dict(),
            }
        out["conclusion"] = self.conclusion()
        return out

    def record(self, name: str) -> dict[str, Any]:
        """Save `summary()` and the test-period curves and trades (for report.html) through
        `runs.record`; returns the summary."""
        from algotrading.runs import record

        tables = {}
        if self.test is not None:
            t = self.test
            tables["equity"] = pd.DataFrame({"strategy": t.with_costs.equity,
                                             "no_costs": t.no_costs.equity, "buy_and_hold": t.hold})
            tables["trades"] = t.with_costs.trades
        return record(name, self.summary(), tables)


def strategy_name(strategy: Any) -> str:
    """What the study calls `strategy`: a built-in's name, your function's name ("rsi"), else
    "strategy" (a lambda, or precomputed positions)."""
    strat = _strategy(strategy)
    return strat.name if strat is not None and strat.name.isidentifier() else "strategy"


def _strategy(strategy: Any) -> Strategy | None:
    if not (isinstance(strategy, str | Strategy) or callable(strategy)):
        return None
    try:
        return get(strategy)
    except ValueError:
        return None


def typed(params: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Parameters back in their grid's types (a sweep table's row turns 50 into 50.0)."""
    out = {}
    for k, v in params.items():
        kind = type(grid[k][0]) if k in grid and len(grid[k]) else None
        out[k] = kind(v) if kind in (int, float, bool) else v
    return out


def edges(chosen: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """Names of numeric parameters whose chosen value is the grid's smallest or largest: the best
    value may lie outside the grid, so the grid should be widened before trusting the choice."""
    out = []
    for k, values in grid.items():
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) > 2 and chosen[k] in (min(numbers), max(numbers)):
            out.append(k)
    return out


def deflated_sharpe(trial_sharpes: pd.Series | np.ndarray, chosen: Result) -> dict[str, float]:
    """Bailey & Lopez de Prado's deflated Sharpe ratio of the chosen run among all trials.

    `trial_sharpes` are the annualised Sharpe ratios of every combination tried (the sweep on
    train), `chosen` the chosen combination's run on train. The benchmark SR0 is the Sharpe the
    best of N trials would show with no skill at all (expected maximum of N draws with the
    trials' variance); DSR is the probability that the chosen run's true Sharpe exceeds SR0,
    given its track length, skewness and kurtosis. Trials are counted as independent, which
    overstates N for neighbouring grid points and so makes the guard stricter, not looser.
    Returns annualised `sharpe` and `expected_max_sharpe` (SR0), `trials` and `dsr` (0..1).
    """
    year = math.sqrt(metrics.YEAR)
    srs = np.asarray(trial_sharpes, float)
    srs = srs[np.isfinite(srs)] / year
    n = len(srs)
    rets = metrics.returns(chosen.equity.to_numpy(float), float(chosen.params.get("cash", CASH)))
    sr = float(np.mean(rets) / np.std(rets, ddof=1)) if np.std(rets) > 0 else float("nan")
    if n > 1:
        sr0 = float(np.std(srs, ddof=1) * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n)
                                           + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))))
    else:
        sr0 = 0.0
    skew = float(stats.skew(rets))
    kurt = float(stats.kurtosis(rets, fisher=False))
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr * sr
    ok = math.isfinite(sr) and denom > 0
    dsr = float(stats.norm.cdf((sr - sr0) * math.sqrt(len(rets) - 1) / math.sqrt(denom))) if ok \
        else float("nan")
    return {"sharpe": sr * year, "expected_max_sharpe": sr0 * year, "trials": n, "dsr": dsr}


def _curve_metrics(equity: pd.Series, cash: float) -> dict[str, float]:
    out = metrics.equity_metrics(equity.to_numpy(float), cash, np.ones(len(equity)), 0.0)
    return {k: float(out[k]) for k in ("final_value", "total_return", "cagr", "sharpe", "sortino",
                                       "max_drawdown", "calmar")}


def _num(value: Any, fmt: str) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(value):
        return "n/a"
    text = format(value, fmt)
    return text[1:] if text.startswith("-") and not text.strip("-0.,%") else text  # no "-0.0"


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _who(study: Study) -> str:
    """"sma with fast_period=50, slow_period=200 and costs"; without a rule, the strategy's
    defaults: "rsi with its defaults (period=14, low=30, high=70) and costs"; without costs,
    "... and no costs"."""
    paid = "and costs" if study.costs else "and no costs"
    if study.rule:
        return f"{study.name} with {_params(study.rule)} {paid}"
    strat = _strategy(study.strategy)
    try:
        defaults = strat.complete({}) if strat is not None else {}
    except ValueError:
        defaults = {}
    if defaults:
        return f"{study.name} with its defaults ({_params(defaults)}) {paid}"
    return f"{study.name} with {'costs' if study.costs else 'no costs'}"


def conclusion(study: Study) -> str:
    """Sentences computed from a study's numbers: the test-period verdict against buy-and-hold,
    the cost of trading, what survived from train to validation, luck, grid edges, walk-forward."""
    lines = []
    if study.test is not None:
        t = study.test.table
        s, h, f = t.loc["with costs"], t.loc["buy and hold"], t.loc["no costs"]
        days = study.test.with_costs.equity.index
        start, end = days[0].date(), days[-1].date()
        better_return = s["total_return"] > h["total_return"]
        better_sharpe = s["sharpe"] > h["sharpe"]
        verdict = ("beat buy-and-hold on return and on Sharpe" if better_return and better_sharpe
                   else "beat buy-and-hold on Sharpe but not on return" if better_sharpe
                   else "beat buy-and-hold on return but not on Sharpe" if better_return
                   else "did not beat buy-and-hold")
        lines.append(
            f"On the test period ({start}..{end}) {_who(study)} returned "
            f"{_num(s['total_return'], '.1%')} (Sharpe {_num(s['sharpe'], '.2f')}, max "
            f"drawdown {_num(s['max_drawdown'], '.1%')}, {int(s['trades_closed'])} closed trades) "
            f"against buy-and-hold's {_num(h['total_return'], '.1%')} (Sharpe "
            f"{_num(h['sharpe'], '.2f')}, max drawdown {_num(h['max_drawdown'], '.1%')}): it "
            f"{verdict}." + (f" Costs took {_num(100 * (f['total_return'] - s['total_return']), '.1f')} "
                             "percentage points of return." if study.costs else ""))
    if study.choice is not None:
        c, m = study.choice, study.choice.metric
        tab = c.table
        lines.append(
            f"The best {m} on train among {len(c.train)} combinations, "
            f"{_num(tab.loc[m, 'train'], '.2f')} at {_params(c.chosen)}, was "
            f"{_num(tab.loc[m, 'validation'], '.2f')} on validation (buy-and-hold "
            f"{_num(tab.loc[m, 'validation buy-and-hold'], '.2f')}) and "
            f"{_num(tab.loc[m, 'test'], '.2f')} on test (buy-and-hold "
            f"{_num(tab.loc[m, 'test buy-and-hold'], '.2f')}).")
        luck = c.luck
        skill = "some evidence of skill" if luck["dsr"] >= 0.95 else "no evidence of skill"
        lines.append(
            f"Luck: the best of {luck['trials']} tries with no skill would show a Sharpe of about "
            f"{_num(luck['expected_max_sharpe'], '.2f')}; the deflated Sharpe ratio of the choice is "
            f"{_num(luck['dsr'], '.2f')} (the probability its true Sharpe beats that), {skill} "
            f"at the 0.95 level.")
        for k in c.edges:
            lines.append(f"{k}={c.chosen[k]} sits on the edge of the grid "
                         f"({min(c.grid[k])}..{max(c.grid[k])}): the best value may lie outside it.")
    if study.walk is not None:
        w = study.walk
        s, h = w.table.loc["walk-forward"], w.table.loc["buy and hold"]
        lines.append(
            f"Walk-forward ({len(w.windows)} windows, {w.equity.index[0].date()}.."
            f"{w.equity.index[-1].date()}): the stitched out-of-sample equity returned "
            f"{_num(s['total_return'], '.1%')} (Sharpe {_num(s['sharpe'], '.2f')}) against "
            f"buy-and-hold's {_num(h['total_return'], '.1%')} (Sharpe {_num(h['sharpe'], '.2f')}).")
    return "\n".join(lines)
