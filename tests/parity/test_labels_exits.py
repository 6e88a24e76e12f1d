"""The labels' barrier exits (`features.exits`, `features.labels`) are the engine's: a trade
decided at bar t ends on the bar and by the rule `exits` names, through the Broker, the kernel
and live replay with the same stop, target and holding limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algotrading import features

from .conftest import price_paths, via_broker, via_kernel, via_live

REASON = {features.TAKE_PROFIT: "take_profit", features.STOP_LOSS: "stop_loss",
          features.TIMEOUT: "max_bars"}


def _exits_equal_engine(data: st.DataObject, paths: tuple) -> None:
    prices = data.draw(price_paths(min_bars=4, max_bars=30), "prices")
    n = len(prices)
    horizon = data.draw(st.integers(1, n - 2), "horizon")
    target = data.draw(st.floats(0.005, 0.3), "target")
    stop = data.draw(st.floats(0.005, 0.3), "stop")
    slippage = data.draw(st.sampled_from([0.0, 5.0]), "slippage_bps")
    side = data.draw(st.sampled_from([1, -1]), "side")
    t = data.draw(st.integers(0, n - horizon - 1), "decision bar")  # where labels are defined
    exit_bar, outcome = features.exits(prices, side, horizon, target, stop, slippage)
    reason = REASON[outcome[t]]
    if slippage == 0:
        label = features.labels(prices, horizon, target, stop)["long" if side > 0 else "short"]
        assert label.iloc[t] == (reason == "take_profit")
    want = [0.0] * n
    want[t:] = [float(side)] * (n - t)  # wanted from t on; after the exit the engine stays flat
    params = {"size": 1.0, "stop_loss": stop, "take_profit": target, "max_bars": horizon,
              "slippage_bps": slippage}
    for path in paths:
        out = path(prices, np.array(want), params)
        out = out[0] if isinstance(out, tuple) else out
        ((entry, exit_, size, _, _, why),) = out.trades
        assert (entry, size) == (prices.index[t + 1], side), path.__name__
        if why == "open":  # a timeout whose exit order falls after the last bar
            assert reason == "max_bars" and t + horizon == n - 1
            continue
        assert why == reason, path.__name__
        # a timeout sells at the open after bar t + horizon
        assert exit_ == prices.index[int(exit_bar[t]) + (reason == "max_bars")], path.__name__


@given(data=st.data())
def test_barrier_exits_are_the_engines(data: st.DataObject) -> None:
    _exits_equal_engine(data, (via_broker, via_kernel, via_live))


@pytest.mark.slow
@settings(max_examples=300)
@given(data=st.data())
def test_barrier_exits_are_the_engines_thoroughly(data: st.DataObject) -> None:
    _exits_equal_engine(data, (via_broker, via_kernel, via_live))
