"""run_many's batched path (the built-in SMA, EMA and breakout: fused.run_blocks) against
`backtest.run` per symbol and against the symbol-by-symbol path; its price checks against
engine.checked's errors; its indicators against the strategies' own."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics
from algotrading.backtest import fused
from algotrading.schema import DataError
from algotrading.strategies import breakout, ema

from helpers import random_walk

SWEEP = sys.modules["algotrading.backtest.sweep"]  # the module (backtest.sweep is the function)
COUNTS = ("trades_closed", "trades_open", "orders_rejected", "bankrupt")


def coarse(n: int, seed: int) -> pd.DataFrame:
    """Whole-dollar prices: averages tie exactly and closes touch the channel now and then."""
    prices = random_walk(n, seed=seed, base=30.0, vol=0.03).round(0).clip(lower=1.0)
    return prices.assign(high=prices[["open", "high", "close"]].max(axis=1),
                         low=prices[["open", "low", "close"]].min(axis=1))


def universe() -> dict[str, pd.DataFrame]:
    """Symbols of four lengths, smooth and coarse prices, the last one from another year."""
    out = {f"W{i}": random_walk(250 + 60 * (i % 4), seed=i) for i in range(6)}
    out |= {f"C{i}": coarse(300 + 25 * i, seed=40 + i) for i in range(3)}
    out["LATE"] = random_walk(280, seed=99, start="2019-03-01")
    return out


def assert_row_is_run(row: pd.Series, m: dict, what: str) -> None:
    """The final value bit for bit, the counts exactly, the other metrics as test_sweep holds
    the sweep's rows (1e-9)."""
    assert row["final_value"] == m["final_value"], what
    for key in COUNTS:
        assert row[key] == m[key], (what, key)
    for key in metrics.KEYS:
        if m[key] is None:
            assert np.isnan(row[key]), (what, key)
        else:
            assert row[key] == pytest.approx(m[key], rel=1e-9, abs=1e-9), (what, key)


CASES = [
    ("sma", {"fast_period": 5, "slow_period": 20}),
    ("sma", {"fast_period": 3, "slow_period": 12, "long_only": True}),
    ("ema", {"fast_period": 5, "slow_period": 20}),
    ("ema", {"fast_period": 8, "slow_period": 21, "long_only": True}),
    ("breakout", {"period": 10}),
    ("breakout", {"period": 20, "go_short": False}),
    ("breakout", {"period": 5, "go_long": False}),
]
ENGINE = [{}, {"commission_bps": 5.0, "commission_per_share": 0.01, "slippage_bps": 2.0,
               "stop_loss": 0.04, "take_profit": 0.12},
          {"size": 40, "fill": "close", "max_bars": 15, "cash_rate": 0.03, "borrow_rate": 0.05}]


@pytest.mark.parametrize("engine", ENGINE)
@pytest.mark.parametrize(("strategy", "params"), CASES)
def test_batched_rows_equal_run_per_symbol(strategy, params, engine, monkeypatch):
    prices = universe()
    each = []
    real = SWEEP._each
    monkeypatch.setattr(SWEEP, "_each", lambda *a: each.append(list(a[3])) or real(*a))
    table = backtest.run_many(strategy, prices, **params, **engine)
    assert each == [[]]  # every symbol ran batched
    assert list(table.index) == list(prices)
    for symbol, frame in prices.items():
        m = backtest.run(strategy, frame, **params, **engine).metrics
        assert_row_is_run(table.loc[symbol], m, f"{strategy} {params} {engine} {symbol}")
    assert table["trades_closed"].sum() > 0


@pytest.mark.parametrize(("strategy", "params"), CASES[::2])
def test_batched_table_is_the_symbol_by_symbol_table(strategy, params, monkeypatch):
    """Chunks of two symbols (several compiled calls) give the one-by-one path's table, to the
    bit."""
    prices = universe()
    monkeypatch.setattr(SWEEP, "CHUNK", 2)
    table = backtest.run_many(strategy, prices, stop_loss=0.05, **params)
    monkeypatch.setattr(SWEEP, "_fusable", lambda *a, **k: None)
    pd.testing.assert_frame_equal(table, backtest.run_many(strategy, prices, stop_loss=0.05,
                                                           **params), check_exact=True)


