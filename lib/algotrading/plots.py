"""Charts the notebooks share; each returns its matplotlib Figure so callers can save or show it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def volume_close_combo(bars: pd.DataFrame, title: str = "") -> Figure:
    """The workshop's QuickSight 'clustered bar combo': daily volume bars with the close line."""
    fig, ax = plt.subplots(figsize=(10, 4))
    days = pd.to_datetime(bars.index)
    ax.bar(days, bars["vol"], color="tab:blue", alpha=0.5, label="volume")
    ax.set_ylabel("volume")
    ax2 = ax.twinx()
    ax2.plot(days, bars["close"], color="tab:red", marker="o", label="close")
    ax2.set_ylabel("close")
    ax.set_title(title)
    fig.autofmt_xdate()
    fig.legend(loc="upper left", bbox_to_anchor=(0.08, 0.9))
    return fig


def price_with_mas(prices: pd.DataFrame, windows: Sequence[int] = (50, 200), title: str = "") -> Figure:
    """Close with simple moving averages (each uses only closes up to its own day)."""
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(prices.index, prices["close"], lw=1, label="close")
    for w in windows:
        ax.plot(prices.index, prices["close"].rolling(w).mean(), lw=1, label=f"SMA {w}")
    ax.set_title(title)
    ax.legend()
    return fig


def return_histogram(returns: pd.DataFrame, bins: int = 100) -> Figure:
    """Daily simple returns per symbol, to show fat tails against a normal of the same moments."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for sym in returns.columns:
        r = returns[sym].dropna()
        ax.hist(r, bins=bins, alpha=0.5, density=True, label=sym)
    r = returns.stack().dropna()
    x = np.linspace(r.min(), r.max(), 400)
    ax.plot(x, np.exp(-0.5 * ((x - r.mean()) / r.std()) ** 2) / (r.std() * np.sqrt(2 * np.pi)),
            "k--", lw=1, label="normal (pooled)")
    ax.set_xlabel("daily return")
    ax.legend()
    return fig


def correlation_heatmap(corr: pd.DataFrame, title: str = "Daily return correlation") -> Figure:
    """Pairwise correlation matrix with the values written in the cells."""
    n = len(corr)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(3, 0.6 * n + 1)))
    im = ax.imshow(corr.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), corr.columns, rotation=90)
    ax.set_yticks(range(n), corr.index)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{corr.iat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig
