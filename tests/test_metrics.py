"""Metric definitions against hand-computed values on tiny series, and the edge cases."""

from __future__ import annotations

import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics


def test_returns_start_from_cash():
    r = metrics.returns(np.array([101.0, 99.0, 99.0]), 100.0)
    np.testing.assert_allclose(r, [0.01, 99 / 101 - 1, 0.0])


def test_sharpe_is_mean_over_sample_std_times_sqrt_252():
    r = np.array([0.01, -0.02, 0.005, 0.0, 0.015])
    expected = statistics.mean(r) / statistics.stdev(r) * math.sqrt(252)
    assert metrics.sharpe(r) == pytest.approx(expected, rel=1e-12)
    rf = 0.05
    daily = 1.05 ** (1 / 252) - 1
    ex = r - daily
    assert metrics.sharpe(r, rf) == pytest.approx(
        statistics.mean(ex) / statistics.stdev(ex) * math.sqrt(252), rel=1e-12)


def test_sortino_uses_downside_over_all_observations():
    r = np.array([0.1, -0.1, 0.05, 0.0])
    # mean 0.0125; downside squares [0, .01, 0, 0] -> mean .0025 -> deviation 0.05
    assert metrics.sortino(r) == pytest.approx(0.0125 / 0.05 * math.sqrt(252), rel=1e-12)


def test_cagr_uses_252_bars_a_year():
    assert metrics.cagr(np.full(252, 110.0), 100.0) == pytest.approx(0.10)
    assert metrics.cagr(np.full(504, 121.0), 100.0) == pytest.approx(0.10)
    assert metrics.cagr(np.array([50.0, -10.0]), 100.0) == -1.0


def test_drawdown_percent_and_money_from_the_running_peak():
    pct, money = metrics.drawdown(np.array([110.0, 90.0, 120.0, 60.0, 100.0]), 100.0)
    assert pct == pytest.approx(0.5)  # 120 -> 60
    assert money == pytest.approx(60.0)
    pct, money = metrics.drawdown(np.array([99.0, 120.0]), 100.0)  # below the starting cash
    assert (pct, money) == (pytest.approx(0.01), pytest.approx(1.0))


def test_calmar_exposure_turnover():
    assert metrics.calmar(0.2, 0.1) == pytest.approx(2.0)
    assert math.isnan(metrics.calmar(0.2, 0.0))
    assert metrics.exposure(np.array([0, 5, 5, 0])) == 0.5
    # 252 bars, 200 traded on mean equity 100: twice a year
    traded = np.zeros(252)
    traded[[3, 9]] = 100.0
    assert metrics.turnover(traded.sum(), np.full(252, 100.0)) == pytest.approx(2.0)


def test_trade_stats_by_hand():
    pnl = np.array([10.0, -5.0, 0.0, 20.0, -5.0])
    s = {k: float(v[0]) for k, v in metrics.trade_stats(pnl, np.zeros(5, np.intp), 1).items()}
    assert s["trades_closed"] == 5
    assert s["trades_won"] == 3  # pnl >= 0 wins, as in backtrader
    assert s["win_rate"] == pytest.approx(0.6)
    assert s["profit_factor"] == pytest.approx(30 / 10)
    assert s["expectancy"] == pytest.approx(4.0)
    # deviations 6, -9, -4, 16, -9 -> sample variance 470 / 4
    assert s["sqn"] == pytest.approx(math.sqrt(5) * 4 / math.sqrt(117.5), rel=1e-12)


def test_trade_stats_groups_are_independent():
    pnl = np.array([1.0, 2.0, -1.0, 3.0])
    s = metrics.trade_stats(pnl, np.array([0, 1, 1, 2]), 4)
    np.testing.assert_array_equal(s["trades_closed"], [1, 2, 1, 0])
    np.testing.assert_allclose(s["profit_factor"], [np.nan, 2.0, np.nan, np.nan])
    np.testing.assert_allclose(s["sqn"], [np.nan, math.sqrt(2) * 0.5 / statistics.stdev([2, -1]),
                                          np.nan, np.nan])
    assert np.isnan(s["win_rate"][3])


def test_streaks():
    assert metrics.streaks(np.array([True, False, True, True, False, False, False])) == (2, 3)
    assert metrics.streaks(np.array([], bool)) == (0, 0)


def _run_metrics(equity: list[float], pnl: list[float], cash: float = 100.0) -> dict:
    values = np.array(equity)
    return metrics.summarize(values, cash, np.zeros(len(values)), 0.0,
                             np.array(pnl), np.array(pnl) / cash, 0)


@pytest.mark.parametrize("case", ["no trades", "one trade", "flat", "one year"])
def test_edge_cases_are_defined_and_json_serialisable(case):
    equity, pnl = {
        "no trades": ([100.0] * 5, []),
        "one trade": ([100.0, 101.0, 103.0], [3.0]),
        "flat": ([100.0] * 300, []),
        "one year": (list(np.linspace(100, 110, 252)), [10.0]),
    }[case]
    m = _run_metrics(equity, pnl)
    assert set(metrics.KEYS) <= set(m)
    text = json.dumps(metrics.to_json(m), allow_nan=False)
    assert json.loads(text)["trades_closed"] == len(pnl)
    if case in ("no trades", "flat"):
        assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
        assert m["win_rate"] is None and m["sqn"] is None
        assert m["max_drawdown"] == 0.0 and m["total_return"] == 0.0
    if case == "one trade":
        assert m["win_rate"] == 1.0 and m["sqn"] is None and m["profit_factor"] is None
    if case == "one year":
        assert m["cagr"] == pytest.approx(0.10)


def test_to_json_converts_numpy_nan_and_dates():
    out = metrics.to_json({"a": np.float64(1.5), "b": float("nan"), "c": [np.int64(2), np.inf],
                           "d": pd.Timestamp("2020-01-02")})
    assert out == {"a": 1.5, "b": None, "c": [2, None], "d": "2020-01-02T00:00:00"}


def test_report_block_parses_with_the_workshop_regexes(capsys):
    dates = pd.date_range("2020-01-01", periods=6)
    c = np.array([10.0, 10, 11, 12, 11, 13])
    prices = pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "vol": 1.0}, index=dates)
    result = backtest.run(np.array([1, 1, 0, 1, 1, 1]), prices, size=10)
    metrics.print_report(result.metrics)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Trade Analysis Results:"
    for label in ("Total Open", "Total Closed", "Total Won", "Total Lost", "Strike Rate",
                  "Win Streak", "Losing Streak", "PnL Net", "DrawDown Pct", "MoneyDown"):
        assert label in out
    pnl = float(re.search(r"Total PnL:(.*?)]", out).group(1))
    sharpe = float(re.search(r"Sharpe Ratio:(.*?),", out).group(1))
    assert pnl == pytest.approx(result.metrics["pnl"], abs=0.005)
    assert sharpe == pytest.approx(result.metrics["sharpe"], abs=0.005)
    assert result.report() == out.rstrip("\n")


def test_benchmark_is_buy_and_hold_of_the_same_period():
    close = np.array([100.0, 110.0, 99.0, 120.0])
    b = metrics.benchmark(close, 1000.0)
    assert b["final_value"] == pytest.approx(1200.0)
    assert b["max_drawdown"] == pytest.approx(0.1)
    assert b["trades_open"] == 1 and b["exposure"] == 1.0