def _error(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize(("column", "value", "rule"), [
    ("high", np.nan, "finite"), ("close", np.inf, "finite"), ("low", 0.0, "> 0"),
    ("open", 1e6, "outside low..high"), ("low", 1e6, "high < low")])
def test_bad_prices_name_the_first_bad_symbol_and_bar_as_checked_does(column, value, rule,
                                                                      monkeypatch):
    prices = universe()
    for symbol, bar in (("W4", 17), ("C1", 3)):  # two bad symbols: W4 comes first
        bad = prices[symbol].copy()
        bad.iloc[bar, bad.columns.get_loc(column)] = value
        prices[symbol] = bad
    message = _error(lambda: backtest.run_many("sma", prices))
    assert message.startswith("prices: symbol W4: row 18 (") and rule in message
    monkeypatch.setattr(SWEEP, "_fusable", lambda *a, **k: None)
    assert _error(lambda: backtest.run_many("sma", prices)) == message


def test_errors_before_any_run_come_in_symbol_order():
    """A bad price in an early symbol is named before a later symbol's duplicate date or short
    history, as symbol by symbol."""
    prices = universe()
    bad = prices["W1"].copy()
    bad.iloc[5, bad.columns.get_loc("close")] = -1.0
    twice = prices["W3"].iloc[[0, 0, *range(1, 200)]]
    assert _error(lambda: backtest.run_many("ema", {**prices, "W1": bad, "W3": twice})
                  ).startswith("prices: symbol W1: row 6")
    assert _error(lambda: backtest.run_many("ema", {**prices, "W3": twice})).startswith(
        "prices: symbol W3: row 2 (")
    with pytest.raises(ValueError, match="SHORT: a lookback of 20 needs more than its 15 bars"):
        backtest.run_many("sma", {**prices, "SHORT": prices["W0"].iloc[:15]}, slow_period=20)


def test_other_strategies_and_start_take_the_symbol_by_symbol_path(monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "run_blocks", lambda *a: calls.append(a))
    prices = universe()
    table = backtest.run_many("sma", prices, start="2010-06-01")
    m = backtest.run("sma", prices["W2"], start="2010-06-01").metrics
    assert_row_is_run(table.loc["W2"], m, "start")
    def momentum(prices: pd.DataFrame, period: int = 5) -> np.ndarray:
        return np.sign(prices["close"].diff(period).fillna(0.0)).to_numpy()

    table = backtest.run_many(momentum, prices, period=3)
    assert_row_is_run(table.loc["C0"], backtest.run(momentum, prices["C0"], period=3).metrics,
                      "function")
    assert calls == []


@pytest.mark.parametrize("seed", range(4))
def test_indicators_equal_the_strategies_own(seed):
    prices = coarse(300, seed) if seed % 2 else random_walk(300, seed)
    close = prices["close"].to_numpy(float)
    for period in (1, 2, 7, 30, 299, 300, 301):
        got, want = fused.channel_row(close, period), breakout.channel(close, period)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert np.array_equal(fused.ema_row(close, period), ema.ema(close, period),
                              equal_nan=True)


def test_a_tie_then_a_near_tie_keeps_the_position():
    """SMA 1/2 on a flat stretch: an exact tie (kept long), then a gap of -3.6e-15, within
    sma.NEAR, that the exact sums call a tie again. fused.sma_targets once stored the first
    tie's gap in its `exact` flag, so every later bar took the EMA's rule and went short: two
    closed trades where run closes one, in the sweep as in run_many."""
    bars = [(20.0, 20.0, 20.0, 20.0)] * 2 + [(20.0, 21.21, 20.0, 21.21)] + [(21.21,) * 4] * 3
    prices = pd.DataFrame(bars, columns=["open", "high", "low", "close"],
                          index=pd.bdate_range("2020-01-02", periods=6, name="dt"))
    params = {"fast_period": 1, "slow_period": 2, "cash": 1_000.0, "leverage": 0.5,
              "fraction": 0.25}
    m = backtest.run("sma", prices, **params).metrics
    assert m["trades_closed"] == 1 and m["trades_open"] == 1  # short, then long to the end
    assert_row_is_run(backtest.run_many("sma", {"A": prices}, **params).loc["A"], m, "run_many")
    swept = backtest.sweep("sma", prices, {"fast_period": [1]}, **params).iloc[0]
    assert_row_is_run(swept, m, "sweep")


def test_blocks_are_read_where_they_are_or_refused():
    """run_blocks reads memory by address: only C-contiguous float64 (columns x bars) blocks."""
    prices = random_walk(50, seed=1)
    values, rows = backtest.engine.block(prices)
    assert np.shares_memory(values, prices["close"].to_numpy())  # the frame's own block, no copy
    address, shape = fused.addresses([values])
    assert address[0] == values.ctypes.data and shape.tolist() == [list(values.shape)]
    for bad in (values.T, values.astype(np.float32), values[0]):
        with pytest.raises(ValueError, match="C-contiguous float64 2-D"):
            fused.addresses([bad])
