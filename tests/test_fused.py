"""The fused SMA and EMA sweeps (backtest/fused.py) against the unfused path (sma.grid's target matrix,
then the kernel per combination) and against math.fsum: the same rows, bit for bit, ties
included."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest
from algotrading.backtest import fused

from helpers import random_walk

SWEEP = sys.modules["algotrading.backtest.sweep"]  # the module (backtest.sweep is the function)


@pytest.mark.parametrize("seed", range(6))
def test_exact_sum_is_math_fsum(seed):
    rng = np.random.default_rng(seed)
    cases = [rng.normal(0, 1, 50), rng.normal(0, 1, 50) * 10.0 ** rng.integers(-20, 20, 50),
             np.array([1e-16, 1.0, 1e16]), np.array([1e308, 1.0, -1e308, 1e-300]),
             np.round(rng.uniform(10, 20, 40), 2), np.array([0.1] * 10 + [-1.0])]
    for x in cases:
        for lo, hi in ((0, len(x)), (1, len(x) - 1), (2, 2)):
            assert fused.exact_sum(x, lo, hi) == math.fsum(x[lo:hi]), (x, lo, hi)


@pytest.mark.parametrize("seed", range(3))
def test_tables_are_the_strategies_own_numbers(seed):
    """The sweep's compiled tables (windows in parallel) against sma.averages, ema.ema and
    breakout.channel, bit for bit, NaN warm-up included, windows from 1 to the whole series."""
    from algotrading.strategies import breakout, ema, sma

    close = (ticked if seed % 2 else random_walk)(257, seed)["close"].to_numpy(float)
    windows = np.array([1, 2, 3, 8, 9, 50, 256, 257])
    first, second = np.empty((len(windows), len(close))), np.empty((len(windows), len(close)))
    fused.tables(fused.SMA, close, windows, first, second)
    np.testing.assert_array_equal(first, sma.averages(close, windows.tolist()))
    fused.tables(fused.EMA, close, windows, first, second)
    np.testing.assert_array_equal(first, np.stack([ema.ema(close, n) for n in windows]))
    fused.tables(fused.BREAKOUT, close, windows, first, second)
    channels = [breakout.channel(close, n) for n in windows]
    np.testing.assert_array_equal(first, np.stack([h for h, _ in channels]))
    np.testing.assert_array_equal(second, np.stack([lo for _, lo in channels]))


def _both(prices: pd.DataFrame, grid: dict, monkeypatch, strategy: str = "sma", **params
          ) -> tuple:
    table = backtest.sweep(strategy, prices, grid, **params)
    with monkeypatch.context() as m:
        m.setattr(SWEEP, "_fusable", lambda *a, **k: None)
        unfused = backtest.sweep(strategy, prices, grid, **params)
    return table, unfused


def ticked(n: int, seed: int) -> pd.DataFrame:
    """Prices on a coarse tick (whole dollars): the two averages tie exactly now and then."""
    prices = random_walk(n, seed=seed, base=30.0, vol=0.03)
    return prices.round(0).clip(lower=1.0).assign(high=lambda f: f[["open", "high", "close"]].max(
        axis=1), low=lambda f: f[["open", "low", "close"]].min(axis=1))


@pytest.mark.parametrize("params", [
    {}, {"long_only": True}, {"size": 10}, {"commission_bps": 5.0, "slippage_bps": 3.0},
    {"stop_loss": 0.05, "take_profit": 0.1}, {"fill": "close", "max_bars": 7},
    {"start": "2010-06-01", "long_only": True}, {"leverage": 2.0, "fraction": 1.5},
])
@pytest.mark.parametrize("strategy", ["sma", "ema"])
def test_fused_rows_equal_the_unfused_path(strategy, params, monkeypatch):
    prices = ticked(400, seed=11)
    grid = {"fast_period": range(2, 15), "slow_period": range(3, 40, 3)}
    table, unfused = _both(prices, grid, monkeypatch, strategy, **params)
    pd.testing.assert_frame_equal(table, unfused, check_exact=True)
    assert len(table) == sum(f < s for f in range(2, 15) for s in range(3, 40, 3))


def test_exact_ties_are_walked_like_sma_grid(monkeypatch):
    """A series with many exact ties between the averages (the fused path's exact sums)."""
    close = np.tile([10.0, 11.0, 10.0, 9.0], 60)
    index = pd.bdate_range("2015-01-02", periods=len(close), name="dt")
    prices = pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5,
                           "close": close, "vol": 1e6}, index=index)
    grid = {"fast_period": [2, 4], "slow_period": [4, 8, 12], "long_only": [False, True]}
    table, unfused = _both(prices, grid, monkeypatch)
    pd.testing.assert_frame_equal(table, unfused, check_exact=True)
    pd.testing.assert_frame_equal(*_both(prices, grid, monkeypatch, "ema"), check_exact=True)
    row = table[(table.fast_period == 4) & (table.slow_period == 8) & ~table.long_only].iloc[0]
    single = backtest.run("sma", prices, fast_period=4, slow_period=8).metrics
    assert row["final_value"] == single["final_value"]
    assert row["trades_closed"] == single["trades_closed"]


