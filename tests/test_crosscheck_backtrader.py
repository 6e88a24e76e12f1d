"""Cross-check the engine against backtrader 1.9.78.123 on real data.

The workshop's SMA and breakout rules are written once more as backtrader strategies (as in the
workshop's notebooks) and run on the sample (GSPC, IXIC 1999-2018) and the public INTC series,
with fixed size, market orders filled at the next bar's open, without and with commission.
We require the same trades (dates, entry prices, PnL net of commission, bars held), the same final
value to 1e-6 and the same daily Sharpe.

Conventions that make the numbers comparable, none of them loosened:
- Warm-up: backtrader calls `next` only once every indicator is defined (SMA(slow) needs
  `slow_period` bars; the breakout's `highest[-1]` is NaN on its first call so it cannot trade
  then); our strategies return 0 (flat, no decision) on those bars.
- Fills: plain Market orders (no cheat-on-open, no cheat-on-close) execute at the next bar's open,
  our `fill="open"`. An order placed on the last bar is never filled, in both.
- Returns: backtrader's SharpeRatio uses TimeReturn, which records one return per bar, the
  first one against the starting cash, and its value is marked at each close; our
  `metrics.returns` does the same, so both have N returns for N bars.
- Commission: `setcommission(commission=0.001)` is 0.1 % of notional (the broker passes
  percabs=True), i.e. our `commission_bps=10`; COMM_FIXED with stocklike=True is per share.
- Sizes are small enough that backtrader never rejects an order for margin (asserted), because
  our engine never rejects orders.
- SQN: backtrader divides by the population std (ddof=0); ours uses the sample std (ddof=1), so
  ours * sqrt(N/(N-1)) must equal backtrader's.
- Trade wins: backtrader counts pnl >= 0 as won; so do we.

backtrader runs unchanged on numpy 2.4 / pandas 3.1 through `PandasData` (no shim needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, schema, sources

pytestmark = pytest.mark.slow  # a cross-check against another engine, not a core unit test

bt = pytest.importorskip("backtrader")

PUBLIC = Path(__file__).parents[2] / "shared" / "data" / "stocks_history_target.h5"


@pytest.fixture(scope="module")
def sample() -> dict[str, pd.DataFrame]:
    batch = sources.read("sample")
    return {sym: schema.to_prices(batch.frame, sym) for sym in ("GSPC", "IXIC")}


@pytest.fixture(scope="module")
def intc() -> pd.DataFrame:
    if not PUBLIC.exists():
        pytest.skip(f"public dataset not found at {PUBLIC} (see ../shared/README.md)")
    return schema.to_prices(sources.read("public", str(PUBLIC), ["INTC"]).frame, "INTC")


class _Base(bt.Strategy):
    """Records closed trades and margin rejections."""

    def __init__(self):
        self.closed = []
        self.rejected = 0

    def notify_order(self, order):
        if order.status in (order.Margin, order.Rejected):
            self.rejected += 1

    def notify_trade(self, trade):
        if trade.isclosed:
            self.closed.append((bt.num2date(trade.dtopen), bt.num2date(trade.dtclose),
                                trade.price, trade.pnlcomm, trade.barlen))


class WorkshopSma(_Base):
    """The workshop's algo_simple_sma `next`."""

    params = {"fast_period": 9, "slow_period": 21, "size": 1000}

    def __init__(self):
        super().__init__()
        self.fast = bt.ind.SimpleMovingAverage(period=self.p.fast_period)
        self.slow = bt.ind.SimpleMovingAverage(period=self.p.slow_period)

    def next(self):
        if not self.position:
            if self.fast[0] > self.slow[0]:
                self.buy(size=self.p.size)
            else:
                self.sell(size=self.p.size)
        elif self.position.size > 0 and self.fast[0] < self.slow[0]:
            self.sell(size=2 * self.p.size)
        elif self.position.size < 0 and self.fast[0] > self.slow[0]:
            self.buy(size=2 * self.p.size)


class WorkshopEma(WorkshopSma):
    """The workshop's EMA crossover (Strategy_Kinesis_EMA_HPO): the SMA rules on EMAs."""

    params = {"fast_period": 8, "slow_period": 21, "size": 1000}

    def __init__(self):
        _Base.__init__(self)
        self.fast = bt.ind.ExponentialMovingAverage(period=self.p.fast_period)
        self.slow = bt.ind.ExponentialMovingAverage(period=self.p.slow_period)


