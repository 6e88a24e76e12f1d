"""Backtests: `run` one strategy on one symbol, `run_many` on each of many symbols (metrics only),
`run_portfolio` several symbols with shared cash (`sweep_portfolio`: over a grid),
`sweep` a parameter grid (`curves`: each combination's equity), and choose parameters
in-sample with `split`, `best` and `walk_forward`. `Broker` is the public
fill/cost/stop/buying-power bookkeeping they all use."""

from algotrading.backtest.broker import Broker, Fill
from algotrading.backtest.engine import Result, check_prices, run, run_portfolio
from algotrading.backtest.settings import SETTINGS, Settings
from algotrading.backtest.sweep import combinations, curves, rank, run_many, sweep, sweep_portfolio
from algotrading.backtest.walkforward import best, lookup, periods, run_period, split, walk_forward

__all__ = ["SETTINGS", "Broker", "Fill", "Result", "Settings", "best", "check_prices",
           "combinations", "curves", "lookup", "periods", "rank", "run", "run_many", "run_period",
           "run_portfolio", "split", "sweep", "sweep_portfolio", "walk_forward"]
