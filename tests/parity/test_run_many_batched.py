"""run_many's batched path (fused.run_blocks: the built-in strategies' indicators, targets and
the kernel in one compiled call) against the Broker (`backtest.run`) per symbol, on random
paths of different lengths and random settings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from algotrading import backtest

from .conftest import engine_settings, price_paths


@given(data=st.data())
def test_batched_rows_equal_run(data: st.DataObject) -> None:
    paths = data.draw(st.lists(price_paths(), min_size=1, max_size=4), "paths")
    shortest = min(len(p) for p in paths)
    kind = data.draw(st.sampled_from(["sma", "ema", "breakout"]), "kind")
    if kind == "breakout":
        params = {"period": data.draw(st.integers(1, shortest - 1), "period"),
                  "go_long": data.draw(st.booleans(), "go_long"),
                  "go_short": data.draw(st.booleans(), "go_short")}
    else:
        slow = data.draw(st.integers(2, shortest - 1), "slow")
        params = {"fast_period": data.draw(st.integers(1, slow - 1), "fast"),
                  "slow_period": slow, "long_only": data.draw(st.booleans(), "long_only")}
    params |= data.draw(engine_settings(), "settings")
    prices = {f"P{i}": p for i, p in enumerate(paths)}
    table = backtest.run_many(kind, prices, **params)
    for symbol, frame in prices.items():
        m = backtest.run(kind, frame, **params).metrics
        row = table.loc[symbol]
        assert row["final_value"] == m["final_value"], symbol
        for key in ("trades_closed", "trades_open", "orders_rejected", "bankrupt"):
            assert row[key] == m[key], (symbol, key)
