"""vectorbt: one Portfolio.from_signals over many columns (sweep combinations or symbols).

Signals are levels, not crossings: entries where SMA(fast) > SMA(slow), exits where it is below;
from_signals ignores an entry while long and an exit while flat (accumulate=False), and a tie is
neither, so the position is kept. Shifting both by one bar and filling at price=open gives our
next-open fill; `close` values the position. size=10 with size_type="amount" is 10 shares;
size=np.inf with size_granularity=1 is all cash in whole shares (our default all-in sizing).

Stops (`sl_stop`/`tp_stop` with open/high/low given, stop_entry_price="price": levels from the
fill price, as ours): vectorbt exits at the level, or at the open when the bar gaps through it,
stop before target (as ours); but it checks stops from the bar after the entry fill, while ours
also checks the entry bar's range after a fill at its open. Entries are then crossings (the bar
our target turns long), since after a stop our engine waits for the wanted position to change
while vectorbt would re-enter on the next level signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import vectorbt as vbt

from peers import CASH


def run(close: pd.Series | pd.DataFrame, open_: pd.Series | pd.DataFrame,
        fast: int | list[int], slow: int | list[int], size: float,
        columns: pd.Index, high: pd.Series | None = None, low: pd.Series | None = None,
        sl_stop: float | None = None, tp_stop: float | None = None) -> pd.DataFrame:
    """final_value, trades_closed, trades_open per column: lists of windows make one column per
    (fast, slow) pair on one series (the sweep); a frame of closes makes one column per symbol."""
    fast_ma = vbt.MA.run(close, window=fast, short_name="fast").ma.to_numpy()
    slow_ma = vbt.MA.run(close, window=slow, short_name="slow").ma.to_numpy()
    fast_ma, slow_ma = fast_ma.reshape(len(close), -1), slow_ma.reshape(len(close), -1)
    entries, exits = fast_ma > slow_ma, fast_ma < slow_ma
    extra: dict = {}
    if np.isinf(size):
        extra["size_granularity"] = 1.0
    if sl_stop is not None or tp_stop is not None:
        held = pd.DataFrame(np.where(entries, 1.0, np.where(exits, 0.0, np.nan))).ffill()
        long = held.fillna(0.0).to_numpy() == 1.0
        entries = long & ~np.vstack([np.zeros((1, long.shape[1]), bool), long[:-1]])
        extra.update(open=_wide(open_, columns), high=_wide(high, columns),
                     low=_wide(low, columns), sl_stop=sl_stop, tp_stop=tp_stop,
                     stop_entry_price="price")
    pf = vbt.Portfolio.from_signals(
        _wide(close, columns), _next_bar(entries, close.index, columns),
        _next_bar(exits, close.index, columns), price=_wide(open_, columns),
        size=size, size_type="amount", init_cash=CASH, fees=0.0, slippage=0.0,
        direction="longonly", accumulate=False, freq="1D", **extra)
    return pd.DataFrame({"final_value": pf.final_value().to_numpy(),
                         "trades_closed": pf.trades.closed.count().to_numpy(),
                         "trades_open": pf.trades.open.count().to_numpy()}, index=columns)


def _next_bar(signal: np.ndarray, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    """The decision of bar t acted on at bar t+1."""
    shifted = np.vstack([np.zeros((1, signal.shape[1]), bool), signal[:-1]])
    return pd.DataFrame(shifted, index=index, columns=columns)


def _wide(values: pd.Series | pd.DataFrame, columns: pd.Index) -> pd.DataFrame:
    """A price series broadcast to every column, or a price frame relabelled to them."""
    if isinstance(values, pd.Series):
        wide = np.broadcast_to(values.to_numpy()[:, None], (len(values), len(columns)))
        return pd.DataFrame(wide, index=values.index, columns=columns)
    return pd.DataFrame(values.to_numpy(), index=values.index, columns=columns)
