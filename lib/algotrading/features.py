"""Features and labels shared by the models, the ML strategy and the coming RL environment.

Features at bar t use bars up to and including t only (tested by perturbing later bars).
Labels at bar t look ahead by construction (they are what a trade decided at t's close would
have earned): use them to train and score models, never as an input.

The barrier rule (`exits`) is the engine's, computed by the same functions (algotrading.rules): a
trade decided at bar t fills at bar t+1's open; from that bar on, each bar is checked in this
order: a gap through the stop at the open, a gap through the target at the open, the stop inside
the bar, the target inside the bar (so the stop is assumed first when both are inside one bar);
without either, the engine's `max_bars=horizon` closes the trade at the open after bar t+horizon.
Labels and the ML strategy both call `exits`, and a test replays sampled trades through
`backtest.run` to prove it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from algotrading import rules

PERIODS = tuple(range(2, 17))  # the workshop's SMA and ROC periods
EXTRA = ("atr14", "vol_z20", "rsi14", "rvol20")
LABEL_MODES = ("barrier", "workshop")
TAKE_PROFIT, STOP_LOSS, TIMEOUT = 1, -1, 0  # `exits` outcomes


def workshop(prices: pd.DataFrame, extra: bool = False) -> pd.DataFrame:
    """The workshop's 31 inputs, in its order: close and SMA(2..16) (a NaN average replaced by the
    close), min-max scaled within each row (a row whose 16 values are equal scales to 0, as
    scikit-learn's MinMaxScaler does), then ROC(2..16) = (close / close n bars ago - 1) * 100 as
    TA-Lib computes it, NaN -> 0. `extra=True` appends `EXTRA`: ATR(14) / close, the volume's
    20-bar z-score, RSI(14) (simple averages) and 20-bar realised volatility of log returns."""
    close = prices["close"].astype(float)
    levels = {"close": close}
    for n in PERIODS:
        levels[f"sma{n}"] = close.rolling(n).mean().fillna(close)
    level = pd.DataFrame(levels)
    low = level.min(axis=1)
    span = level.max(axis=1) - low
    scaled = level.sub(low, axis=0).div(span.where(span > 0, 1.0), axis=0)
    roc = pd.DataFrame({f"roc{n}": ((close / close.shift(n) - 1) * 100).fillna(0.0)
                        for n in PERIODS})
    out = pd.concat([scaled, roc], axis=1)
    return pd.concat([out, _extra(prices)], axis=1) if extra else out


def _extra(prices: pd.DataFrame) -> pd.DataFrame:
    """Scale-free extras for the models and the RL environment (NaN during warm-up -> 0)."""
    close, high, low = (prices[k].astype(float) for k in ("close", "high", "low"))
    prev = close.shift(1)
    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    vol = prices["vol"].astype(float) if "vol" in prices else pd.Series(0.0, index=prices.index)
    vol_std = vol.rolling(20).std()
    change = close.diff()
    gain = change.clip(lower=0).rolling(14).mean()
    loss = (-change.clip(upper=0)).rolling(14).mean()
    total = gain + loss
    out = pd.DataFrame({
        "atr14": true_range.rolling(14).mean() / close,
        "vol_z20": (vol - vol.rolling(20).mean()) / vol_std.where(vol_std > 0),
        "rsi14": (100 * gain / total.where(total > 0)).where(total > 0, 50.0),
        "rvol20": np.log(close).diff().rolling(20).std() * np.sqrt(252),
    }, index=prices.index)
    return out.fillna(0.0)


def exits(prices: pd.DataFrame, side: int, horizon: int, target: float, stop: float,
          slippage_bps: float = 0.0, partial: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """For a trade decided at each bar t (filled at t+1's open, `side` +1 long / -1 short):
    the bar it ends on and how (TAKE_PROFIT, STOP_LOSS, or TIMEOUT after `horizon` bars).

    Returns (exit_bar, outcome), both float arrays of len(prices); NaN where fewer than `horizon`
    bars follow t. A TIMEOUT's exit_bar is t + horizon (the engine sells at the next open).
    The levels are computed exactly as the engine does, from the fill price after slippage.
    `partial=True` also resolves those last trades where a level was already hit on the bars that
    exist (NaN stays where none was): what a strategy knows at the last close, which labels,
    needing the whole horizon, must not use.
    """
    if side not in (1, -1):
        raise ValueError(f"side must be 1 (long) or -1 (short), not {side!r}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, not {horizon!r}")
    n = len(prices)
    rows = n - 1 if partial else n - horizon  # trades whose bars are looked at
    if rows <= 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    o, h, lo = (np.ascontiguousarray(prices[k].to_numpy(float)) for k in ("open", "high", "low"))
    bracket = rules.bracket(stop=stop, take=target, slip=slippage_bps / 1e4)
    return _barrier_loop()(o, h, lo, float(side), horizon, bracket, rows)


def _barriers(o: np.ndarray, h: np.ndarray, lo: np.ndarray, side: float, horizon: int,
              r: rules.Rules, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`exits`' loop, compiled: each trade's fill and levels, then its bars through
    rules.exit_hit until one hits, or a timeout once the whole horizon exists."""
    n = len(o)
    exit_bar = np.full(n, np.nan)
    outcome = np.full(n, np.nan)
    for t in range(rows):
        entry = rules.fill_price(o[t + 1], side, r)
        for j in range(t + 1, min(t + horizon, n - 1) + 1):
            code = rules.exit_hit(o[j], h[j], lo[j], entry, side, r)[1]
            if code != rules.NONE:
                exit_bar[t] = j
                outcome[t] = TAKE_PROFIT if code == rules.TAKE else STOP_LOSS
                break
        if np.isnan(outcome[t]) and t + horizon < n:
            exit_bar[t] = t + horizon
            outcome[t] = TIMEOUT
    return exit_bar, outcome


@functools.cache
def _barrier_loop() -> Callable:
    """numba is imported on the first label, not with this module."""
    return rules.compiled(_barriers)


def labels(prices: pd.DataFrame, horizon: int = 5, target: float = 0.02, stop: float = 0.015,
           mode: str = "barrier") -> pd.DataFrame:
    """`long` and `short` (1.0 / 0.0, NaN where fewer than `horizon` bars follow), indexed like
    `prices`.

    mode="barrier": 1 when a trade entered at the next bar's open reaches its target
    (entry * (1 +/- target)) before its stop (entry * (1 -/+ stop)) within `horizon` bars, by the
    engine's rules (see `exits`). mode="workshop": the workshop's close-only rule over the closes
    of bars t+1..t+horizon against close c at t: long if max >= c * (1 + target) and
    min >= c * (1 - stop); short mirrored.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"mode must be one of {LABEL_MODES}, not {mode!r}")
    if not (target > 0 and stop > 0):
        raise ValueError(f"target and stop must be > 0 (fractions of the entry), got {target}, {stop}")
    if mode == "barrier":
        out = {name: exits(prices, side, horizon, target, stop)[1]
               for name, side in (("long", 1), ("short", -1))}
        return pd.DataFrame({k: np.where(np.isnan(v), np.nan, (v == TAKE_PROFIT).astype(float))
                             for k, v in out.items()}, index=prices.index)
    close = prices["close"].to_numpy(float)
    n = len(close)
    long = np.full(n, np.nan)
    short = np.full(n, np.nan)
    rows = n - horizon
    if rows > 0:
        ahead = sliding_window_view(close[1:], horizon)[:rows]
        c = close[:rows]
        hi, lo = ahead.max(axis=1), ahead.min(axis=1)
        long[:rows] = ((hi >= c * (1 + target)) & (lo >= c * (1 - stop))).astype(float)
        short[:rows] = ((lo <= c * (1 - target)) & (hi <= c * (1 + stop))).astype(float)
    return pd.DataFrame({"long": long, "short": short}, index=prices.index)


def label_rates(frame: pd.DataFrame) -> pd.Series:
    """Defined rows and the share of 1s per label column: the class balance a model must beat
    (always predicting 0 scores 1 - rate on accuracy)."""
    defined = frame.dropna()
    return pd.Series({"rows": len(defined), **{c: float(defined[c].mean()) for c in frame.columns}})
