"""Features (the workshop's 31 inputs, extras) and labels (barrier and workshop modes): values by
hand, no look-ahead, and the barrier labels replayed through the backtest engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, features, schema, sources


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC")


def bars(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    a = np.array(rows, dtype=float)
    return pd.DataFrame({"open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3],
                         "vol": 1000.0 + np.arange(len(a))},
                        index=pd.date_range("2021-01-04", periods=len(a), freq="B", name="dt"))


def test_workshop_features_by_hand(gspc):
    f = features.workshop(gspc)
    assert list(f.columns) == ["close", *(f"sma{n}" for n in range(2, 17)),
                               *(f"roc{n}" for n in range(2, 17))]
    assert f.shape == (len(gspc), 31) and not f.isna().any().any()
    close = gspc["close"].to_numpy()
    t = 100
    levels = np.array([close[t]] + [close[t + 1 - n:t + 1].mean() for n in range(2, 17)])
    expected = (levels - levels.min()) / (levels.max() - levels.min())
    np.testing.assert_allclose(f.iloc[t, :16], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f.iloc[t, 16:], [(close[t] / close[t - n] - 1) * 100
                                                for n in range(2, 17)], rtol=1e-12)
    # warm-up: a missing average is the close; a missing ROC is 0; an all-equal row scales to 0
    t = 3
    assert f.loc[f.index[t], "sma16"] == f.loc[f.index[t], "close"]
    assert f.loc[f.index[t], "roc5"] == 0.0 and f.loc[f.index[t], "roc3"] != 0.0
    assert (f.iloc[0, :16] == 0.0).all()
    extra = features.workshop(gspc, extra=True)
    assert list(extra.columns[31:]) == list(features.EXTRA) and not extra.isna().any().any()
    assert extra["rsi14"].between(0, 100).all() and (extra["atr14"] >= 0).all()


@pytest.mark.parametrize("extra", [False, True])
def test_features_never_look_ahead(gspc, extra):
    """Altering every bar after t leaves the features at bars <= t unchanged."""
    base = features.workshop(gspc, extra=extra)
    rng = np.random.default_rng(1)
    for t in (20, 700, 3000, len(gspc) - 2):
        changed = gspc.copy()
        noise = rng.uniform(0.5, 1.5, size=(len(gspc) - t - 1, 1))
        changed.iloc[t + 1:, :4] = changed.iloc[t + 1:, :4].to_numpy() * noise
        changed.iloc[t + 1:, 4] = changed.iloc[t + 1:, 4].to_numpy() * noise[:, 0] * 3
        after = features.workshop(changed, extra=extra)
        pd.testing.assert_frame_equal(after.iloc[:t + 1], base.iloc[:t + 1])
        assert not after.iloc[t + 1:].equals(base.iloc[t + 1:])


@pytest.mark.slow
@pytest.mark.parametrize("slippage_bps", [0.0, 5.0])
def test_barrier_labels_match_the_engine(gspc, slippage_bps):
    """For sampled bars, one trade decided at t and run through backtest.run with stop_loss,
    take_profit and max_bars=horizon exits by take_profit exactly when the label is 1, on the
    bar `exits` names."""
    horizon, target, stop = 5, 0.02, 0.015
    lab = features.labels(gspc, horizon, target, stop)
    rng = np.random.default_rng(7)
    sampled = rng.choice(len(gspc) - horizon, 80, replace=False)
    outcomes = set()
    for side, name in ((1, "long"), (-1, "short")):
        exit_bar, outcome = features.exits(gspc, side, horizon, target, stop, slippage_bps)
        for t in sampled:
            wanted = np.zeros(len(gspc))
            wanted[t:] = side  # wanted from t on; the engine's exit keeps it flat after
            run = backtest.run(wanted, gspc, size=1, stop_loss=stop, take_profit=target,
                               max_bars=horizon, slippage_bps=slippage_bps)
            (trade,) = run.trades.itertuples()
            assert trade.entry_date == gspc.index[t + 1]
            if slippage_bps == 0:
                assert (trade.exit_reason == "take_profit") == bool(lab[name].iloc[t])
            reason = {features.TAKE_PROFIT: "take_profit", features.STOP_LOSS: "stop_loss",
                      features.TIMEOUT: "max_bars"}[outcome[t]]
            if trade.status == "open":  # the timeout's exit order falls after the last bar
                assert reason == "max_bars" and t + horizon == len(gspc) - 1
                continue
            assert trade.exit_reason == reason
            # a timeout's exit fills at the open after bar t + horizon
            assert trade.exit_date == gspc.index[int(exit_bar[t]) + (reason == "max_bars")]
            outcomes.add(reason)
    assert outcomes == {"take_profit", "stop_loss", "max_bars"}  # every path was exercised


def test_barrier_rules_on_hand_made_bars():
    """Entry at the next open (100); target 102, stop 98.5 for a long."""
    p = bars([(99, 99, 99, 99),  # decision bar
              (100, 101, 99, 100.5),  # entry bar: neither level
              (100.5, 103, 98, 101),  # both inside one bar: the stop is assumed first
              (101, 101, 101, 101)] + [(101, 101, 101, 101)] * 3)
    lab = features.labels(p, horizon=3, target=0.02, stop=0.015)
    assert lab["long"].iloc[0] == 0.0
    exit_bar, outcome = features.exits(p, 1, 3, 0.02, 0.015)
    assert (exit_bar[0], outcome[0]) == (2, features.STOP_LOSS)
    gap = bars([(99, 99, 99, 99), (100, 101, 99.5, 100.5), (103, 104, 102.5, 103)] + [(103,) * 4] * 2)
    exit_bar, outcome = features.exits(gap, 1, 2, 0.02, 0.015)
    assert (exit_bar[0], outcome[0]) == (2, features.TAKE_PROFIT)  # gapped through: at the open
    assert features.labels(gap, 2, 0.02, 0.015)["long"].iloc[0] == 1.0
    # the entry bar's own high counts; a short mirrors it (stop 101.5 above, target 98 below)
    entry_hit = bars([(99, 99, 99, 99), (100, 102.5, 99.9, 100), (100,) * 4, (100,) * 4])
    assert features.labels(entry_hit, 2, 0.02, 0.015)["long"].iloc[0] == 1.0
    assert features.exits(entry_hit, -1, 2, 0.02, 0.015)[1][0] == features.STOP_LOSS
    calm = bars([(99, 99, 99, 99), (100, 101, 99, 100), (100,) * 4, (100,) * 4])
    assert features.exits(calm, -1, 2, 0.02, 0.015)[1][0] == features.TIMEOUT
    assert features.labels(calm, 2, 0.02, 0.015).iloc[0].tolist() == [0.0, 0.0]


def test_labels_need_horizon_bars_after(gspc):
    for mode in features.LABEL_MODES:
        lab = features.labels(gspc, horizon=7, mode=mode)
        assert list(lab.columns) == ["long", "short"] and lab.index.equals(gspc.index)
        assert lab.iloc[-7:].isna().all().all() and not lab.iloc[:-7].isna().any().any()
        assert set(np.unique(lab.iloc[:-7])) <= {0.0, 1.0}
    assert features.labels(gspc.iloc[:3], horizon=5).isna().all().all()


def test_workshop_labels_by_hand():
    """Close-only: closes t+1..t+horizon against c = close[t] (100)."""
    up = bars([(100, 100, 100, 100), (100, 100, 100, 101), (100, 103, 97, 102.5), (100, 100, 100, 100)])
    lab = features.labels(up, horizon=2, target=0.02, stop=0.015, mode="workshop")
    assert (lab["long"].iloc[0], lab["short"].iloc[0]) == (1.0, 0.0)  # max close 102.5 >= 102
    dip = bars([(100, 100, 100, 100), (100, 100, 100, 98.4), (100, 100, 100, 102.5), (100,) * 4])
    lab = features.labels(dip, horizon=2, target=0.02, stop=0.015, mode="workshop")
    assert lab["long"].iloc[0] == 0.0  # the min close 98.4 is below the stop 98.5
    # the barrier mode on the same bars judges highs/lows from the next open instead
    assert features.labels(up, horizon=2, target=0.02, stop=0.015)["long"].iloc[0] == 0.0


def test_label_rates_and_bad_arguments(gspc):
    rates = features.label_rates(features.labels(gspc))
    assert rates["rows"] == len(gspc) - 5 and 0 < rates["long"] < 0.5 and 0 < rates["short"] < 0.5
    with pytest.raises(ValueError, match="mode"):
        features.labels(gspc, mode="close")
    with pytest.raises(ValueError, match="target and stop"):
        features.labels(gspc, target=0)
    with pytest.raises(ValueError, match="side"):
        features.exits(gspc, 0, 5, 0.02, 0.015)
    with pytest.raises(ValueError, match="horizon"):
        features.exits(gspc, 1, 0, 0.02, 0.015)