def test_engine_settings_in_the_grid_take_the_unfused_path(monkeypatch):
    calls = []
    monkeypatch.setattr(SWEEP, "_fused_cross", lambda *a: calls.append(a))
    prices = random_walk(120, seed=3)
    backtest.sweep("sma", prices, {"fast_period": [3], "slow_period": [9],
                                   "commission_bps": [0.0, 5.0]})
    assert calls == []


def test_threads_follow_numba_setting():
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert fused.threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("params", [
    {}, {"size": 10}, {"commission_bps": 5.0, "slippage_bps": 3.0},
    {"stop_loss": 0.05, "take_profit": 0.1}, {"fill": "close", "max_bars": 7},
    {"start": "2010-06-01"}, {"leverage": 2.0, "fraction": 1.5},
])
def test_fused_breakout_rows_equal_the_unfused_path(params, monkeypatch):
    """Whole-dollar prices, so the close often equals the channel's high or low (no entry, no
    exit: the comparisons are strict)."""
    prices = ticked(400, seed=5)
    grid = {"period": [1, 2, 3, 5, 8, 13, 21, 34, 55], "go_long": [True, False],
            "go_short": [True, False]}
    calls = []
    real = fused.run_breakout
    monkeypatch.setattr(fused, "run_breakout", lambda *a: calls.append(a) or real(*a))
    table, unfused = _both(prices, grid, monkeypatch, "breakout", **params)
    assert len(calls) == 1  # the fused path ran once, the unfused one not at all
    pd.testing.assert_frame_equal(table, unfused, check_exact=True)
    assert len(table) == 9 * 4 and (table["trades_closed"] > 0).sum() >= 9 * 3


def test_fused_breakout_fixed_parameter_and_one_row_equal_run(monkeypatch):
    prices = random_walk(300, seed=8)
    grid = {"period": [4, 9, 30]}
    table, unfused = _both(prices, grid, monkeypatch, "breakout", go_short=False)
    pd.testing.assert_frame_equal(table, unfused, check_exact=True)
    single = backtest.run("breakout", prices, period=9, go_short=False).metrics
    row = table[table.period == 9].iloc[0]
    assert row["final_value"] == single["final_value"]
    assert row["trades_closed"] == single["trades_closed"]


@pytest.mark.parametrize("tick", [0.1, 0.01])
def test_near_ties_on_a_decimal_tick_equal_the_unfused_path(tick, monkeypatch):
    """Prices on a decimal tick: averages equal in decimal are only near in binary, so the near
    tie is summed exactly on many bars, some of them exact ties. (The fused targets once reused
    the near-tie flag's name for the exact difference, so after an exact tie a combination fell
    back to the EMA's rule: 89 of 109 combinations differed from sma.grid on a 0.1 tick.)"""
    prices = ticked(400, seed=11)
    prices[["open", "high", "low", "close"]] = (prices[["open", "high", "low", "close"]] * tick
                                                ).round(2)
    grid = {"fast_period": range(2, 15), "slow_period": range(3, 40, 3)}
    table, unfused = _both(prices, grid, monkeypatch)
    pd.testing.assert_frame_equal(table, unfused, check_exact=True)
