"""The Broker over several symbols with one shared account (`engine.loop`, the reference) and
the compiled shared-cash loop (`backtest/shared.py`, which `run_portfolio` and `sweep_portfolio`
run) on random paths and settings: the same equity, positions, notional traded, trades,
rejections and bankruptcy, to the last bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algotrading import backtest
from algotrading.backtest import engine, shared
from algotrading.backtest.engine import OHLC, Sim

from .conftest import engine_settings, price_paths, wanted


def compiled(frames: list[pd.DataFrame], targets: np.ndarray, s: backtest.Settings) -> Sim:
    return engine.portfolio_sim(shared.simulate_one(*(shared.prices_2d(frames, k) for k in OHLC),
                                                    targets, s.rules))


def assert_same_sim(a: Sim, b: Sim, what: str) -> None:
    """Bit for bit: equity, shares, notional traded, every trade field, rejections, bankruptcy."""
    np.testing.assert_array_equal(a.equity, b.equity, err_msg=what)
    np.testing.assert_array_equal(a.positions, b.positions, err_msg=what)
    np.testing.assert_array_equal(a.traded, b.traded, err_msg=what)
    assert (a.rejected, a.bankrupt) == (b.rejected, b.bankrupt), what
    assert len(a.trades["col"]) == len(b.trades["col"]), (what, a.trades, b.trades)
    for key in engine.TRADE_KEYS:
        x, y = a.trades[key], b.trades[key]
        if key == "reason":
            assert [str(v) for v in x] == [str(v) for v in y], (what, key)
        else:
            np.testing.assert_array_equal(np.asarray(x, float), np.asarray(y, float),
                                          err_msg=f"{what} {key}")


@st.composite
def portfolios(draw: st.DrawFn) -> tuple[list[pd.DataFrame], np.ndarray, dict]:
    """2-4 symbols on the same dates, each with its own random path and wanted positions, and
    random engine settings (fixed size or fraction of equity per symbol, which shared cash
    often cannot pay for every symbol at once)."""
    m = draw(st.integers(2, 4), "symbols")
    n = draw(st.integers(6, 40), "bars")
    frames = [draw(price_paths(min_bars=n, max_bars=n), f"prices {a}") for a in range(m)]
    long_only = draw(st.booleans(), "long_only")
    targets = np.stack([draw(wanted(n, long_only=long_only), f"targets {a}") for a in range(m)],
                       axis=1)
    return frames, targets, draw(engine_settings(), "params")


def _loop_equals_compiled(frames: list[pd.DataFrame], targets: np.ndarray, params: dict) -> Sim:
    s = backtest.Settings(**params)
    reference = engine.loop(frames, targets, s)
    assert_same_sim(reference, compiled(frames, targets, s), f"broker vs shared {params}")
    return reference


@given(case=portfolios())
def test_broker_equals_shared_loop(case) -> None:
    _loop_equals_compiled(*case)


@pytest.mark.slow
@settings(max_examples=300)
@given(case=portfolios())
def test_broker_equals_shared_loop_thoroughly(case) -> None:
    _loop_equals_compiled(*case)


def _walk(seed: int, n: int, m: int, drift: float = 0.0) -> list[pd.DataFrame]:
    """m seeded random walks of n daily bars (gaps at the open, ranges around open and close)."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2021-01-04", periods=n)
    out = []
    for _ in range(m):
        close = 50 * np.exp(np.cumsum(rng.normal(drift, 0.03, n)))
        open_ = np.concatenate([[50.0], close[:-1]]) * np.exp(rng.normal(0, 0.01, n))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
        out.append(pd.DataFrame({"open": open_, "high": high, "low": low, "close": close},
                                index=index))
    return out


@pytest.mark.parametrize("params", [
    {"size": 10.0, "commission_bps": 5.0, "slippage_bps": 3.0},
    {"fraction": 1.0},  # every symbol sized from the whole account's equity: cash goes negative
    {"fraction": 0.4, "leverage": 2.0, "stop_loss": 0.05, "take_profit": 0.1, "max_bars": 7,
     "commission_per_share": 0.01},
    {"fraction": 0.5, "fill": "close", "cash_rate": 0.03, "borrow_rate": 0.05},
    {"size": 250.0, "cash": 10_000.0, "leverage": 4.0, "cash_rate": -0.01},  # rejections
], ids=["fixed-costs", "all-in-each", "stops-leverage", "close-carry", "oversized"])
def test_broker_equals_shared_loop_on_longer_walks(params) -> None:
    """500 bars x 5 symbols, long and short, each case once."""
    frames = _walk(7, 500, 5)
    rng = np.random.default_rng(1)
    targets = np.repeat(rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], (50, 5)), 10, axis=0)
    ref = _loop_equals_compiled(frames, targets, params)
    assert len(ref.trades["col"]) > 20
    if params.get("size") == 250.0:
        assert ref.rejected > 0  # the case does exercise the account's buying power


@pytest.mark.parametrize("fill", ["open", "close"])
def test_bankruptcy_closes_every_symbol_in_both(fill) -> None:
    """Leveraged shorts into a rally: equity crosses zero, every position is closed and no
    order is accepted after."""
    frames = _walk(3, 120, 3, drift=0.04)
    targets = -np.ones((120, 3))
    ref = _loop_equals_compiled(frames, targets, {"fraction": 1.3, "leverage": 4.0, "fill": fill})
    assert ref.bankrupt
    reasons = [str(v) for v in ref.trades["reason"]]
    assert reasons.count("bankrupt") == 3 and "open" not in reasons


def test_run_portfolio_is_the_broker_loop() -> None:
    """run_portfolio (compiled) against the Broker driven over the same frames and targets, on
    three symbols whose dates only partly overlap; the equal-weight fraction included."""
    frames = _walk(11, 300, 3)
    prices = {"A": frames[0], "B": frames[1].iloc[20:], "C": frames[2].iloc[:280]}
    r = backtest.run_portfolio("sma", prices, fast_period=5, slow_period=20, commission_bps=2.0,
                               stop_loss=0.04)
    dates = frames[0].index[20:280]
    targets = np.stack([_sma_targets(p, dates) for p in prices.values()], axis=1)
    s = backtest.Settings(commission_bps=2.0, stop_loss=0.04)
    ref = engine.loop([p.loc[dates] for p in prices.values()], targets,
                      replace(s, fraction=1.0 / 3))
    np.testing.assert_array_equal(r.equity.to_numpy(), ref.equity)
    np.testing.assert_array_equal(r.positions.to_numpy(), ref.positions.T)
    assert list(r.equity.index) == list(dates)
    assert r.metrics["orders_rejected"] == ref.rejected
    assert len(r.trades) == len(ref.trades["col"]) > 10


def _sma_targets(frame: pd.DataFrame, dates: pd.DatetimeIndex) -> np.ndarray:
    """The SMA 5/20 crossover's wanted positions on the symbol's whole history, cut to `dates`
    (what run_portfolio must do: indicators on each symbol's own bars)."""
    from algotrading.strategies import get

    return get("sma").targets(frame, fast_period=5, slow_period=20)[frame.index.isin(dates)]
