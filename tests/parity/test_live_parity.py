"""Live replay (Runner + paper broker) equals the backtest: random paths and settings, all-in
and fixed sizes, costs, stops, targets, holding limits, reversals, buying-power and risk-limit
refusals, runs that start mid-history."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algotrading.live import Limits

from .conftest import (
    assert_same,
    engine_settings,
    price_paths,
    via_broker,
    via_kernel,
    via_live,
    wanted,
)

LOOSE = Limits(max_order_notional=1e15, max_order_shares=1e12, max_position=1e12, collar=50.0,
               max_orders_per_day=5, daily_loss=1e15)  # set, but never binding


def _live_equals_engine(data: st.DataObject) -> None:
    prices = data.draw(price_paths(), "prices")
    params = data.draw(engine_settings(fills=("open",)), "params")  # live fills at the next open
    targets = data.draw(wanted(len(prices), long_only=data.draw(st.booleans(), "long_only")),
                        "targets")
    start = data.draw(st.integers(0, len(prices) - 2), "start bar")
    if start:
        params["start"] = prices.index[start].strftime("%Y-%m-%d")
    limits = LOOSE if data.draw(st.booleans(), "loose limits") else None
    broker = via_broker(prices, targets, params)
    live, journal = via_live(prices, targets, params, limits)
    assert_same(broker, live, f"broker vs live {params}")
    assert_same(via_kernel(prices, targets, params), live, f"kernel vs live {params}")
    assert live.rejected == broker.rejected
    # the refusal rule: an order only on a bar whose wanted position changed
    signals = {e["dt"]: e["data"]["target"] for e in journal.events("signal")}
    days = list(signals)
    for order in journal.events("order"):
        i = days.index(order["dt"])
        assert signals[days[i]] != (signals[days[i - 1]] if i else 0.0)


@given(data=st.data())
def test_live_replay_equals_the_engine(data: st.DataObject) -> None:
    _live_equals_engine(data)


@pytest.mark.slow
@settings(max_examples=200)
@given(data=st.data())
def test_live_replay_equals_the_engine_thoroughly(data: st.DataObject) -> None:
    _live_equals_engine(data)


@given(data=st.data())
def test_live_refusals_by_buying_power_and_risk_are_not_resent(data: st.DataObject) -> None:
    """Orders refused on several bars in a row: by the paper broker's buying power (as the
    engine counts them) or by a risk limit (before they go out), once per change of the
    wanted position; the account never moves."""
    prices = data.draw(price_paths(min_bars=10), "prices")
    targets = data.draw(wanted(len(prices)), "targets")
    prev = np.concatenate([[0.0], targets[:-1]])
    asks = (targets != prev) & (targets != 0)
    params = {"cash": 1_000.0, "size": 5_000.0}
    live, journal = via_live(prices, targets, params)
    assert live.rejected == int(asks[:-1].sum()) == via_broker(prices, targets, params).rejected
    assert live.trades == [] and np.all(live.equity == 1_000.0)
    limited, journal = via_live(prices, targets, {"cash": 1e9, "size": 100.0},
                                Limits(max_position=10))  # half a unit is 50
    refused = journal.events("rejection")
    assert {r["data"]["by"] for r in refused} <= {"risk"}
    assert len(refused) == int(asks.sum())  # checked at the decision, the last bar's too
    assert journal.events("order") == [] and np.all(limited.equity == 1e9)


def test_carry_stops_at_bankruptcy_in_the_runner_as_in_the_engine():
    """Found by the random search: a 4x leveraged long goes bankrupt, and the runner's book kept
    charging interest on its negative cash after the engine had stopped (rules.bankrupt)."""
    import pandas as pd

    close = np.array([100.0, 100.0, 100.0, 60.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0])
    prices = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "vol": 1.0},
                          index=pd.bdate_range("2020-01-01", periods=len(close), name="dt"))
    targets = np.ones(len(close))
    params = {"cash": 1_000.0, "leverage": 4.0, "fraction": 4.0, "cash_rate": 0.5}
    broker = via_broker(prices, targets, params)
    assert broker.equity[-1] < 0 and broker.equity[-1] == broker.equity[-2]  # no carry once broke
    live, _ = via_live(prices, targets, params)
    assert_same(broker, live, "bankrupt with carry")
    assert_same(via_kernel(prices, targets, params), live, "kernel, bankrupt with carry")
