"""Pre-trade risk checks: every order the strategy wants passes `Limits.check` or is rejected
with a reason (which the runner journals). Orders of the kill switch skip them: flattening must
always be possible.

The price collar compares the price an order is sized at (this bar's close) with the previous
close: a bar that moved more than `collar` is more likely a bad print than a tradable price.
The daily loss is today's equity change (close to close); once it exceeds `daily_loss`, orders
that open or increase a position are refused for the rest of the day.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from algotrading.params import check, param


@dataclass(frozen=True)
class Limits:
    """Configurable limits; None switches a check off."""

    max_order_notional: float | None = param(None, float, ge=0, optional=True, help="|qty| x price")
    max_order_shares: float | None = param(None, float, ge=0, optional=True)
    max_position: float | None = param(None, float, ge=0, optional=True,
                                       help="|shares| after the order")
    collar: float | None = param(None, float, ge=0, optional=True,
                                 help="fraction, e.g. 0.1: price within 10 % of the last close")
    max_orders_per_day: int | None = param(None, int, ge=0, optional=True)
    daily_loss: float | None = param(None, float, ge=0, optional=True, help="money")

    def __post_init__(self) -> None:
        check(self, "the risk limits")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, qty: float, price: float, held: float, last_close: float | None,
              orders_today: int, day_pnl: float) -> str | None:
        """Why an order for `qty` shares at about `price` must not go out, or None."""
        after = held + qty
        increases = abs(after) > abs(held) or after * held < 0
        if self.max_order_shares is not None and abs(qty) > self.max_order_shares:
            return f"order of {abs(qty):g} shares exceeds max_order_shares {self.max_order_shares:g}"
        if self.max_order_notional is not None and abs(qty) * price > self.max_order_notional:
            return (f"order notional {abs(qty) * price:,.2f} exceeds max_order_notional "
                    f"{self.max_order_notional:,.2f}")
        if self.max_position is not None and increases and abs(after) > self.max_position:
            return f"position of {abs(after):g} shares would exceed max_position {self.max_position:g}"
        if self.collar is not None and last_close and abs(price / last_close - 1) > self.collar:
            return (f"price {price:g} is {abs(price / last_close - 1):.1%} from the last close "
                    f"{last_close:g}, outside the {self.collar:.1%} collar")
        if self.max_orders_per_day is not None and orders_today >= self.max_orders_per_day:
            return f"{orders_today} order(s) today reach max_orders_per_day {self.max_orders_per_day}"
        if self.daily_loss is not None and increases and -day_pnl > self.daily_loss:
            return f"today's loss {-day_pnl:,.2f} exceeds daily_loss {self.daily_loss:,.2f}"
        return None
