"""Engine semantics on tiny hand-made frames, and the strategies' rules by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics, rules, schema, sources
from algotrading.backtest import engine
from algotrading.strategies import breakout, get, sma


def frame(rows: list[tuple[float, float, float, float]]) -> pd.DataFrame:
    a = np.array(rows, dtype=float)
    return pd.DataFrame({"open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3],
                         "vol": 1.0},
                        index=pd.date_range("2021-01-04", periods=len(a), freq="B", name="dt"))


# opens 10..15, closes open + 0.5
STEPS = frame([(o, o + 1, o - 1, o + 0.5) for o in (10.0, 11, 12, 13, 14, 15)])


def via_kernel(strategy, prices, **params):
    """The same run through the compiled kernel that sweeps use: it must match the Broker
    (`backtest.run`) fill for fill."""
    from algotrading.backtest import kernel

    settings_, own = engine.split_params(params)
    settings = backtest.Settings(**settings_)
    prices, (o, h, lo, c) = engine.checked(prices)
    targets = engine.resolve(strategy, prices, own)
    if settings.start is not None:
        keep = np.asarray(prices.index >= pd.Timestamp(settings.start))
        prices, targets, o, h, lo, c = prices[keep], targets[keep], o[keep], h[keep], lo[keep], c[keep]
    run = kernel.simulate_one(kernel.Bars(o, h, lo, c), targets, settings.rules)
    tr, named = run.trades, run.stats
    trades = {"col": np.zeros(len(tr), dtype=int), "entry_bar": tr["entry_bar"],
              "exit_bar": tr["exit_bar"], "size": tr["size"], "entry_price": tr["entry_price"],
              "exit_price": tr["exit_price"], "commission": tr["commission"],
              "reason": np.array(rules.REASONS)[tr["reason"]], "open": tr["reason"] == rules.OPEN,
              "pnl": tr["pnl"]}
    sim = engine.Sim(run.position[None, :], run.equity, np.array([named["traded"]]), trades,
                     int(named["orders_rejected"]), bool(named["bankrupt"]))
    return engine.result(prices, sim, settings, params)


def same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert value == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
        else:
            assert value == b[key], key


RUNNERS = pytest.mark.parametrize("runner", [backtest.run, via_kernel], ids=["broker", "kernel"])


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC")


@RUNNERS
def test_decision_at_close_fills_at_next_open(runner):
    r = runner(np.array([1, 1, 0, 0, 0, 0]), STEPS, size=10)
    (trade,) = r.trades.itertuples()
    assert (trade.entry_date, trade.entry_price) == (STEPS.index[1], 11.0)
    assert (trade.exit_date, trade.exit_price) == (STEPS.index[3], 13.0)
    assert (trade.side, trade.size, trade.pnl, trade.bars_held) == ("long", 10, 20.0, 2)
    assert trade.exit_reason == "signal" and trade.status == "closed"
    assert r.trades["return"].iloc[0] == pytest.approx(20.0 / (10 * 11.0))
    np.testing.assert_allclose(r.equity, [1e5, 1e5 + 5, 1e5 + 15, 1e5 + 20, 1e5 + 20, 1e5 + 20])
    np.testing.assert_array_equal(r.positions, [0, 10, 10, 0, 0, 0])
    assert r.metrics["final_value"] == pytest.approx(100_020.0)


@RUNNERS
def test_same_close_fill_option(runner):
    r = runner(np.array([1, 1, 0, 0, 0, 0]), STEPS, size=10, fill="close")
    (trade,) = r.trades.itertuples()
    assert (trade.entry_date, trade.entry_price) == (STEPS.index[0], 10.5)
    assert (trade.exit_date, trade.exit_price) == (STEPS.index[2], 12.5)
    assert trade.bars_held == 2 and r.metrics["final_value"] == pytest.approx(100_020.0)


def test_bad_fill_and_double_sizing_are_refused():
    with pytest.raises(ValueError, match="fill"):
        backtest.run(np.zeros(6), STEPS, fill="vwap")
    with pytest.raises(ValueError, match="either size"):
        backtest.run(np.zeros(6), STEPS, size=1, fraction=0.5)


ENTRY = [(100, 100, 100, 100), (100, 102, 99, 101)]  # long decided on bar 0, filled at 100


@pytest.mark.parametrize(("bar", "side", "price", "reason"), [
    ((90, 92, 88, 91), 1, 90.0, "stop_loss"),  # gap through the stop: the open
    ((100, 101, 94, 96), 1, 95.0, "stop_loss"),  # inside the bar: the level
    ((100, 111, 94, 100), 1, 95.0, "stop_loss"),  # stop and target in one bar: stop first
    ((115, 116, 114, 115), 1, 115.0, "take_profit"),  # gap through the target: the open
    ((100, 111, 99, 105), 1, 110.0, "take_profit"),
    ((100, 106, 99, 100), -1, 105.0, "stop_loss"),  # short: stop above
    ((100, 101, 89, 95), -1, 90.0, "take_profit"),  # short: target below
    ((112, 113, 111, 112), -1, 112.0, "stop_loss"),  # short: gap up through the stop
])
def test_stops_and_targets(bar, side, price, reason):
    prices = frame([*ENTRY, bar, (100, 100, 100, 100)])
    r = backtest.run(np.full(4, side), prices, size=10, stop_loss=0.05, take_profit=0.10)
    first = r.trades.iloc[0]
    assert (first.exit_date, first.exit_reason) == (prices.index[2], reason)
    assert first.exit_price == pytest.approx(price, rel=1e-12)
    assert first.pnl == pytest.approx(10 * side * (price - 100.0))
    assert len(r.trades) == 1  # no re-entry while the strategy still wants the same position


def test_stopped_out_position_reenters_only_after_the_target_changes():
    prices = frame([*ENTRY, (90, 92, 88, 91)] + [(91, 92, 90, 91)] * 4)
    r = backtest.run(np.array([1, 1, 1, 1, 0, 1, 1]), prices, size=10, stop_loss=0.05)
    assert list(r.trades["exit_reason"]) == ["stop_loss", "open"]
    assert r.trades["entry_date"].iloc[1] == prices.index[6]


@pytest.mark.parametrize("fill", ["open", "close"])
def test_max_holding_period(fill):
    r = backtest.run(np.ones(6), STEPS, size=10, max_bars=2, fill=fill)
    (trade,) = r.trades.itertuples()
    assert trade.bars_held == 2 and trade.exit_reason == "max_bars"
    assert trade.entry_date == STEPS.index[0 if fill == "close" else 1]


@RUNNERS
def test_commission_per_share_and_bps(runner):
    r = runner(np.array([1, 1, 0, 0, 0, 0]), STEPS, size=10, commission_per_share=0.01,
               commission_bps=10)
    entry = 10 * 0.01 + 110 * 0.001
    leave = 10 * 0.01 + 130 * 0.001
    assert r.trades["commission"].iloc[0] == pytest.approx(entry + leave)
    assert r.trades["pnl"].iloc[0] == pytest.approx(20 - entry - leave)
    assert r.metrics["final_value"] == pytest.approx(100_020 - entry - leave)


@RUNNERS
def test_slippage_moves_every_fill_against_us(runner):
    r = runner(np.array([1, 1, -1, -1, 0, 0]), STEPS, size=10, slippage_bps=50)
    long, short = r.trades.itertuples()
    assert long.entry_price == pytest.approx(11 * 1.005)
    assert long.exit_price == short.entry_price == pytest.approx(13 * 0.995)  # sell 20 at once
    assert short.exit_price == pytest.approx(15 * 1.005)
    assert short.side == "short" and short.pnl == pytest.approx(10 * (13 * 0.995 - 15 * 1.005))


def test_fraction_sizing_buys_whole_shares_with_equity_at_the_fill():
    prices = frame([(30, 30, 30, 30), (31, 31, 31, 31), (32, 32, 32, 32)])
    r = backtest.run(np.ones(3), prices, cash=1000, fraction=0.5)
    assert r.trades["size"].iloc[0] == 16  # floor(500 / 31): sized at the fill, the next open
    r = backtest.run(np.ones(3), prices, cash=1000, fraction=0.5, whole_shares=False)
    assert r.trades["size"].iloc[0] == pytest.approx(500 / 31)
    r = backtest.run(np.ones(3), prices, cash=1000, commission_per_share=1, slippage_bps=100)
    assert r.trades["size"].iloc[0] == 30  # floor(1000 / (31 * 1.01 + 1)): costs fit in the cash
    assert r.equity.min() > 0 and r.metrics["orders_rejected"] == 0


@RUNNERS
def test_open_position_at_the_end_is_marked_to_the_last_close(runner):
    r = runner(np.array([0, 0, 0, -1, -1, -1]), STEPS, size=10)
    (trade,) = r.trades.itertuples()
    assert (trade.status, trade.exit_reason, trade.side) == ("open", "open", "short")
    assert (trade.exit_date, trade.exit_price) == (STEPS.index[-1], 15.5)
    assert trade.pnl == pytest.approx(10 * (14 - 15.5))
    assert r.metrics["trades_open"] == 1 and r.metrics["trades_closed"] == 0
    assert r.metrics["final_value"] == pytest.approx(1e5 + trade.pnl)


def test_no_trades_gives_defined_json_metrics():
    r = backtest.run(np.zeros(6), STEPS)
    assert r.trades.empty and r.metrics["trades_closed"] == 0
    assert r.metrics["final_value"] == 1e5 and r.metrics["sharpe"] is None
    json.dumps(metrics.to_json(r.metrics), allow_nan=False)


def test_portfolio_shares_cash_equal_weight():
    a = frame([(10, 10, 10, 10)] * 3 + [(12, 12, 12, 12)])
    b = frame([(20, 20, 20, 20)] * 4)
    r = backtest.run_portfolio(lambda prices: np.ones(len(prices)), {"A": a, "B": b})
    assert list(r.positions.columns) == ["A", "B"]
    np.testing.assert_array_equal(r.positions.iloc[1], [5000, 2500])  # half the equity each
    assert r.equity.iloc[-1] == pytest.approx(100_000 + 5000 * 2)
    assert set(r.trades["symbol"]) == {"A", "B"} and r.metrics["trades_open"] == 2
    r = backtest.run_portfolio(lambda prices: np.ones(len(prices)), {"A": a, "B": b}, size=100)
    np.testing.assert_array_equal(r.positions.iloc[-1], [100, 100])
    assert r.equity.iloc[-1] == pytest.approx(100_000 + 100 * 2)


def test_portfolio_of_the_sample_symbols(gspc):
    ixic = schema.to_prices(sources.read("sample").frame, "IXIC")
    r = backtest.run_portfolio("sma", {"GSPC": gspc, "IXIC": ixic}, fraction=0.9)
    cash = r.equity - (r.positions * pd.concat([gspc.close, ixic.close], axis=1).to_numpy()).sum(axis=1)
    assert cash.min() > -0.2 * r.equity.max()  # each symbol uses ~45 %: little or no borrowing
    assert r.metrics["trades_closed"] > 100 and r.metrics["benchmark"]["trades_open"] == 1


@pytest.mark.parametrize(("name", "extra"), [("sma", {}), ("breakout", {}),
                                             ("sma", {"stop_loss": 0.02, "fraction": 0.5})])
def test_no_look_ahead_future_bars_never_change_earlier_decisions(gspc, name, extra):
    params = extra if "fraction" in extra else {"size": 10}
    base = backtest.run(name, gspc, **params)
    for k in (500, 2500):
        changed = gspc.copy()
        rng = np.random.default_rng(k)
        changed.iloc[k + 1:] = changed.iloc[k + 1:] * rng.uniform(0.5, 1.5, (len(gspc) - k - 1, 1))
        other = backtest.run(name, changed, **params)
        pd.testing.assert_series_equal(base.equity.iloc[:k + 1], other.equity.iloc[:k + 1])
        pd.testing.assert_series_equal(base.positions.iloc[:k + 1], other.positions.iloc[:k + 1])
        assert not base.equity.iloc[k + 2:].equals(other.equity.iloc[k + 2:])


@pytest.mark.parametrize("params", [
    {"size": 10, "commission_bps": 5, "slippage_bps": 3},
    {"size": 1000, "fast_period": 50, "slow_period": 200},  # orders rejected for buying power
    {"commission_bps": 5, "slippage_bps": 3, "commission_per_share": 0.01},  # all-in
    {"fraction": 0.5, "stop_loss": 0.03, "take_profit": 0.08, "max_bars": 30},
    {"fill": "close", "stop_loss": 0.02, "leverage": 3, "fraction": 2.5},
], ids=["fixed", "rejections", "all-in", "stops", "close-leveraged"])
def test_kernel_and_broker_agree_on_real_data(gspc, params):
    broker = backtest.run("sma", gspc, **params)
    compiled = via_kernel("sma", gspc, **params)
    np.testing.assert_allclose(broker.equity, compiled.equity, rtol=1e-12)
    pd.testing.assert_frame_equal(broker.trades, compiled.trades, rtol=1e-12)
    same_metrics(broker.metrics, compiled.metrics)


def test_start_keeps_history_for_indicators_only(gspc):
    r = backtest.run("sma", gspc, size=10, start="2010-01-04", slow_period=200)
    assert r.equity.index[0] == pd.Timestamp("2010-01-04")
    assert r.trades["entry_date"].iloc[0] == pd.Timestamp("2010-01-05")  # no warm-up wasted


def test_sma_rules_by_hand():
    c = np.array([1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1.0])
    prices = frame([(x, x, x, x) for x in c])
    # first decision on bar 2 (a tie while flat: short); ties keep; 1.5 > 4/3 -> long; ...
    expected = [0, 0, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1]
    assert sma.STRATEGY.targets(prices, fast_period=2, slow_period=3).tolist() == expected
    long_only = [0 if x < 0 else x for x in expected]
    assert get("sma").targets(prices, fast_period=2, slow_period=3,
                              long_only=True).tolist() == long_only


def test_breakout_rules_by_hand():
    c = [5, 4, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 3.0]
    prices = frame([(x, x, x, x) for x in c])
    expected = [0, 0, 0, 0, 1, 1, 1, 0, -1, -1, -1, -1, 0]
    assert breakout.STRATEGY.targets(prices, period=3).tolist() == expected
    only_long = breakout.STRATEGY.targets(prices, period=3, go_short="false").tolist()
    assert only_long == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_unknown_strategy_or_parameter_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        backtest.run("nope", STEPS)
    with pytest.raises(ValueError, match="no parameter"):
        backtest.run("sma", STEPS, fast=3)


@pytest.mark.parametrize(("params", "message"), [
    ({"fast_period": 5, "slow_period": 3}, "fast_period \\(5\\) must be below slow_period"),
    ({"fast_period": 0}, "fast_period=0 must be >= 1"),
    ({"fast_period": 5.7}, "fast_period=5.7 must be a whole number"),
    ({"fast_period": "five"}, "fast_period='five' must be a number"),
    ({"slow_period": 100_000}, "slow_period=100000 needs more bars than the 6 given"),
    ({"long_only": "no"}, "long_only='no' must be true or false"),
    ({"long_only": 1}, "long_only=1 must be true or false"),
    ({"size": -10}, "size=-10 must be > 0"),
    ({"cash": 0}, "cash=0 must be > 0"),
    ({"cash": float("nan")}, "cash=nan must be finite"),
    ({"fraction": -1}, "fraction=-1 must be > 0"),
    ({"fraction": 2}, "fraction=2 needs leverage >= 2"),
    ({"stop_loss": -0.5}, "stop_loss=-0.5 must be > 0"),
    ({"max_bars": 0}, "max_bars=0 must be >= 1"),
    ({"fill": "vwap"}, "fill='vwap': choose one of"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        backtest.run("sma", STEPS, **{"fast_period": 2, "slow_period": 3, **params})


def test_parameters_are_converted_strictly():
    sma_ = get("sma")
    assert sma_.check({"fast_period": 5.0, "slow_period": np.int64(9), "long_only": "True"}) == \
        {"fast_period": 5, "slow_period": 9, "long_only": True}
    assert type(sma_.check({"fast_period": 5.0})["fast_period"]) is int
    assert get("breakout").check({"go_short": "false"})["go_short"] is False
    with pytest.raises(ValueError, match="strategy 'sma' has no parameter 'bogus'; it takes fast_period"):
        sma_.check({"bogus": 1})


def test_buying_power_rejects_the_opening_order_and_counts_it():
    # cash 1000, leverage 2: long 15 at 100 uses 1500 <= 2000. At 60, equity is 400 and a short
    # of 15 needs 900 > 2 x 400: the reversal closes the long and the new short is rejected.
    prices = frame([(100, 100, 100, 100), (100, 100, 100, 100), (60, 60, 60, 60),
                    (60, 60, 60, 60), (60, 60, 60, 60), (60, 60, 60, 60)])
    targets = np.array([1, 1, -1, -1, -1, -1])
    for runner in (backtest.run, via_kernel):
        r = runner(targets, prices, cash=1000, size=15, leverage=2)
        assert r.metrics["orders_rejected"] == 1
        np.testing.assert_array_equal(r.positions, [0, 15, 15, 0, 0, 0])  # never retried
        (trade,) = r.trades.itertuples()
        assert (trade.side, trade.exit_price, trade.pnl) == ("long", 60.0, 15 * (60 - 100.0))
    r = backtest.run(targets, prices, cash=1000, size=15)  # leverage 1: 1500 > 1000, rejected
    assert r.metrics["orders_rejected"] == 1  # ... while the short of 15 x 60 = 900 fits
    np.testing.assert_array_equal(r.positions, [0, 0, 0, -15, -15, -15])
    r = backtest.run(targets, prices, cash=1000, size=10)  # 10 x 100 fits exactly
    assert r.metrics["orders_rejected"] == 0 and r.positions.iloc[1] == 10


def test_fraction_sizing_never_needs_more_than_equity_times_leverage(gspc):
    for params in ({}, {"leverage": 2, "fraction": 2}, {"commission_bps": 10, "slippage_bps": 5}):
        r = backtest.run("sma", gspc, fast_period=20, slow_period=50, **params)
        # equity at each open, before that bar's fill: the last close's, moved by the gap
        held, close = r.positions.shift(1, fill_value=0), gspc["close"].shift(1)
        at_open = r.equity.shift(1, fill_value=1e5) + (held * (gspc["open"] - close)).fillna(0)
        entries = r.trades.set_index("entry_date")
        need = entries["size"] * entries["entry_price"]
        assert (need <= params.get("fraction", 1) * at_open[need.index] * (1 + 1e-12)).all()
        # all-in: within one share (and the costs of closing the old side) of the budget
        assert (need + entries["entry_price"] >= 0.996 * params.get("fraction", 1) *
                at_open[need.index]).all()
        assert r.metrics["orders_rejected"] == 0 and not r.metrics["bankrupt"]
        assert 0.9 * params.get("fraction", 1) < r.metrics["gross_exposure"] <= 1.1 * params.get(
            "fraction", 1)


def test_kernel_and_broker_agree_on_random_paths_and_settings():
    rng = np.random.default_rng(7)
    for case in range(40):
        n = 60
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.12 if case % 4 == 0 else 0.04, n)))
        open_ = close * np.exp(rng.normal(0, 0.02, n))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, n))
        prices = frame(list(zip(open_, high, low, close, strict=True)))
        targets = rng.choice([-1, -0.5, 0, 0.5, 1], n, p=[0.2, 0.1, 0.3, 0.1, 0.3])
        targets = np.repeat(targets[::4], 4)[:n]  # hold each wish a few bars
        params = {"cash": float(rng.choice([1e3, 1e5])), "fill": str(rng.choice(["open", "close"])),
                  "commission_bps": float(rng.choice([0, 10])), "slippage_bps": float(rng.choice([0, 5])),
                  "commission_per_share": float(rng.choice([0, 0.01]))}
        if case % 2:
            params["size"] = float(rng.choice([10, 40, 400]))
        else:
            params["leverage"] = float(rng.choice([1, 2, 4]))
            params["fraction"] = float(rng.choice([0.5, 1, params["leverage"]]))
        if case % 3 == 0:
            params["stop_loss"], params["take_profit"] = 0.05, 0.1
        if case % 5 == 0:
            params["max_bars"] = 3
        fast, slow = backtest.run(targets, prices, **params), via_kernel(targets, prices, **params)
        np.testing.assert_allclose(fast.equity, slow.equity, rtol=1e-12, err_msg=str(params))
        pd.testing.assert_frame_equal(fast.trades, slow.trades, rtol=1e-12)
        same_metrics(fast.metrics, slow.metrics)


@RUNNERS
def test_bankruptcy_stops_trading_and_drops_the_ratios(runner):
    rows = [(10, 10, 10, 10), (10, 10, 10, 10), (20, 25, 20, 25), (26, 26, 26, 26),
            (5, 5, 5, 5), (5, 5, 5, 5)]
    prices = frame(rows)
    r = runner(np.full(6, -1.0), prices, cash=1000)  # all-in short of 100 shares at 10
    assert r.metrics["bankrupt"] and r.metrics["sharpe"] is None and r.metrics["calmar"] is None
    assert r.metrics["cagr"] == -1.0
    (trade,) = r.trades.itertuples()
    assert (trade.exit_date, trade.exit_price, trade.exit_reason) == (prices.index[3], 26.0,
                                                                      "bankrupt")
    np.testing.assert_allclose(r.equity, [1000, 1000, -500, -600, -600, -600])
    table = pd.DataFrame({"p": [1, 2, 3], "sharpe": [0.1, 5.0, 0.2],
                          "bankrupt": [False, True, False]})
    assert list(backtest.rank(table, "sharpe")["p"]) == [3, 1, 2]
    assert backtest.best(table) == {"p": 3}


def test_broker_can_be_driven_bar_by_bar():
    broker = backtest.Broker(cash=1000, fill="close", commission_per_share=0.5)
    broker.on_bar(0, [10.0], [10.0], [10.0])
    broker.mark([10.0])
    (fill,) = broker.submit(0, 1.0)
    assert (fill.qty, fill.price, fill.commission, fill.reason) == (95, 10.0, 47.5, "signal")
    assert broker.submit(0, 1.0) == []  # the same target again: nothing to do
    broker.on_bar(1, [11.0], [12.0], [10.0])
    assert broker.mark([12.0]) == pytest.approx(1000 - 47.5 + 95 * 2)
    (fill,) = broker.submit(0, 0.0)
    assert fill.qty == -95 and broker.shares == [0.0] and len(broker.journal) == 2
    (trade,) = broker.trades()
    assert trade["pnl"] == pytest.approx(95 * 2 - 95)


def test_result_pickles_and_reads_well(gspc):
    import pickle

    r = backtest.run("sma", gspc, fast_period=50, slow_period=200)
    again = pickle.loads(pickle.dumps(r))
    assert again.metrics == r.metrics
    pd.testing.assert_frame_equal(again.trades, r.trades)
    text = repr(r)
    assert "fast_period=50" in text and "buy and hold" in text and "sharpe" in text


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p.assign(close=p["close"].where(p.index != p.index[2])), "row 3 .*finite"),
    (lambda p: p.iloc[::-1], "row 2 .*increasing"),
    (lambda p: pd.concat([p.iloc[:3], p.iloc[2:]]), "row 4 .*duplicate date"),
    (lambda p: p.assign(low=-1.0), "row 1 .*> 0"),
    (lambda p: p.assign(high=p["low"] - 0.5), "high < low"),
    (lambda p: p.reset_index(drop=True), "DatetimeIndex"),
    (lambda p: p.drop(columns="open"), "need columns open"),
])
def test_bad_prices_are_refused(change, message):
    with pytest.raises(schema.DataError, match=message):
        backtest.run(np.ones(6), change(STEPS))


def test_capitalised_columns_are_accepted():
    upper = STEPS.rename(columns=str.capitalize)
    r = backtest.run(np.array([1, 1, 0, 0, 0, 0]), upper, size=10)
    assert r.metrics["final_value"] == pytest.approx(100_020.0)


def test_result_plot_delegates_to_the_plots_module(monkeypatch):
    from algotrading import plots

    seen = {}
    monkeypatch.setattr(plots, "result_chart", lambda result, **kw: seen.update(r=result, kw=kw) or 1,
                        raising=False)
    r = backtest.run(np.array([1, 1, 0, 0, 0, 0]), STEPS, size=10)
    assert r.plot(title="x") == 1 and seen["r"] is r and seen["kw"] == {"title": "x"}


@RUNNERS
def test_carry_interest_on_cash_and_the_borrow_fee_of_a_short(runner):
    """Worked by hand: 253 flat bars give 252 nights, so idle cash at 5 % a year grows by exactly
    5 %; a short of 10 shares at a constant 100 pays 2.52 % a year on 1,000, 0.10 a night."""
    flat = frame([(100.0, 100.0, 100.0, 100.0)] * 253)
    idle = runner(np.zeros(253), flat, cash=10_000, cash_rate=0.05)
    assert idle.metrics["final_value"] == pytest.approx(10_500.0, rel=1e-12)
    short = np.r_[-1.0, np.full(252, -1.0)]  # decided at bar 0, filled at bar 1's open
    r = runner(short, flat, cash=10_000, size=10, borrow_rate=0.0252)
    assert r.metrics["final_value"] == pytest.approx(10_000 - 0.10 * 251, rel=1e-12)  # 251 nights short
    both = runner(short, flat, cash=10_000, size=10, borrow_rate=0.0252, cash_rate=0.05)
    assert both.metrics["final_value"] > r.metrics["final_value"]  # the proceeds earn interest
    with pytest.raises(ValueError, match="borrow_rate=-0.1 must be >= 0"):
        runner(short, flat, borrow_rate=-0.1)


def test_run_pauses_garbage_collection_only_inside_its_bar_loop(gspc, monkeypatch):
    import gc

    from algotrading.backtest import broker as broker_module

    seen: list[bool] = []
    mark = broker_module.Broker.mark

    def spying(self, close):
        seen.append(gc.isenabled())
        if len(seen) == 50 and fail:
            raise RuntimeError("boom")
        return mark(self, close)

    monkeypatch.setattr(broker_module.Broker, "mark", spying)
    fail = False
    assert gc.isenabled()
    backtest.run("sma", gspc.iloc[:200], fast_period=5, slow_period=20)
    assert seen and not any(seen) and gc.isenabled()  # paused on every bar, back on after
    fail, seen[:] = True, []
    with pytest.raises(RuntimeError, match="boom"):
        backtest.run("sma", gspc.iloc[:200], fast_period=5, slow_period=20)
    assert gc.isenabled()  # an error in the loop leaves collection on
    gc.disable()
    try:
        fail = False
        backtest.run("sma", gspc.iloc[:200], fast_period=5, slow_period=20)
        assert not gc.isenabled()  # a caller's choice to keep it off is kept
    finally:
        gc.enable()
