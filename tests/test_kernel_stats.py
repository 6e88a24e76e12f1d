"""The kernel's equity-curve metrics (`kernel.curve_stats`, which every sweep row reports) against
metrics.py and against a plain-Python walk of the curve: the two-pass standard deviation, the
vectorised lane sums and the drawdown taken by stretches between peaks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from algotrading import metrics
from algotrading.backtest import kernel
from algotrading.backtest.settings import Settings


def _curves(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    walk = 1e5 * np.exp(np.cumsum(rng.normal(0.0, 0.02, 3000)))
    crash = np.concatenate([np.linspace(1e5, 2e5, 50), np.linspace(2e5, 1e3, 50),
                            np.linspace(1e3, 3e5, 100)])
    flat = np.full(40, 1e5)
    steps = np.round(1e5 * (1 + rng.normal(0, 0.01, 500)).cumprod(), 0)  # repeated values
    return [walk, crash, flat, steps]


def _hard_curves() -> list[np.ndarray]:
    """Peaks met again exactly, a first bar below the cash, a fall through zero, one bar."""
    again = np.array([1e5, 9e4, 1e5, 8e4, 1e5, 1e5, 95e3, 11e4, 11e4, 5e4])
    below = np.array([9e4, 8e4, 12e4, 6e4, 6e4])
    broke = np.array([1e5, 12e4, 3e4, 0.0, -2e4, 0.0])
    return [again, below, broke, np.array([7e4]), np.array([13e4])]


@pytest.mark.parametrize("seed", range(3))
def test_curve_stats_equal_metrics_py(seed):
    r = Settings(risk_free=0.02).rules
    for equity in _curves(seed):
        shares = np.where(np.arange(len(equity)) % 5 < 3, 7.0, 0.0)
        close = np.linspace(50.0, 80.0, len(equity))
        st = kernel.stats_table(1)
        kernel.curve_stats(equity, shares, close, r, 1234.5, False, st[0])
        want = metrics.equity_metrics(equity, r.cash, shares * close, 1234.5, r.risk_free)
        for key in ("final_value", "cagr", "sharpe", "sortino", "max_drawdown",
                    "max_drawdown_money", "calmar", "exposure", "gross_exposure", "turnover"):
            ours, theirs = float(st[0][key]), float(want[key])
            if math.isnan(theirs):
                assert math.isnan(ours), key
            else:
                assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize("seed", range(3))
def test_drawdown_is_the_largest_drop_over_peak_exactly(seed):
    r = Settings().rules
    for equity in _curves(seed) + _hard_curves():
        peak, deepest, money = r.cash, 0.0, 0.0
        for value in equity.tolist():  # every bar divided, in plain Python
            peak = max(peak, value)
            deepest = max(deepest, (peak - value) / peak)
            money = max(money, peak - value)
        st = kernel.stats_table(1)
        kernel.curve_stats(equity, np.zeros(len(equity)), equity, r, 0.0, False, st[0])
        assert st[0]["max_drawdown"] == deepest
        assert st[0]["max_drawdown_money"] == money


def test_lane_sums_stay_within_numpy_on_adversarial_curves():
    """`_sums` adds in eight lanes (kernel.lane_sum, vectorised): on 100,000 bars of returns with
    a large mean and a tiny spread (the standard deviation's hard case), of steady growth, and of
    a long random walk, the ratios stay within 1e-12 of metrics.py (numpy's pairwise sums)."""
    r = Settings(risk_free=0.02).rules
    rng = np.random.default_rng(0)
    n = 100_000
    for rets in (1e-3 + 1e-12 * rng.normal(size=n), np.full(n, 1e-4), rng.normal(0, 0.01, n)):
        equity = r.cash * np.cumprod(1 + rets)
        shares = np.where(rng.random(n) < 0.6, 3.0, 0.0)
        close = np.full(n, 10.0)
        st = kernel.stats_table(1)
        kernel.curve_stats(equity, shares, close, r, 0.0, False, st[0])
        want = metrics.equity_metrics(equity, r.cash, shares * close, 0.0, r.risk_free)
        for key in ("sharpe", "sortino", "max_drawdown", "exposure", "gross_exposure"):
            ours, theirs = float(st[0][key]), float(want[key])
            if math.isnan(theirs):
                assert math.isnan(ours), key
            else:
                assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15), key


def test_pairwise_sum_is_numpys_sum_to_the_bit():
    """The mean's sum walks numpy's own pairwise tree (blocks of 128 in eight lanes, halves cut
    at multiples of 8): every length from 0 to 300, around numpy's blocks, and long arrays, of
    values over ten orders of magnitude, equal np.sum exactly (a sum of -0.0s too)."""
    rng = np.random.default_rng(7)
    for n in [*range(300), 1_258, 5_031, 8_191, 8_192, 8_193, 100_000, 250_001]:
        x = rng.normal(size=n) * 10 ** rng.uniform(-5, 5, size=n)
        assert kernel.pairwise_sum(x) == np.sum(x), n
        z = -np.zeros(n)
        assert np.signbit(kernel.pairwise_sum(z)) == np.signbit(np.sum(z)), n


def test_lane_sum_is_eight_fixed_lanes():
    """lane_sum is one fixed order (lane j takes x[j::8] below the last multiple of 8, the tail
    goes into lane 0, lanes combined pairwise), whatever the CPU vectorises it to: the same
    order written out in Python gives the same bits."""
    rng = np.random.default_rng(8)
    for n in (0, 1, 7, 8, 9, 127, 1_000, 5_031):
        x = rng.normal(size=n) * 10 ** rng.uniform(-8, 8, size=n)
        m = n - n % 8
        lanes = [-0.0] * 8
        for i in range(m):
            lanes[i % 8] += float(x[i])
        for i in range(m, n):
            lanes[0] += float(x[i])
        want = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + \
            ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
        assert kernel.lane_sum(x) == want, n


@pytest.mark.parametrize("n", [1, 7, 8, 127, 128, 129, 1_023, 1_024, 1_025, 2_048, 3_001, 5_031,
                               100_003])
def test_curve_sums_in_pieces_equal_the_whole_curve_sums(n):
    """`_sums` takes the curve in pieces of kernel.BLOCK bars (the mean's returns leaf by leaf,
    the lanes carried from piece to piece), so its buffers stay in cache on long curves: every
    sum equals, to the bit, the same sums over whole-curve arrays (numpy's sum for the mean,
    lane_sum for the rest), at lengths around the pieces, the lanes and numpy's blocks; a zero
    value (NaN returns after it) included."""
    rng = np.random.default_rng(n)
    r = Settings(risk_free=0.03).rules
    rf = (1.0 + r.risk_free) ** (1.0 / 252) - 1.0
    equity = r.cash * np.cumprod(1 + rng.normal(0, 0.01, n))
    shares = np.where(rng.random(n) < 0.5, 4.0, 0.0)
    close = rng.uniform(10, 20, n)
    if n == 3_001:
        equity[200] = 0.0
    prev = np.concatenate([[r.cash], equity[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(prev != 0.0, equity / prev - 1.0 - rf, np.nan)
        gross = np.where((shares != 0) & (equity > 0), np.abs(shares * close) / equity, 0.0)
    mean = np.sum(rets) / n
    want = (mean, kernel.lane_sum((rets - mean) ** 2),
            kernel.lane_sum(np.where(rets < 0, rets * rets, 0.0)), int((shares != 0).sum()),
            kernel.lane_sum(gross), kernel.lane_sum(equity))
    got = kernel._sums(equity, shares, close, r, rf)
    np.testing.assert_array_equal(np.array(got, float), np.array(want, float))
