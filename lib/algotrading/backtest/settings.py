"""The engine's parameters: the checked Settings, each declared once (type, default, range)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from algotrading.errors import ParameterError
from algotrading.params import CASH, Param, check, param, table
from algotrading.rules import Rules


@dataclass(frozen=True)
class Settings:
    """Engine parameters, each declared once (type, default, range: algotrading.params). All
    costs default to 0, as in backtrader, so results compare one to one. Values are checked and
    converted on construction (ParameterError, a ValueError, naming the parameter)."""

    cash: float = param(CASH, gt=0, help="starting cash")
    size: float | None = param(None, float, gt=0, optional=True,
                               help="shares per unit of target (the workshop's fixed counts)")
    fraction: float | None = param(None, float, gt=0, optional=True,
                                   help="else: this fraction of equity per position (default 1: all-in)")
    leverage: float = param(1.0, gt=0, help="no order may need more than equity x leverage")
    whole_shares: bool = param(True, help="round fraction-sized positions down to whole shares")
    commission_per_share: float = param(0.0, ge=0)
    commission_bps: float = param(0.0, ge=0, lt=10_000)
    slippage_bps: float = param(0.0, ge=0, lt=10_000)
    fill: str = param("open", choices=("open", "close"),
                      help="open: next bar's open; close: the decision bar's close")
    stop_loss: float | None = param(None, float, gt=0, lt=1, optional=True,
                                    help="e.g. 0.05: exit 5 % against the entry price")
    take_profit: float | None = param(None, float, gt=0, optional=True)
    max_bars: int | None = param(None, int, ge=1, optional=True,
                                 help="exit once a position has been held this many bars")
    risk_free: float = param(0.0, gt=-1, help="annual rate for Sharpe and Sortino")
    start: str | pd.Timestamp | None = None  # trade from here; earlier bars are indicator history

    def __post_init__(self) -> None:
        check(self, "the engine")
        if self.size is not None and self.fraction is not None:
            raise ParameterError("give either size (shares) or fraction (of equity), not both")
        if self.size is None and self.fraction is None:
            object.__setattr__(self, "fraction", 1.0)  # all-in by default
        if self.fraction is not None and self.fraction > self.leverage:
            raise ParameterError(f"fraction={self.fraction:g} needs leverage >= {self.fraction:g} "
                             f"(leverage={self.leverage:g})")


    @cached_property
    def rules(self) -> Rules:
        """These settings as the rule functions read them (algotrading.rules)."""
        nan = math.nan
        return Rules(
            cash=float(self.cash), size=nan if self.size is None else float(self.size),
            fraction=nan if self.fraction is None else float(self.fraction),
            leverage=float(self.leverage), whole=bool(self.whole_shares),
            cps=float(self.commission_per_share), bps=self.commission_bps / 1e4,
            slip=self.slippage_bps / 1e4, fill_open=self.fill == "open",
            stop=nan if self.stop_loss is None else float(self.stop_loss),
            take=nan if self.take_profit is None else float(self.take_profit),
            max_bars=int(self.max_bars or 0), risk_free=float(self.risk_free))


SETTINGS: dict[str, Param] = table(Settings)  # the declared ones (all but `start`)
ENGINE_PARAMS = frozenset(Settings.__dataclass_fields__)
