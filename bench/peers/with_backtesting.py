"""backtesting.py: Backtest.run for one backtest, Backtest.optimize for the sweep.

backtesting.py starts calling next() one bar after its slowest `self.I` indicator stops being NaN
(`start = 1 + warm-up`), i.e. one bar later than backtrader and we do. So the strategy registers
one NaN-free indicator, the sign of SMA(fast) - SMA(slow) (0 while warming up: no decision), and
next() sees the first real decision bar. Market orders fill at the next open by default
(trade_on_close=False); size=10 (an integer >= 1) is 10 units. finalize_trades=False keeps a
position open at the end out of '# Trades' while 'Equity Final [$]' marks it to the last close.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

from peers import CASH, Outcome


class SmaCross(Strategy):
    fast_period = 10
    slow_period = 30
    size = 10

    def init(self) -> None:
        close = pd.Series(self.data.Close)
        diff = close.rolling(self.fast_period).mean() - close.rolling(self.slow_period).mean()
        self.state = self.I(lambda: np.sign(diff.fillna(0.0)).to_numpy(), name="state")

    def next(self) -> None:
        if not self.position and self.state[-1] > 0:
            self.buy(size=self.size)
        elif self.position and self.state[-1] < 0:
            self.position.close()


def bars(prices: pd.DataFrame) -> pd.DataFrame:
    """Our price frame in backtesting.py's column names."""
    return prices.rename(columns={"open": "Open", "high": "High", "low": "Low", "close": "Close",
                                  "vol": "Volume"})


def _backtest(data: pd.DataFrame) -> Backtest:
    return Backtest(data, SmaCross, cash=CASH, commission=0.0, spread=0.0, trade_on_close=False,
                    finalize_trades=False)


def run(data: pd.DataFrame, fast: int, slow: int, size: int) -> Outcome:
    """One backtest on bars from `bars`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Some trades remain open at the end": intended
        stats = _backtest(data).run(fast_period=fast, slow_period=slow, size=size)
    return Outcome(float(stats["Equity Final [$]"]), int(stats["# Trades"]),
                   len(stats["_strategy"].trades))


def sweep(data: pd.DataFrame, fast: range, slow: range, size: int) -> pd.Series:
    """Backtest.optimize over the grid with fast < slow: the final value per (fast, slow)
    (optimize keeps one number per combination, the one it maximises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Searching for best of N configurations"
        _, heatmap = _backtest(data).optimize(
            fast_period=fast, slow_period=slow, size=size,
            constraint=lambda p: p.fast_period < p.slow_period,
            maximize="Equity Final [$]", return_heatmap=True)
    return heatmap.droplevel("size")