class WorkshopBreakout(_Base):
    """The workshop's algo_daily_breakout `next`."""

    params = {"period": 9, "go_long": True, "go_short": True, "size": 1000}

    def __init__(self):
        super().__init__()
        self.highest = bt.ind.Highest(period=self.p.period)
        self.lowest = bt.ind.Lowest(period=self.p.period)

    def next(self):
        close = self.data.close[0]
        if not self.position:
            if self.p.go_long and close > self.highest[-1]:
                self.buy(size=self.p.size)
            elif self.p.go_short and close < self.lowest[-1]:
                self.sell(size=self.p.size)
        elif self.position.size > 0 and close < self.highest[-1]:
            self.close()
        elif self.position.size < 0 and close > self.lowest[-1]:
            self.close()


BT_STRATEGIES = {"sma": WorkshopSma, "ema": WorkshopEma, "breakout": WorkshopBreakout}


def run_backtrader(name: str, prices: pd.DataFrame, commission: dict, **params):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=prices, volume="vol", openinterest=None))
    cerebro.addstrategy(BT_STRATEGIES[name], **params)
    cerebro.broker.setcash(100_000.0)
    if commission:
        cerebro.broker.setcommission(**commission)
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, timeframe=bt.TimeFrame.Days, compression=1,
                        factor=252, annualize=True, riskfreerate=0.0, stddev_sample=True,
                        _name="sharpe")
    cerebro.addanalyzer(bt.analyzers.SQN, _name="sqn")
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="dd")
    strat = cerebro.run()[0]
    return cerebro.broker.getvalue(), strat


COSTS = {  # name: (backtrader setcommission kwargs, our engine params)
    "free": ({}, {}),
    "bps": ({"commission": 0.001}, {"commission_bps": 10.0}),
    "per_share": ({"commission": 0.005, "commtype": bt.CommInfoBase.COMM_FIXED,
                   "stocklike": True}, {"commission_per_share": 0.005}),
}

CASES = [  # (symbol, strategy, strategy params, size, costs)
    ("GSPC", "sma", {}, 10, "free"),
    ("GSPC", "sma", {"fast_period": 20, "slow_period": 50}, 10, "bps"),
    ("GSPC", "breakout", {}, 10, "free"),
    ("GSPC", "breakout", {"period": 20, "go_short": False}, 10, "bps"),
    ("GSPC", "ema", {}, 10, "free"),
    ("GSPC", "ema", {"fast_period": 10, "slow_period": 31}, 10, "bps"),
    ("IXIC", "sma", {}, 5, "bps"),
    ("IXIC", "ema", {"fast_period": 5, "slow_period": 25}, 5, "free"),
    ("IXIC", "breakout", {"period": 15}, 5, "free"),
    ("INTC", "sma", {}, 1000, "free"),
    ("INTC", "sma", {}, 1000, "per_share"),
    ("INTC", "ema", {}, 1000, "per_share"),
    ("INTC", "breakout", {}, 1000, "free"),
    ("INTC", "breakout", {}, 1000, "bps"),
]


@pytest.mark.parametrize(("symbol", "name", "params", "size", "costs"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_same_trades_value_and_sharpe_as_backtrader(request, symbol, name, params, size, costs):
    prices = request.getfixturevalue("intc") if symbol == "INTC" \
        else request.getfixturevalue("sample")[symbol]
    bt_costs, our_costs = COSTS[costs]
    value, strat = run_backtrader(name, prices, bt_costs, size=size, **params)
    assert strat.rejected == 0, "backtrader rejected orders; pick a smaller size"
    ours = backtest.run(name, prices, size=size, **params, **our_costs)
    m = ours.metrics

    assert m["final_value"] == pytest.approx(value, abs=1e-6)
    closed = ours.trades[ours.trades["status"] == "closed"]
    assert len(closed) == len(strat.closed) > 5
    theirs = pd.DataFrame(strat.closed, columns=["entry", "exit", "price", "pnl", "bars"])
    assert (closed["entry_date"].dt.date.to_numpy() == theirs["entry"].dt.date.to_numpy()).all()
    assert (closed["exit_date"].dt.date.to_numpy() == theirs["exit"].dt.date.to_numpy()).all()
    np.testing.assert_allclose(closed["entry_price"], theirs["price"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(closed["pnl"], theirs["pnl"], rtol=0, atol=1e-6)
    assert (closed["bars_held"].to_numpy() == theirs["bars"].to_numpy()).all()
    trades = strat.analyzers  # analyzers are checked against the same equity curve
    assert m["sharpe"] == pytest.approx(trades.sharpe.get_analysis()["sharperatio"], rel=1e-9)
    n = m["trades_closed"]
    assert m["sqn"] * math.sqrt(n / (n - 1)) == pytest.approx(trades.sqn.get_analysis().sqn,
                                                              rel=1e-9)
    drawdown = trades.dd.get_analysis().max
    assert m["max_drawdown"] * 100 == pytest.approx(drawdown.drawdown, rel=1e-9)
    assert m["max_drawdown_money"] == pytest.approx(drawdown.moneydown, rel=1e-9)
