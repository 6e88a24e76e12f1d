"""A gymnasium trading environment whose fills are the backtest's.

One symbol, one account. At each step the agent sees a window of normalised features known at
bar t's close plus its current exposure and unrealised PnL, and chooses short / flat / long
(Discrete(3) -> target -1, 0, +1). The target goes to `algotrading.backtest.Broker` exactly as the
engine's bar loop sends it (submit after the close; fill at the next open by default; the same
commission, slippage, all-in sizing, buying power and bankruptcy), then the environment moves one
bar on: `on_bar` (fills at the open, stops inside the bar) and `mark` at the close. The reward is
the change in log equity over that bar, so costs are in it. An episode ends at its last bar
(truncated) or when the account is bankrupt (terminated).

Episodes start at a random bar of [first, last - episode_bars] (`first` leaves room for the feature
window), drawn from the environment's seeded generator; `episode_bars=None` plays the whole range
once from `first` (evaluation).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from algotrading.backtest import Broker, Settings, check_prices

ACTIONS = (-1.0, 0.0, 1.0)  # short, flat, long
ACCOUNT_CLIP = 10.0  # exposure and unrealised PnL (fractions of equity) are shown within +-this


def market_features(prices: pd.DataFrame) -> pd.DataFrame:
    """The observation's features, each known at its bar's close: the forecaster's inputs
    (`algotrading.features.workshop` with its extras: scaled SMAs, rates of change, ATR, volume
    z-score, RSI, realised volatility) plus log returns over 1, 5 and 20 bars, the distance of
    the close from its 50- and 200-bar averages and the bar's range (NaN during warm-up)."""
    from algotrading import features

    close = prices["close"].astype(float)
    logc = np.log(close)
    own = pd.DataFrame({
        "r1": logc.diff(), "r5": logc.diff(5), "r20": logc.diff(20),
        "sma50": close / close.rolling(50).mean() - 1,
        "sma200": close / close.rolling(200).mean() - 1,
        "range": (prices["high"] - prices["low"]) / close,
    })
    return pd.concat([features.workshop(prices, extra=True), own], axis=1)


def normaliser(features: pd.DataFrame, end: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of `features` up to `end` (the training period's end), so the
    scaling never sees later data."""
    part = features.loc[:end] if end is not None else features
    mean = part.mean().to_numpy(float)
    std = part.std().to_numpy(float)
    return mean, np.where(np.isfinite(std) & (std > 0), std, 1.0)


class TradingEnv(gym.Env):
    """Trade one symbol's `prices` with a discrete short/flat/long policy (see the module doc).

    `features` (default `market_features(prices)`) are scaled by `scale` = (mean, std) (default:
    `normaliser` over all of `features`; pass the training period's for out-of-sample use),
    clipped to +-`clip` and shown as the last `window` bars. `start`/`end` bound the bars
    episodes may use (dates or None). `engine` holds the backtest's engine parameters.
    """

    metadata = {"render_modes": []}

    def __init__(self, prices: pd.DataFrame, features: pd.DataFrame | None = None, window: int = 30,
                 episode_bars: int | None = 252, start: Any = None, end: Any = None,
                 scale: tuple[np.ndarray, np.ndarray] | None = None, clip: float = 5.0,
                 **engine: Any):
        super().__init__()
        prices = check_prices(prices)
        features = market_features(prices) if features is None else features
        if not features.index.equals(prices.index):
            raise ValueError("features must be indexed like prices (one row per bar)")
        if window < 1:
            raise ValueError(f"window={window}: want at least 1 bar")
        self.settings = Settings(**engine)
        mean, std = scale if scale is not None else normaliser(features)
        x = np.nan_to_num((features.to_numpy(float) - mean) / std, nan=0.0)
        x = np.clip(x, -clip, clip).astype(np.float32)
        ready = int(np.argmax(features.notna().all(axis=1).to_numpy())) if len(features) else 0
        lo = np.searchsorted(prices.index, pd.Timestamp(start)) if start is not None else 0
        hi = (np.searchsorted(prices.index, pd.Timestamp(end), side="right") if end is not None
              else len(prices)) - 1
        self.first = max(lo, ready, window - 1)
        self.last = hi
        if episode_bars is not None and episode_bars < 1:
            raise ValueError(f"episode_bars={episode_bars}: want at least 1")
        if self.last - self.first < (episode_bars or 1):
            raise ValueError(f"only {self.last - self.first + 1} usable bars between start and end "
                             f"after a {window}-bar window and the features' warm-up")
        self.episode_bars = episode_bars
        self.window = window
        self.index = prices.index
        self.columns = list(features.columns)
        # obs rows: the window of feature rows ending at bar t, flattened (a view, no copies)
        self._x = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # (bars-w+1, k, w)
        self._obs = np.empty(window * x.shape[1] + 2, np.float32)
        self._o, self._h, self._lo, self._c = ([[v] for v in prices[k].to_numpy(float).tolist()]
                                               for k in ("open", "high", "low", "close"))
        bound = np.full(self._obs.shape, clip, np.float32)
        bound[-2:] = ACCOUNT_CLIP
        self.observation_space = gym.spaces.Box(-bound, bound, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTIONS))
        self.broker: Broker | None = None
        self.t = self.stop = 0
        self.entry = math.nan
        self.positions: list[float] = []  # the targets sent, one per decision bar (for replays)

    # -- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self.episode_bars is None:
            t0, self.stop = self.first, self.last
        else:
            t0 = int(self.np_random.integers(self.first, self.last - self.episode_bars + 1))
            self.stop = t0 + self.episode_bars
        self.t = t0
        self.broker = Broker(self.settings)
        self.broker.on_bar(t0, self._o[t0], self._h[t0], self._lo[t0])
        self._equity = self.broker.mark(self._c[t0])
        self.entry = math.nan
        self.positions = []
        return self._observe(), {"bar": t0, "equity": self._equity}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        b = self.broker
        target = ACTIONS[int(action)]
        self.positions.append(target)
        held = b.shares[0]
        b.submit(0, target)
        t = self.t = self.t + 1
        b.on_bar(t, self._o[t], self._h[t], self._lo[t])
        if b.shares[0] != held and b.shares[0]:
            self.entry = b.journal[-1].price  # the position changed at this open
        before, self._equity = self._equity, b.mark(self._c[t])
        reward = (math.log(self._equity / before) if self._equity > 0 and before > 0
                  else -10.0)  # bankruptcy: a large, finite penalty
        terminated = b.bankrupt
        truncated = t >= self.stop and not terminated
        return self._observe(), reward, terminated, truncated, {"bar": t, "equity": self._equity}

    def _observe(self) -> np.ndarray:
        b, t, obs = self.broker, self.t, self._obs
        k = self._x.shape[1]
        obs[:-2] = self._x[t - self.window + 1].T.reshape(-1) if k else obs[:-2]
        shares, close = b.shares[0], self._c[t][0]
        equity = self._equity if self._equity > 0 else 1.0
        exposure = shares * close / equity
        pnl = shares * (close - self.entry) / equity if shares else 0.0
        obs[-2] = min(max(exposure, -ACCOUNT_CLIP), ACCOUNT_CLIP)
        obs[-1] = min(max(pnl, -ACCOUNT_CLIP), ACCOUNT_CLIP)
        return obs.copy()

    # -- helpers -----------------------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Account equity at the current bar's close."""
        return self._equity

    def episode_prices(self, prices: pd.DataFrame) -> pd.DataFrame:
        """The bars of the current episode so far (for replaying `positions` through
        `backtest.run`)."""
        start = self.t - len(self.positions)
        return prices.iloc[start:self.t + 1]
