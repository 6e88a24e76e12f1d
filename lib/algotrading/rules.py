"""The trading rules, written once: sizing, buying power, costs, fills, stops and targets, the
holding limit, bankruptcy and carry (interest on cash, the borrow fee of shorts), as small
functions of numbers and one named tuple (`Rules`).

Every caller uses these and nothing else decides a size or a fill:
- `backtest.Broker` (the reference bar loop; `Settings.rules` builds the tuple),
- `backtest.kernel` (the batch simulation: numba compiles these same functions into its loop,
  `compiled`), the fused sweep included,
- `features.exits` (the labels' barrier exits, compiled the same way),
- the live runner's order estimate and `live.PaperBroker`'s sizing at the fill.
They are plain Python (math only) so that the Broker, the CLI and the live image run them
without importing numba; tests/parity holds all callers to each other on random paths.

Conventions (docs/backtests.md): a target is +1 long / -1 short / 0 flat (fractions scale);
costs are fractions (`bps` 1e-4 = 1 basis point); NaN means "not set" for `size`, `fraction`,
`stop` and `take`, and 0 for `max_bars`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

# Why a fill happened (the Broker's trade records use the names, the kernel the codes).
REASONS = ("signal", "stop_loss", "take_profit", "max_bars", "bankrupt", "open")
SIGNAL, STOP, TAKE, MAXBARS, BANKRUPT, OPEN = range(6)
NONE = -1  # no exit on this bar


class Rules(NamedTuple):
    """The engine's settings as the rules read them (see `backtest.Settings` for the checks)."""

    cash: float  # starting cash
    size: float  # shares per unit of target; NaN: size by `fraction`
    fraction: float  # of equity per unit of target; NaN when `size` is set
    leverage: float  # an opening order may need at most equity x leverage
    whole: bool  # round fraction-sized positions down to whole shares
    cps: float  # commission per share (money)
    bps: float  # commission as a fraction of notional
    slip: float  # slippage as a fraction of price, always against us
    fill_open: bool  # True: fill at the next bar's open; False: at the decision bar's close
    stop: float  # stop-loss as a fraction of the entry price; NaN: none
    take: float  # take-profit as a fraction of the entry price; NaN: none
    max_bars: int  # exit once a position has been held this many bars; 0: no limit
    risk_free: float  # annual rate for Sharpe and Sortino
    interest: float  # per bar, on the cash held overnight (negative cash pays it)
    borrow: float  # per bar, on the value of a short position held overnight


def unit_cost(price: float, side: float, r: Rules) -> float:
    """Cash one share takes bought (side > 0) or sold at `price`: slipped price + commission."""
    px = price * (1.0 + math.copysign(r.slip, side))
    return px * (1.0 + r.bps) + r.cps


def fill_price(base: float, qty: float, r: Rules) -> float:
    """The price `qty` shares fill at when the market is at `base`: slippage against us."""
    return base * (1.0 + math.copysign(r.slip, qty))


def commission(qty: float, px: float, r: Rules) -> float:
    """Commission on `qty` shares filled at `px`: per share plus a fraction of notional."""
    return abs(qty) * (r.cps + px * r.bps)


def equity_at(rest: float, held: float, price: float, r: Rules) -> float:
    """Equity if `held` shares were closed at `price` (after slippage and commission); `rest` is
    the cash plus every other position's value."""
    if held == 0.0:
        return rest
    px = price * (1.0 - math.copysign(r.slip, held))
    return rest + held * px - abs(held) * (px * r.bps + r.cps)


def target_shares(target: float, price: float, equity: float, r: Rules) -> float:
    """Shares for `target` at `price`: `size` shares per unit, or `fraction` of `equity` (see
    `equity_at`) over the unit cost, rounded down to whole shares if `whole`."""
    if target == 0.0:
        return 0.0
    if not math.isnan(r.size):
        return target * r.size
    shares = abs(target) * r.fraction * max(equity, 0.0) / unit_cost(price, target, r)
    return math.copysign(math.floor(shares) if r.whole else shares, target)


def opens(goal: float, held: float) -> bool:
    """Whether going from `held` to `goal` shares opens, increases or reverses a position."""
    return goal != 0.0 and (abs(goal) > abs(held) or goal * held < 0.0)


def fits(goal: float, held: float, price: float, equity: float, r: Rules) -> bool:
    """Buying power: an order that opens or increases a position must fit in equity x leverage
    (|goal| x unit cost <= leverage x equity); one that reduces or closes always fits."""
    return not opens(goal, held) or \
        abs(goal) * unit_cost(price, goal, r) <= r.leverage * equity * (1.0 + 1e-12)


