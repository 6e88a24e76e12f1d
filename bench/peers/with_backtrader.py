"""backtrader: one Cerebro per backtest (no observers, data preloaded).

backtrader calls next() from the first bar where SMA(slow) exists; a plain Market order fills at
the next bar's open; broker.getvalue() marks an open position to the last close.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pandas as pd

from peers import CASH, Outcome


class SmaCross(bt.Strategy):
    params = (("fast_period", 10), ("slow_period", 30), ("size", 10))

    def __init__(self) -> None:
        self.fast = bt.ind.SimpleMovingAverage(period=self.p.fast_period)
        self.slow = bt.ind.SimpleMovingAverage(period=self.p.slow_period)
        self.closed = 0

    def notify_trade(self, trade: Any) -> None:
        if trade.isclosed:
            self.closed += 1

    def next(self) -> None:
        if not self.position:
            if self.fast[0] > self.slow[0]:
                self.buy(size=self.p.size)
        elif self.fast[0] < self.slow[0]:
            self.close()


def run(prices: pd.DataFrame, fast: int, slow: int, size: int) -> Outcome:
    """One backtest on our price frame."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=prices, volume="vol", openinterest=None))
    cerebro.addstrategy(SmaCross, fast_period=fast, slow_period=slow, size=size)
    cerebro.broker.setcash(CASH)
    strategy = cerebro.run()[0]
    return Outcome(cerebro.broker.getvalue(), strategy.closed, int(strategy.position.size != 0))
