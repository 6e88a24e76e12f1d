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


def trades_on_price(prices: pd.DataFrame, lines: dict[str, pd.Series], trades: pd.DataFrame,
                    title: str = "") -> Figure:
    """Close with the strategy's indicator lines and its entries (triangles) and exits (crosses)."""
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(prices.index, prices["close"], lw=1, color="black", label="close")
    for name, line in lines.items():
        ax.plot(line.index, line, lw=1, label=name)
    for side, marker, color in (("long", "^", "tab:green"), ("short", "v", "tab:red")):
        entries = trades[trades["side"] == side]
        ax.scatter(entries["entry_date"], entries["entry_price"], marker=marker, color=color,
                   s=40, zorder=3, label=f"{side} entry")
    exits = trades[trades["status"] == "closed"]
    ax.scatter(exits["exit_date"], exits["exit_price"], marker="x", color="tab:gray", s=30,
               zorder=3, label="exit")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def equity_and_drawdown(curves: dict[str, pd.Series], title: str = "") -> Figure:
    """Equity curves (e.g. strategy vs buy-and-hold) above their drawdowns from the running peak."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    for name, equity in curves.items():
        top.plot(equity.index, equity, lw=1, label=name)
        bottom.fill_between(equity.index, equity / equity.cummax() - 1, 0, alpha=0.4, label=name)
    top.set_ylabel("equity")
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    fig.tight_layout()
    return fig


def sweep_heatmaps(panels: dict[str, pd.DataFrame], x: str, y: str, value: str,
                   chosen: dict[str, object] | None = None) -> Figure:
    """One heatmap of `value` over the (x, y) grid per panel (e.g. in-sample, out-of-sample), on
    one colour scale, with the chosen parameters circled."""
    grids = {name: t.pivot_table(index=y, columns=x, values=value) for name, t in panels.items()}
    both = np.concatenate([g.to_numpy().ravel() for g in grids.values()])
    lim = np.nanmax(np.abs(both)) if np.isfinite(both).any() else 1.0
    fig, axes = plt.subplots(1, len(grids), figsize=(6 * len(grids), 5), squeeze=False)
    for ax, (name, g) in zip(axes[0], grids.items(), strict=True):
        im = ax.pcolormesh(g.columns, g.index, g.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim,
                           shading="nearest")
        if chosen is not None:
            ax.scatter([chosen[x]], [chosen[y]], s=150, facecolors="none", edgecolors="black",
                       linewidths=2, label="chosen in-sample")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{name}: {value}")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def scenario_fit(history: np.ndarray, simulated: np.ndarray, title: str = "", lags: int = 40) -> Figure:
    """A generator's fit: daily log-return density (log scale, so the tails show) and the
    autocorrelation of |returns| (volatility clustering), history against simulated paths."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    bins = np.linspace(*np.quantile(history, [0.0005, 0.9995]), 80)
    left.hist(simulated.ravel(), bins=bins, density=True, histtype="step", label="simulated (pooled)")
    left.hist(history, bins=bins, density=True, histtype="step", color="black", label="history")
    left.set_yscale("log")
    left.set_xlabel("daily log return")
    left.legend()

    from algotrading.scenarios import autocorrelation

    k = np.arange(1, lags + 1)
    sim = autocorrelation(np.abs(simulated), k)
    right.fill_between(k, *np.quantile(sim, [0.05, 0.95], axis=0), alpha=0.3, label="simulated 5-95 %")
    right.plot(k, np.median(sim, axis=0), label="simulated median")
    right.plot(k, autocorrelation(np.abs(history), k)[0], color="black", label="history")
    right.set_xlabel("lag (days)")
    right.set_ylabel("autocorrelation of |r|")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fan_chart(equity: np.ndarray, index: pd.DatetimeIndex, title: str = "",
              lines: dict[str, pd.Series] | None = None) -> Figure:
    """Quantile bands (5-95 %, 25-75 %) and the median of many equity paths, plus `lines`."""
    fig, ax = plt.subplots(figsize=(10, 4))
    q = np.quantile(equity, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    ax.fill_between(index, q[0], q[4], alpha=0.2, color="tab:blue", label="5-95 %")
    ax.fill_between(index, q[1], q[3], alpha=0.35, color="tab:blue", label="25-75 %")
    ax.plot(index, q[2], color="tab:blue", label="median")
    for name, line in (lines or {}).items():
        ax.plot(line.index, line.to_numpy(), label=name)
    ax.set_yscale("log")
    ax.set_ylabel("equity")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return fig
