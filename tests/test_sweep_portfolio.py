"""`sweep_portfolio`: every row is `run_portfolio` with the same parameters (which
tests/parity/test_portfolio_paths.py holds to the Broker), grids over strategy parameters and
engine settings, sorting, and the errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics


def walks(seed: int, n: int, m: int) -> dict[str, pd.DataFrame]:
    """m seeded random walks of n bars; symbol i starts i bars late so the dates only partly
    overlap."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-02", periods=n)
    out = {}
    for i in range(m):
        close = 40 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n)))
        open_ = np.concatenate([[40.0], close[:-1]]) * np.exp(rng.normal(0, 0.005, n))
        frame = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.01,
                              "low": np.minimum(open_, close) * 0.99, "close": close},
                             index=index)
        out[f"S{i}"] = frame.iloc[i:]
    return out


def assert_rows_are_run_portfolio(table: pd.DataFrame, strategy, prices, grid, params) -> None:
    assert len(table) > 0
    for row in table.itertuples(index=False):
        combo = {k: getattr(row, k) for k in grid}
        want = backtest.run_portfolio(strategy, prices, **params, **combo).metrics
        for key in metrics.KEYS:
            got, expected = getattr(row, key), want[key]
            if expected is None:
                assert got is None or np.isnan(got), (combo, key)
            elif isinstance(expected, bool | int):
                assert got == expected, (combo, key, got, expected)
            else:
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), (combo, key)


@pytest.mark.parametrize("params", [
    {"size": 10},
    {"commission_bps": 5, "slippage_bps": 2, "stop_loss": 0.03, "take_profit": 0.08},
    {"fraction": 0.9, "max_bars": 15, "fill": "close", "cash_rate": 0.02},
    {"size": 260, "cash": 10_000},  # the account refuses some orders
], ids=["fixed", "costs-stops", "fraction-close-carry", "rejections"])
def test_every_row_is_run_portfolio(params):
    prices = walks(1, 300, 4)
    grid = {"fast_period": [5, 10, 20], "slow_period": [30, 60]}
    table = backtest.sweep_portfolio("sma", prices, grid, **params)
    assert list(table.columns) == [*grid, *metrics.KEYS] and len(table) == 6
    assert_rows_are_run_portfolio(table, "sma", prices, grid, params)
    if params.get("size") == 260:
        assert table["orders_rejected"].sum() > 0


def test_engine_settings_in_the_grid_and_a_user_function():
    prices = walks(2, 200, 3)

    def momentum(prices: pd.DataFrame, lookback: int = 10) -> np.ndarray:
        return np.sign(prices["close"].pct_change(lookback).fillna(0.0).to_numpy())

    grid = {"lookback": [5, 20], "stop_loss": [0.02, 0.1], "size": [5, 50]}
    table = backtest.sweep_portfolio(momentum, prices, grid, start="2020-03-02")
    assert len(table) == 8
    assert_rows_are_run_portfolio(table, momentum, prices, grid, {"start": "2020-03-02"})


def test_sort_top_and_blocks(monkeypatch):
    """Blocks of a few combinations (PORTFOLIO_BLOCK made small) give the same rows as one
    block."""
    import importlib

    sweep_module = importlib.import_module("algotrading.backtest.sweep")
    prices = walks(3, 150, 2)
    grid = {"fast_period": [3, 5, 8, 13], "slow_period": [21, 34, 55]}
    whole = backtest.sweep_portfolio("sma", prices, grid, size=10)
    monkeypatch.setattr(sweep_module, "PORTFOLIO_BLOCK", 2 * 150 * 2)
    blocks = backtest.sweep_portfolio("sma", prices, grid, size=10)
    pd.testing.assert_frame_equal(whole, blocks)
    top = backtest.sweep_portfolio("sma", prices, grid, size=10, sort="sharpe", top=3)
    assert list(top["sharpe"]) == sorted(whole["sharpe"], reverse=True)[:3]


def test_refusals():
    prices = walks(4, 100, 2)
    with pytest.raises(ValueError, match="unknown|no parameter|fast_perio"):
        backtest.sweep_portfolio("sma", prices, {"fast_perio": [5]})
    with pytest.raises(ValueError, match="top"):
        backtest.sweep_portfolio("sma", prices, {"fast_period": [5]}, top=0)
    with pytest.raises(ValueError, match="at least one symbol"):
        backtest.sweep_portfolio("sma", {}, {"fast_period": [5]})
    apart = {"A": prices["S0"].iloc[:40], "B": prices["S1"].iloc[50:]}
    with pytest.raises(ValueError, match="share no dates"):
        backtest.sweep_portfolio("sma", apart, {"fast_period": [5]}, slow_period=10)
    bad = prices["S1"].copy()
    bad.iloc[7, bad.columns.get_loc("high")] = 1.0
    with pytest.raises(backtest.engine.DataError, match="S1"):
        backtest.sweep_portfolio("sma", {"S0": prices["S0"], "S1": bad}, {"fast_period": [5]})
