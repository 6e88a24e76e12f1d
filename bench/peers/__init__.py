"""The same SMA crossover, long only, written for each peer engine with our conventions; one module
per peer, so a missing peer is one ImportError.

Rules (ours, see ARCHITECTURE.md "Backtest semantics"): after bar t's close, go long `size` shares
if SMA(fast) > SMA(slow), go flat if SMA(fast) < SMA(slow), keep the position on a tie; the first
decision is on the first bar where SMA(slow) exists; market orders fill at bar t+1's open (an
order decided on the last bar never fills); cash 100,000; no commission or slippage; a position
still open at the end is marked to the last close and counted as one open trade.

Each peer returns, per run, the final value and the closed and open trade counts and computes no
more than that: the peers do less work than our engine, which always computes every metric.
"""

from __future__ import annotations

from typing import NamedTuple

CASH = 100_000.0
COLUMNS = ["final_value", "trades_closed", "trades_open"]


class Outcome(NamedTuple):
    final_value: float
    trades_closed: int
    trades_open: int
