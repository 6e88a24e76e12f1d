"""The engine's parameters: one declared table (type, default, range) and the checked Settings."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from algotrading.errors import ParameterError
from algotrading.strategies import Param, check_params

# The engine's parameters, declared like a strategy's (see strategies.Param): type and range.
SETTINGS: dict[str, Param] = {
    "cash": Param(100_000.0, float, gt=0, help="starting cash"),
    "size": Param(None, float, gt=0, optional=True, help="shares per unit of target"),
    "fraction": Param(None, float, gt=0, optional=True,
                      help="else: this fraction of equity per position (default 1: all-in)"),
    "leverage": Param(1.0, float, gt=0, help="no order may need more than equity x leverage"),
    "whole_shares": Param(True, bool, help="round fraction-sized positions down to whole shares"),
    "commission_per_share": Param(0.0, float, ge=0),
    "commission_bps": Param(0.0, float, ge=0, lt=10_000),
    "slippage_bps": Param(0.0, float, ge=0, lt=10_000),
    "fill": Param("open", str, choices=("open", "close"),
                  help="open: next bar's open; close: the decision bar's close"),
    "stop_loss": Param(None, float, gt=0, lt=1, optional=True,
                       help="e.g. 0.05: exit 5 % against the entry price"),
    "take_profit": Param(None, float, gt=0, optional=True),
    "max_bars": Param(None, int, ge=1, optional=True,
                      help="exit once a position has been held this many bars"),
    "risk_free": Param(0.0, float, gt=-1, help="annual rate for Sharpe and Sortino"),
}


@dataclass(frozen=True)
class Settings:
    """Engine parameters (all costs default 0, as in backtrader, so results compare one to one).
    Values are checked and converted on construction (ParameterError, a ValueError, naming the parameter)."""

    cash: float = 100_000.0
    size: float | None = None  # shares per unit of target (the workshop's fixed counts)
    fraction: float | None = None  # else: this fraction of equity per position (default 1.0)
    leverage: float = 1.0
    whole_shares: bool = True
    commission_per_share: float = 0.0
    commission_bps: float = 0.0
    slippage_bps: float = 0.0
    fill: str = "open"
    stop_loss: float | None = None
    take_profit: float | None = None
    max_bars: int | None = None
    risk_free: float = 0.0
    start: str | pd.Timestamp | None = None  # trade from here; earlier bars are indicator history

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in SETTINGS}
        for key, value in check_params(SETTINGS, given, "the engine").items():
            object.__setattr__(self, key, value)
        if self.size is not None and self.fraction is not None:
            raise ParameterError("give either size (shares) or fraction (of equity), not both")
        if self.size is None and self.fraction is None:
            object.__setattr__(self, "fraction", 1.0)  # all-in by default
        if self.fraction is not None and self.fraction > self.leverage:
            raise ParameterError(f"fraction={self.fraction:g} needs leverage >= {self.fraction:g} "
                             f"(leverage={self.leverage:g})")


ENGINE_PARAMS = frozenset(Settings.__dataclass_fields__)