def allowed(goal: float, held: float, price: float, equity: float, r: Rules) -> float:
    """The shares an order for `goal` may end at: `goal` if it fits the buying power; if not,
    flat when it reverses (the old side still closes) and `held` (no trade) otherwise."""
    if fits(goal, held, price, equity, r):
        return goal
    return 0.0 if held != 0.0 and goal * held < 0.0 else held


def exit_hit(o: float, h: float, lo: float, entry: float, side: float,
             r: Rules) -> tuple[float, int]:
    """The stop or target a position entered at `entry` (side +1 long / -1 short) hits on a bar:
    (price before slippage, STOP or TAKE), or (NaN, NONE). Checked in this order: a gap through
    the stop at the open, a gap through the target at the open (both fill at the open), the stop
    inside the bar, the target inside the bar (so the stop comes first when both are inside)."""
    stop = entry * (1.0 - side * r.stop)  # NaN when no stop: every comparison is False
    goal = entry * (1.0 + side * r.take)
    worst, best = (lo, h) if side > 0 else (h, lo)
    if side * (o - stop) <= 0.0:
        return o, STOP
    if side * (o - goal) >= 0.0:
        return o, TAKE
    if side * (worst - stop) <= 0.0:
        return stop, STOP
    if side * (best - goal) >= 0.0:
        return goal, TAKE
    return math.nan, NONE


def held_too_long(bar: int, entry_bar: int, r: Rules) -> bool:
    """The holding limit: a position entered on `entry_bar` is closed by the order decided at
    `bar` once it will have been held `max_bars` bars at that order's fill."""
    return r.max_bars > 0 and bar - entry_bar + (1 if r.fill_open else 0) >= r.max_bars


def bankrupt(equity: float) -> bool:
    """An account whose equity at a close is at or below zero closes everything and stops."""
    return equity <= 0.0


def resend(target: float, sized_for: float) -> bool:
    """A target is ordered only when it differs from the one the position last answered: a
    refused, filled or exited order is not asked again until the wanted position changes."""
    return target != sized_for


def carry(cash: float, held: float, price: float, r: Rules) -> float:
    """What holding `cash` and `held` shares (last price `price`) overnight adds to the cash:
    interest on the cash (paid on a negative balance) less the borrow fee of a short. It accrues
    on each bar's closing balances and is booked at the next bar's open, before its fills."""
    fee = -held * price * r.borrow if held < 0.0 else 0.0
    return cash * r.interest - fee


def bracket(stop: float, take: float, slip: float = 0.0) -> Rules:
    """Rules that carry only exit levels and slippage (the labels' barriers: no sizing)."""
    nan = math.nan
    #            cash size fraction leverage whole cps  bps  slip fill_open stop take
    return Rules(1.0, nan, 1.0, 1.0, False, 0.0, 0.0, slip, True, stop, take,
                 0, 0.0, 0.0, 0.0)  # max_bars risk_free interest borrow


PRIMITIVES = (unit_cost, fill_price, commission, equity_at, target_shares, opens, fits, allowed,
              exit_hit, held_too_long, bankrupt, resend, carry, bracket)
_registered = False
_checked: set[Path] = set()


def compiled(fn: Callable | None = None, *, parallel: bool = False,
             depends: tuple[ModuleType, ...] = ()) -> Callable:
    """`fn` compiled by numba (cached on disk; GIL released, or `parallel` for a prange loop)
    with these rules compiled into it, so the compiled loops run the same source as the
    plain-Python callers. numba's cache only watches `fn`'s own file, so the file's cache is
    dropped here whenever rules.py (or a module in `depends` whose compiled code `fn` calls)
    changes. No fast-math: the same bits on every CPU (kernel.lane_sum vectorises sums without
    it). Use as `@compiled` or
    `@compiled(parallel=True, depends=(kernel,))`."""
    if fn is None:
        return functools.partial(compiled, parallel=parallel, depends=depends)
    import numba
    from numba.extending import register_jitable

    global _registered
    if not _registered:
        for primitive in PRIMITIVES:
            register_jitable(primitive)
        _registered = True
    _drop_stale_cache(Path(fn.__code__.co_filename), depends)
    options: dict = {"parallel": True} if parallel else {"nogil": True}
    return numba.njit(cache=True, **options)(fn)


def _drop_stale_cache(source: Path, depends: tuple[ModuleType, ...]) -> None:
    if source in _checked:
        return
    _checked.add(source)
    code = b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], *depends))
    stamp = hashlib.sha256(code).hexdigest()
    cache = source.parent / "__pycache__"
    mark = cache / f"{source.stem}.rules.sha256"
    try:
        if mark.exists() and mark.read_text() == stamp:
            return
        for old in cache.glob(f"{source.stem}.*.nb[ic]"):
            old.unlink()
        cache.mkdir(exist_ok=True)
        mark.write_text(stamp)
    except OSError:  # a read-only install: numba then caches elsewhere or compiles afresh
        pass
