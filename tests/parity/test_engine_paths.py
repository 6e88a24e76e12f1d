"""The Broker (`backtest.run`) and the compiled kernel (`sweep`, `run_many`) on random paths
and settings: the same trades, equity and rejections, from the first bar or mid-history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algotrading import backtest

from .conftest import assert_same, engine_settings, price_paths, via_broker, via_kernel, wanted


def _draw_case(data: st.DataObject) -> tuple:
    prices = data.draw(price_paths(), "prices")
    params = data.draw(engine_settings(), "params")
    targets = data.draw(wanted(len(prices), long_only=data.draw(st.booleans(), "long_only")),
                        "targets")
    start = data.draw(st.integers(0, len(prices) - 2), "start bar")
    if start:
        params["start"] = prices.index[start].strftime("%Y-%m-%d")
    return prices, targets, params


def _broker_equals_kernel(data: st.DataObject) -> None:
    prices, targets, params = _draw_case(data)
    broker, compiled = via_broker(prices, targets, params), via_kernel(prices, targets, params)
    assert_same(broker, compiled, f"broker vs kernel {params}")
    assert broker.rejected == compiled.rejected
    # run_many's row (the kernel's one-pass metrics) is run's metrics
    row = backtest.run_many(targets, {"SYN": prices}, **params).loc["SYN"]
    assert row["final_value"] == pytest.approx(broker.equity[-1], rel=1e-9)
    assert row["orders_rejected"] == broker.rejected


@given(data=st.data())
def test_broker_equals_kernel(data: st.DataObject) -> None:
    _broker_equals_kernel(data)


@pytest.mark.slow
@settings(max_examples=300)
@given(data=st.data())
def test_broker_equals_kernel_thoroughly(data: st.DataObject) -> None:
    _broker_equals_kernel(data)


@given(data=st.data())
def test_buying_power_refuses_on_several_bars_and_never_retries(data: st.DataObject) -> None:
    """A size no account can pay: every opening order is refused, once per change of the
    wanted position (not on each bar it stays wanted), and the account never moves."""
    prices = data.draw(price_paths(min_bars=10), "prices")
    targets = data.draw(wanted(len(prices)), "targets")
    params = {"cash": 1_000.0, "size": 5_000.0, "fill": data.draw(st.sampled_from(["open",
                                                                                   "close"]))}
    prev = np.concatenate([[0.0], targets[:-1]])
    asks = (targets != prev) & (targets != 0)
    if params["fill"] == "open":
        asks[-1] = False  # decided at the last close: no bar left to fill (or refuse) it
    for path in (via_broker, via_kernel):
        out = path(prices, targets, params)
        assert out.rejected == int(asks.sum())
        assert out.trades == [] and np.all(out.equity == 1_000.0)


def _walk(n: int, drift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(drift, 0.02, n)))
    open_ = np.concatenate([[50.0], close[:-1]]) * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    index = pd.bdate_range("2010-01-04", periods=n, name="dt")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=index)


@pytest.mark.parametrize("fill", ["open", "close"])
@pytest.mark.parametrize(("drift", "side", "params"), [
    (-0.01, 1.0, {"leverage": 4.0, "fraction": 4.0}),  # a long runs into bankruptcy mid-run
    (0.01, -1.0, {"leverage": 4.0, "fraction": 4.0}),  # a short likewise
    (0.0, 1.0, {"max_bars": 37}),  # the holding limit inside a run of 200 quiet bars
    (0.0, -1.0, {"max_bars": 8, "size": 3.0}),  # ... on a multiple of the passes' eight bars
    (0.0, 1.0, {}),  # nothing but quiet bars between two orders
])
def test_long_quiet_runs_end_where_the_broker_ends_them(fill, drift, side, params):
    """The kernel writes runs of quiet bars in vectorised passes eight bars at a time
    (kernel.quiet_run); the random paths above are short, so these hold the passes' ends to the
    Broker's bar-by-bar checks on runs of hundreds of bars: a bankrupt close, the holding limit,
    a change of target."""
    prices = _walk(700, drift, seed=len(params) + int(side > 0))
    targets = np.zeros(len(prices))
    targets[3:403] = side  # one long run, then flat
    targets[480:] = side / 2
    case = {**params, "fill": fill}
    assert_same(via_broker(prices, targets, case), via_kernel(prices, targets, case), str(case))
