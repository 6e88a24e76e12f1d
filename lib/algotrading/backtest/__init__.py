"""Backtests: `run` one strategy on one symbol, `run_portfolio` several symbols with shared cash,
`sweep` a parameter grid, and choose parameters in-sample with `split`, `best` and
`walk_forward`."""

from algotrading.backtest.engine import Result, Settings, run, run_portfolio
from algotrading.backtest.sweep import combinations, sweep
from algotrading.backtest.walkforward import best, lookup, periods, run_period, split, walk_forward

__all__ = ["Result", "Settings", "best", "combinations", "lookup", "periods", "run", "run_period",
           "run_portfolio", "split", "sweep", "walk_forward"]
