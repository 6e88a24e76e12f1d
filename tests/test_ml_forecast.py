"""The ML strategy: the workshop's threshold rule on the forecaster's probabilities, exits left to
the engine's take_profit / stop_loss / max_bars, no look-ahead, threshold sweeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, features, schema, sources
from algotrading.models import forecast
from algotrading.strategies import get, ml_forecast


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC")


@pytest.fixture(scope="module")
def artifact(gspc, tmp_path_factory) -> str:
    model, _ = forecast.train(gspc, forecast.Config(epochs=3, patience=2))
    return str(forecast.save(model, tmp_path_factory.mktemp("ml") / "forecast-GSPC"))


@pytest.mark.slow
def test_trades_follow_the_rule_and_exit_only_by_the_engine(gspc, artifact):
    model = ml_forecast.load(artifact)
    params = {"model": artifact, "long_threshold": 0.3, "short_threshold": 0.35}
    run = backtest.run("ml_forecast", gspc, size=1, **params, **ml_forecast.engine_params(model))
    trades = run.trades
    assert len(trades) > 20
    assert set(trades["exit_reason"]) <= {"take_profit", "stop_loss", "max_bars", "open"}
    assert {"take_profit", "stop_loss", "max_bars"} <= set(trades["exit_reason"])
    p = model.predict(gspc)
    cfg = model.config
    exit_bar = {s: features.exits(gspc, s, cfg.horizon, cfg.target, cfg.stop)[0] for s in (1, -1)}
    for trade in trades.itertuples():
        t = gspc.index.get_loc(trade.entry_date) - 1  # the decision bar
        if trade.side == "long":
            assert p["p_long"].iloc[t] > 0.3
        else:
            assert p["p_long"].iloc[t] <= 0.3 < 0.35 < p["p_short"].iloc[t]
        side = 1 if trade.side == "long" else -1
        if not np.isnan(exit_bar[side][t]):  # the engine ends it where the labels' rule says
            assert gspc.index.get_loc(trade.exit_date) == exit_bar[side][t] + \
                (trade.exit_reason == "max_bars")
    # flat bars between trades: the rule entered at the first signal after each exit
    targets = get("ml_forecast").targets(gspc, **params)
    entries = np.flatnonzero(np.diff((targets != 0).astype(int), prepend=0) == 1)
    assert len(entries) == len(trades)


@pytest.mark.slow
def test_targets_never_look_ahead(gspc, artifact):
    base = get("ml_forecast").targets(gspc, model=artifact, long_threshold=0.3,
                                      short_threshold=0.35)
    rng = np.random.default_rng(3)
    for t in (400, 2500, 4800):
        changed = gspc.copy()
        changed.iloc[t + 1:, :4] = changed.iloc[t + 1:, :4].to_numpy() * \
            rng.uniform(0.7, 1.3, size=(len(gspc) - t - 1, 1))
        after = get("ml_forecast").targets(changed, model=artifact, long_threshold=0.3,
                                           short_threshold=0.35)
        np.testing.assert_array_equal(after[:t + 1], base[:t + 1])


def test_walk_by_hand():
    nan = np.nan
    enter_long = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    enter_short = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    exit_long = np.array([3, 4, nan, nan, 6, nan, nan, nan])
    exit_short = np.array([nan, nan, 5, 5, nan, nan, nan, nan])
    # long from 0 (out on its exit bar 3), bar 3's short signal is skipped (exit bar),
    # long again at 4 until 6, bar 6's short is skipped, nothing after
    np.testing.assert_array_equal(ml_forecast.walk(enter_long, enter_short, exit_long, exit_short),
                                  [1, 1, 1, 0, 1, 1, 0, 0])
    # an entry whose exit lies beyond the data is held to the end
    np.testing.assert_array_equal(
        ml_forecast.walk(np.array([0, 1, 0], bool), np.zeros(3, bool), np.full(3, nan),
                         np.full(3, nan)), [0, 1, 1])


@pytest.mark.slow
def test_threshold_sweep_rows_equal_single_runs(gspc, artifact):
    model = ml_forecast.load(artifact)
    exits = ml_forecast.engine_params(model)
    grid = {"long_threshold": [0.3, 0.5], "short_threshold": [0.35, 1.0]}
    table = backtest.sweep("ml_forecast", gspc, grid, model=artifact, **exits)
    assert len(table) == 4
    for row in table.itertuples():
        one = backtest.run("ml_forecast", gspc, model=artifact, long_threshold=row.long_threshold,
                           short_threshold=row.short_threshold, **exits)
        assert one.metrics["final_value"] == pytest.approx(row.final_value, rel=1e-9)
    never = table[(table.long_threshold == 0.5) & (table.short_threshold == 1.0)]
    assert never["trades_closed"].iloc[0] <= table["trades_closed"].max()


def test_missing_model_is_a_clear_error(gspc):
    with pytest.raises(ValueError, match="needs model="):
        get("ml_forecast").targets(gspc)
    with pytest.raises(FileNotFoundError, match="train the model first"):
        get("ml_forecast").targets(gspc, model="no/such/folder")
    with pytest.raises(ValueError, match="long_threshold"):
        get("ml_forecast").targets(gspc, model="x", long_threshold=1.5)
