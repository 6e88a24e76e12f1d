"""Shared pieces of the parity suite: hypothesis profiles, random price paths and settings, and
each path of the engine run on the same inputs (the Broker via `backtest.run`, the compiled
kernel that `sweep`/`run_many` use, live replay through the Runner and the paper broker).

Profiles (HYPOTHESIS_PROFILE): `parity` (default, the fast tier: few examples per test),
`parity-thorough` (hundreds, for a run by hand or CI's slow tier), both without deadlines since
the first example compiles numba code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from algotrading import backtest, rules
from algotrading.backtest import kernel
from algotrading.live import Limits, PaperBroker, ReplayFeed, Runner, SqliteJournal
from algotrading.live import runner as live_runner
from algotrading.strategies import Strategy

FAST_EXAMPLES = 40
settings.register_profile("parity", max_examples=FAST_EXAMPLES, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("parity-thorough", max_examples=400, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "parity"))

TOL = 1e-9  # relative, on equity and prices


# --- random inputs ----------------------------------------------------------------------------

@st.composite
def price_paths(draw: st.DrawFn, min_bars: int = 6, max_bars: int = 40) -> pd.DataFrame:
    """Daily bars with ordinary moves, gaps at the open, limit moves (open = high = low = close
    after a jump) and flat bars (no range at all), in cents, always valid OHLC."""
    n = draw(st.integers(min_bars, max_bars))
    prev = draw(st.sampled_from([5.0, 20.0, 100.0]))
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(["move", "move", "gap", "limit", "flat"]))
        if kind == "flat":
            o = h = lo = c = prev
        elif kind == "limit":
            o = h = lo = c = round(max(prev * (1 + draw(st.sampled_from([-0.1, 0.1]))), 0.5), 2)
        else:
            jump = draw(st.floats(-0.2, 0.2)) if kind == "gap" else draw(st.floats(-0.01, 0.01))
            o = round(max(prev * (1 + jump), 0.5), 2)
            c = round(max(o * (1 + draw(st.floats(-0.08, 0.08))), 0.5), 2)
            h = round(max(o, c) * (1 + draw(st.floats(0, 0.04))), 2)
            lo = round(max(min(o, c) * (1 - draw(st.floats(0, 0.04))), 0.01), 2)
        rows.append((o, h, lo, c))
        prev = c
    index = pd.bdate_range("2020-01-02", periods=n, name="dt")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    frame["vol"] = 1e6
    return frame


@st.composite
def wanted(draw: st.DrawFn, n: int, long_only: bool = False) -> np.ndarray:
    """Piecewise-constant wanted positions (each held 1..6 bars), reversals unless long-only."""
    values = [0.0, 0.5, 1.0] if long_only else [-1.0, -0.5, 0.0, 0.5, 1.0]
    out: list[float] = []
    while len(out) < n:
        out += [draw(st.sampled_from(values))] * draw(st.integers(1, 6))
    return np.array(out[:n])


@st.composite
def engine_settings(draw: st.DrawFn, fills: tuple[str, ...] = ("open", "close")
                    ) -> dict[str, Any]:
    """Engine settings: all-in `fraction` or fixed `size` (small to far beyond buying power),
    leverage, the three costs, stop, target and holding limit, fill timing."""
    params: dict[str, Any] = {
        "cash": draw(st.sampled_from([1_000.0, 10_000.0, 100_000.0])),
        "leverage": draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
        "commission_bps": draw(st.sampled_from([0.0, 10.0])),
        "commission_per_share": draw(st.sampled_from([0.0, 0.01])),
        "slippage_bps": draw(st.sampled_from([0.0, 5.0])),
        "fill": draw(st.sampled_from(fills)),
    }
    if draw(st.booleans()):
        params["size"] = draw(st.sampled_from([1.0, 10.0, 60.0, 400.0, 5_000.0]))
    else:
        params["fraction"] = min(draw(st.sampled_from([0.25, 0.5, 1.0, 4.0])), params["leverage"])
    if draw(st.booleans()):
        params["stop_loss"] = draw(st.floats(0.01, 0.2))
    if draw(st.booleans()):
        params["take_profit"] = draw(st.floats(0.01, 0.3))
    if draw(st.booleans()):
        params["max_bars"] = draw(st.integers(1, 6))
    return params


# --- the paths ----------------------------------------------------------------------------------

def scripted(prices: pd.DataFrame, targets: np.ndarray) -> Strategy:
    """A registry-free strategy whose wanted position at each date is the drawn one (looked up
    by date, so a runner's growing prefix sees the same values: no look-ahead)."""
    by_date = pd.Series(targets, index=prices.index)

    def grid(frame: pd.DataFrame, combos: list[dict[str, Any]]) -> np.ndarray:
        return np.repeat(by_date.reindex(frame.index).fillna(0.0).to_numpy()[:, None],
                         len(combos), axis=1)

    return Strategy("scripted", grid)


@dataclass
class Outcome:
    """What each path reports, in one shape: equity per bar, and trades as rows of
    (entry date, exit date or None if open, signed size, entry price, exit price or None)."""

    equity: np.ndarray
    trades: list[tuple[Any, ...]]
    rejected: int


def trade_rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [(t.entry_date, None if t.status == "open" else t.exit_date,
             t.size if t.side == "long" else -t.size, t.entry_price,
             None if t.status == "open" else t.exit_price, t.exit_reason if t.status != "open"
             else "open") for t in frame.itertuples()]


def via_broker(prices: pd.DataFrame, targets: np.ndarray, params: dict[str, Any]) -> Outcome:
    """`backtest.run`: the Broker driven bar by bar."""
    r = backtest.run(targets, prices, **params)
    return Outcome(r.equity.to_numpy(), trade_rows(r.trades), r.metrics["orders_rejected"])


def via_kernel(prices: pd.DataFrame, targets: np.ndarray, params: dict[str, Any]) -> Outcome:
    """The compiled kernel (`kernel.simulate`, the loop `sweep` and `run_many` run), read back
    from its raw buffers, not through the engine's Result."""
    s = backtest.Settings(**params)
    keep = np.ones(len(prices), bool) if s.start is None else \
        np.asarray(prices.index >= pd.Timestamp(s.start))
    frame = prices[keep]
    o, h, lo, c = (np.ascontiguousarray(frame[k].to_numpy(float))
                   for k in ("open", "high", "low", "close"))
    run = kernel.simulate_one(kernel.Bars(o, h, lo, c), targets[keep], s.rules)
    dates = frame.index
    trades = []
    for row in run.trades:
        reason = rules.REASONS[row["reason"]]
        is_open = reason == "open"
        trades.append((dates[row["entry_bar"]], None if is_open else dates[row["exit_bar"]],
                       row["size"], row["entry_price"],
                       None if is_open else row["exit_price"], reason))
    trades.sort(key=lambda t: t[0])
    return Outcome(run.equity, trades, int(run.stats["orders_rejected"]))


LIVE_COSTS = PaperBroker.SETTINGS  # what the paper broker takes; sizing goes to the runner


def via_live(prices: pd.DataFrame, targets: np.ndarray, params: dict[str, Any],
             limits: Limits | None = None) -> tuple[Outcome, SqliteJournal]:
    """Replay through the Runner and the paper broker from `start` (earlier bars are the
    runner's indicator history), as `algotrading live replay` does; trades rebuilt from the
    journal's fills."""
    costs = {k: v for k, v in params.items() if k in LIVE_COSTS}
    sizing = {k: params[k] for k in ("size", "fraction") if k in params}
    feed = ReplayFeed(prices, "SYN", start=params.get("start"))
    journal = SqliteJournal(":memory:")
    Runner(scripted(prices, targets), "SYN", PaperBroker("SYN", **costs), journal,
           history=feed.history, cash=params.get("cash", 100_000.0), limits=limits,
           **sizing).run(feed)
    equity = live_runner.equity(journal).to_numpy()
    rejected = len([e for e in journal.events("rejection")
                    if e["data"]["reason"].startswith("buying power")])
    return Outcome(equity, journal_trades(journal), rejected), journal


def journal_trades(journal: SqliteJournal) -> list[tuple[Any, ...]]:
    """Round trips from the journal's fills (a reversal closes one trade and opens the next),
    in the engine's terms: entry price averaged over adds, the closing fill's price and reason."""
    out: list[list[Any]] = []
    held = 0.0
    for f in live_runner.fills(journal).itertuples():
        qty, day, px = f.qty, pd.Timestamp(f.dt), f.price
        reason = f.reason if isinstance(f.reason, str) and f.reason else "signal"
        if held and (qty > 0) != (held > 0):  # reduce, close or reverse
            closing = min(abs(qty), abs(held))
            if closing == abs(held):
                out[-1][1], out[-1][4], out[-1][5] = day, px, reason
            rest = qty + held if abs(qty) > abs(held) else 0.0
            held += qty
            if rest:
                out.append([day, None, rest, px, None, "open"])
            continue
        if not held:
            out.append([day, None, qty, px, None, "open"])
        else:  # an add: average the entry price as the engine does
            out[-1][3] = (out[-1][3] * abs(held) + px * abs(qty)) / abs(held + qty)
            out[-1][2] = held + qty
        held += qty
    return [tuple(t) for t in out]


def assert_same(a: Outcome, b: Outcome, what: str) -> None:
    """Trade for trade (dates, size, reason exactly; prices to TOL) and equity to TOL."""
    assert len(a.equity) == len(b.equity), what
    np.testing.assert_allclose(a.equity, b.equity, rtol=TOL, atol=1e-9, err_msg=what)
    assert len(a.trades) == len(b.trades), (what, a.trades, b.trades)
    for x, y in zip(a.trades, b.trades, strict=True):
        assert (x[0], x[1], x[5]) == (y[0], y[1], y[5]), (what, x, y)
        assert math.isclose(x[2], y[2], rel_tol=TOL), (what, x, y)
        assert math.isclose(x[3], y[3], rel_tol=TOL), (what, x, y)
        if x[4] is not None:
            assert math.isclose(x[4], y[4], rel_tol=TOL), (what, x, y)
