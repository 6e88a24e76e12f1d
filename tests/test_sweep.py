"""Sweeps equal single runs; in-sample selection and walk-forward never see test data."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics, schema, sources

sweep_module = importlib.import_module("algotrading.backtest.sweep")  # the package exports sweep()

GRID = {"fast_period": range(5, 51, 5), "slow_period": range(20, 201, 20)}


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC").iloc[-2000:]


def _same(row: pd.Series, m: dict) -> None:
    for key in metrics.KEYS:
        ours, theirs = row[key], m[key]
        if theirs is None:
            assert np.isnan(ours), key
        else:
            assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9), key


@pytest.mark.parametrize("costs", [{}, {"commission_bps": 5, "commission_per_share": 0.01,
                                        "slippage_bps": 2}])
def test_vectorised_sweep_rows_equal_single_runs(gspc, costs):
    table = backtest.sweep("sma", gspc, GRID, size=10, **costs)
    assert len(table) == sum(f < s for f in GRID["fast_period"] for s in GRID["slow_period"])
    assert (table["fast_period"] < table["slow_period"]).all()
    for i in (0, 7, 33, len(table) - 1):
        row = table.iloc[i]
        result = backtest.run("sma", gspc, size=10, fast_period=int(row["fast_period"]),
                              slow_period=int(row["slow_period"]), **costs)
        _same(row, result.metrics)
        assert row["trades_closed"] == result.metrics["trades_closed"] > 0


def test_breakout_and_long_only_sweeps_equal_runs(gspc):
    table = backtest.sweep("breakout", gspc, {"period": [5, 20, 60], "go_short": [True, False]},
                           size=10)
    for row in table.itertuples():
        m = backtest.run("breakout", gspc, size=10, period=row.period, go_short=row.go_short)
        assert row.final_value == pytest.approx(m.metrics["final_value"], rel=1e-12)
        assert row.trades_closed == m.metrics["trades_closed"]
    table = backtest.sweep("sma", gspc, GRID, size=10, long_only=True)
    row = table.iloc[12]
    m = backtest.run("sma", gspc, size=10, long_only=True, fast_period=int(row["fast_period"]),
                     slow_period=int(row["slow_period"])).metrics
    _same(row, m)


@pytest.mark.parametrize("params", [
    {},  # all-in
    {"stop_loss": 0.05, "take_profit": 0.1},
    {"size": 1000},  # orders rejected for buying power
    {"fraction": 3, "leverage": 3, "max_bars": 20, "commission_bps": 10},  # some go bankrupt
], ids=["all-in", "stops", "rejections", "leveraged"])
def test_every_sweep_row_equals_run(gspc, params):
    grid = {"fast_period": [5, 20, 50], "slow_period": [30, 100, 200]}
    table = backtest.sweep("sma", gspc, grid, **params)
    assert len(table) == 8
    for row in table.itertuples(index=False):
        m = backtest.run("sma", gspc, fast_period=row.fast_period, slow_period=row.slow_period,
                         **params).metrics
        _same(pd.Series(row._asdict()), m)
    if "size" in params:
        assert (table["orders_rejected"] > 0).all()


def test_engine_parameters_can_be_swept(gspc):
    grid = {"fast_period": [10, 20], "slow_period": [50], "stop_loss": [0.03, 0.1]}
    table = backtest.sweep("sma", gspc, grid, fraction=0.5)
    assert len(table) == 4 and list(table.columns[:3]) == list(grid)
    m = backtest.run("sma", gspc, fraction=0.5, fast_period=20, slow_period=50, stop_loss=0.1)
    _same(table.iloc[3], m.metrics)
    assert table["sharpe"].nunique() == 4


@pytest.mark.parametrize(("grid", "message"), [
    ({"fast_period": [50], "slow_period": [20, 30]}, "no combination .* fast_period \\(50\\)"),
    ({"nope": [1, 2]}, "strategy 'sma' has no parameter 'nope'; it takes fast_period, slow_period, "
                       "long_only \\(or an engine setting: cash, size"),
    ({"fast_period": [5.25, 5.5]}, "fast_period=5.25 must be a whole number"),
    ({"long_only": ["no"]}, "long_only='no' must be true or false"),
    ({"slow_period": [100_000]}, "needs more bars"),
    ({"fast_period": range(1, 2000), "slow_period": range(2, 2000)}, "3,994,002 combinations"),
])
def test_bad_grids_are_refused_before_any_work(gspc, grid, message):
    with pytest.raises(ValueError, match=message):
        backtest.sweep("sma", gspc, grid)


def test_duplicates_are_dropped_and_top_keeps_the_best(gspc):
    table = backtest.sweep("sma", gspc, {"fast_period": [5, 5.0, 10], "slow_period": [50, 50]})
    assert list(table["fast_period"]) == [5, 10]
    full = backtest.sweep("sma", gspc, GRID, sort="sharpe")
    top = backtest.sweep("sma", gspc, GRID, sort="sharpe", top=3)
    pd.testing.assert_frame_equal(top, full.head(3))
    assert full["sharpe"].iloc[0] == full["sharpe"].max()
    with pytest.raises(ValueError, match="top=-2"):
        backtest.sweep("sma", gspc, GRID, top=-2)


def test_small_blocks_give_the_same_rows_and_top(gspc, monkeypatch):
    one = backtest.sweep("sma", gspc, GRID, sort="sharpe")
    monkeypatch.setattr(sweep_module, "BLOCK", 7 * len(gspc))  # 7 combinations a block
    pd.testing.assert_frame_equal(backtest.sweep("sma", gspc, GRID, sort="sharpe"), one)
    pd.testing.assert_frame_equal(backtest.sweep("sma", gspc, GRID, sort="sharpe", top=4),
                                  one.head(4))


def test_best_picks_the_top_row_by_metric():
    table = pd.DataFrame({"period": [5, 10, 20], "sharpe": [0.5, np.nan, 0.9],
                          "max_drawdown": [0.1, 0.3, 0.2]})
    assert backtest.best(table) == {"period": 20}
    assert backtest.best(table, "max_drawdown", maximize=False) == {"period": 5}
    with pytest.raises(ValueError, match="no combination"):
        backtest.best(table.assign(sharpe=np.nan))


def test_split_is_chronological_and_complete(gspc):
    train, valid, test = backtest.split(gspc, 0.6, 0.2)
    assert len(train) == 1200 and len(valid) == 400 and len(test) == 400
    assert train.index[-1] < valid.index[0] and valid.index[-1] < test.index[0]
    with pytest.raises(ValueError):
        backtest.split(gspc, 0.9, 0.2)


SMALL = {"fast_period": [5, 10, 20], "slow_period": [50, 100]}


def test_walk_forward_chooses_on_in_sample_data_only(gspc):
    wf = backtest.walk_forward("sma", gspc, SMALL, train_bars=1000, test_bars=500, size=10)
    assert len(wf) == 2
    assert list(wf["test_start"]) == [gspc.index[1000], gspc.index[1500]]
    assert wf["train_start"].iloc[1] == gspc.index[500]  # rolling window
    first = wf.iloc[0]
    table = backtest.sweep("sma", gspc.iloc[:1000], SMALL, size=10)
    choice = backtest.best(table)
    assert {k: first[k] for k in choice} == choice
    oos = backtest.run("sma", gspc.iloc[:1500], size=10, start=gspc.index[1000], **choice)
    assert first["final_value"] == pytest.approx(oos.metrics["final_value"])
    # Scrambling everything after the training window cannot change what was chosen.
    changed = gspc.copy()
    rng = np.random.default_rng(0)
    changed.iloc[1000:] = changed.iloc[1000:] * rng.uniform(0.8, 1.2, (1000, 1))
    again = backtest.walk_forward("sma", changed, SMALL, train_bars=1000, test_bars=500, size=10)
    assert {k: again.iloc[0][k] for k in choice} == choice
    assert again.iloc[0]["in_sample_sharpe"] == first["in_sample_sharpe"]
    assert again.iloc[0]["final_value"] != first["final_value"]


def test_anchored_walk_forward_warms_up_on_history(gspc):
    wf = backtest.walk_forward("sma", gspc, SMALL, train_bars=1000, test_bars=500, size=10,
                               anchored=True)
    assert (wf["train_start"] == gspc.index[0]).all()
    oos = backtest.run("sma", gspc.iloc[:2000], size=10, start=gspc.index[1500],
                       **{k: int(wf.iloc[1][k]) for k in SMALL})
    # indicators come from history, so the window trades from its first bar on
    assert oos.trades["entry_date"].iloc[0] == gspc.index[1501]
    assert wf.iloc[1]["final_value"] == pytest.approx(oos.metrics["final_value"])


def test_periods_are_disjoint_and_run_period_never_sees_later_bars():
    from algotrading import backtest

    index = pd.bdate_range("2020-01-01", periods=300)
    prices = pd.DataFrame({"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "vol": 1.0},
                          index=pd.DatetimeIndex(index, name="dt"))
    bounds = backtest.periods(prices.index, "2020-06-30", "2020-09-30")
    assert bounds["train"][1] < bounds["validation"][0] and bounds["validation"][1] < bounds["test"][0]
    assert bounds["test"][1] == index[-1]
    result = backtest.run_period("sma", prices, bounds["validation"], fast_period=2, slow_period=3)
    assert result.equity.index[0] >= bounds["validation"][0]
    assert result.equity.index[-1] <= bounds["validation"][1]
    with pytest.raises(ValueError):
        backtest.periods(prices.index, "2020-09-30", "2020-06-30")


def test_run_many_rows_equal_run(gspc):
    ixic = schema.to_prices(sources.read("sample").frame, "IXIC").iloc[-2000:]
    table = backtest.run_many("sma", {"GSPC": gspc, "IXIC": ixic}, fast_period=20, slow_period=50,
                              stop_loss=0.05, start="2012-01-03")
    assert list(table.index) == ["GSPC", "IXIC"]
    for symbol, prices in (("GSPC", gspc), ("IXIC", ixic)):
        m = backtest.run("sma", prices, fast_period=20, slow_period=50, stop_loss=0.05,
                         start="2012-01-03").metrics
        _same(table.loc[symbol], m)


def test_run_many_reads_any_frame_layout_and_names_the_symbol_of_bad_prices(gspc):
    # ohlc reads an all-float frame as one block; an int column, a text column and capitalised
    # names take other paths; every layout gives the rows of the plain frame.
    layouts = {"PLAIN": gspc,
               "INTVOL": gspc.assign(vol=gspc["vol"].astype("int64")),
               "TEXT": gspc.assign(sym="GSPC"),
               "CAPS": gspc.rename(columns=str.title),
               "ORDER": gspc[["close", "vol", "low", "open", "high"]],
               "WIDE": gspc.assign(**{f"feature{i}": 1.0 for i in range(20)})}
    table = backtest.run_many("sma", layouts, fast_period=20, slow_period=50)
    plain = backtest.run("sma", gspc, fast_period=20, slow_period=50).metrics
    for symbol in layouts:
        _same(table.loc[symbol], plain)
    bad = gspc.copy()
    bad.iloc[6, bad.columns.get_loc("high")] = np.nan
    with pytest.raises(schema.DataError, match=r"symbol BAD: row 7 \(.*\): .*finite"):
        backtest.run_many("sma", {"OK": gspc, "BAD": bad})
    twice = pd.concat([gspc, gspc[["open"]]], axis=1)
    with pytest.raises(schema.DataError, match="symbol TWICE: column 'open' appears more than once"):
        backtest.run_many("sma", {"TWICE": twice})


def test_fixed_parameters_are_converted_once_for_the_whole_grid(gspc):
    as_text = backtest.sweep("sma", gspc, SMALL, long_only="false", size=10)
    as_bool = backtest.sweep("sma", gspc, SMALL, long_only=False, size=10)
    pd.testing.assert_frame_equal(as_text, as_bool)
    assert (backtest.sweep("sma", gspc, SMALL, long_only="true", size=10)["final_value"]
            != as_bool["final_value"]).any()
