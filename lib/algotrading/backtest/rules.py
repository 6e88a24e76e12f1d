"""The engine's sizing and buying-power rules as plain functions of the account's numbers.

The backtest `Broker` calls them, and so do the live runner (its order estimate at the decision
close) and the paper broker (the order sized at the fill), so one rule sizes and refuses a position
everywhere. The compiled kernel (kernel.py) keeps numba twins of them; tests/parity holds it,
the labels' exits and live replay to the Broker.
"""

from __future__ import annotations

import math

from algotrading.backtest.settings import Settings


def unit_cost(price: float, side: float, s: Settings) -> float:
    """Cash one share takes bought (side > 0) or sold at `price`: slipped price + commission."""
    px = price * (1.0 + math.copysign(s.slippage_bps / 1e4, side))
    return px * (1.0 + s.commission_bps / 1e4) + s.commission_per_share


def equity_at(rest: float, held: float, price: float, s: Settings) -> float:
    """Equity if `held` shares were closed at `price` (after slippage and commission); `rest` is
    the cash plus every other position's value."""
    if not held:
        return rest
    px = price * (1.0 - math.copysign(s.slippage_bps / 1e4, held))
    return rest + (held * px - abs(held) * (px * s.commission_bps / 1e4 + s.commission_per_share))


def target_shares(target: float, price: float, equity: float, s: Settings) -> float:
    """Shares for `target` (+1 long, -1 short, 0 flat; fractions scale) at `price`: `size` shares
    per unit, or `fraction` of `equity` (see `equity_at`) over the unit cost, whole shares if
    `whole_shares`."""
    if s.size is not None or not target:
        return target * (s.size or 0.0)
    budget = abs(target) * s.fraction * max(equity, 0.0)
    shares = budget / unit_cost(price, target, s)
    return math.copysign(math.floor(shares) if s.whole_shares else shares, target)


def opens(goal: float, held: float) -> bool:
    """Whether going from `held` to `goal` shares opens, increases or reverses a position."""
    return bool(goal) and (abs(goal) > abs(held) or goal * held < 0)


def fits(goal: float, held: float, price: float, equity: float, s: Settings) -> bool:
    """Buying power: an order that opens or increases a position must fit in equity x leverage
    (|goal| x unit cost <= leverage x equity); one that reduces or closes always fits."""
    return not opens(goal, held) or \
        abs(goal) * unit_cost(price, goal, s) <= s.leverage * equity * (1 + 1e-12)
