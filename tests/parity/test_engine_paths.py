"""The Broker (`backtest.run`) and the compiled kernel (`sweep`, `run_many`) on random paths
and settings: the same trades, equity and rejections, from the first bar or mid-history."""

from __future__ import annotations

import numpy as np
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
