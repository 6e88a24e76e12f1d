"""Charts the notebooks and the report share; each returns its matplotlib Figure so callers can
save or show it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from algotrading import metrics
from algotrading.params import CASH

PERCENT = FuncFormatter(lambda v, _: f"{v:.0%}")
COLORS = {"strategy": "tab:blue", "hold": "tab:gray", "long": "tab:green", "short": "tab:red"}


def _millions(v: float, _: object) -> str:
    return f"{v / 1e6:,.0f}M" if abs(v) >= 1e6 else f"{v:,.0f}"


def volume_close_combo(bars: pd.DataFrame, title: str = "") -> Figure:
    """The workshop's QuickSight 'clustered bar combo': daily volume bars with the close line."""
    if bars.empty:
        raise ValueError(f"no bars to chart{f' for {title}' if title else ''}: the query returned no rows")
    fig, ax = plt.subplots(figsize=(10, 4))
    days = pd.to_datetime(bars.index)
    ax.bar(days, bars["vol"], color="tab:blue", alpha=0.5, label="volume")
    ax.yaxis.set_major_formatter(FuncFormatter(_millions))  # no "1e9" offset text to collide with
    ax.set_ylabel("volume")
    ax2 = ax.twinx()
    ax2.plot(days, bars["close"], color="tab:red", marker="o", label="close")
    ax2.set_ylabel("close")
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax2.legend(handles, [h.get_label() for h in handles], loc="upper center",
               bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
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
    """Daily returns per symbol on a log density axis beside a normal of the same mean and spread:
    on a log scale the normal is a parabola, and the days far outside it are the fat tails."""
    fig, ax = plt.subplots(figsize=(10, 4))
    r = returns.stack().dropna()
    edges = np.linspace(r.min(), r.max(), bins + 1)
    for sym in returns.columns:
        ax.hist(returns[sym].dropna(), bins=edges, density=True, histtype="step", lw=1.2, label=sym)
    x = np.linspace(r.min(), r.max(), 400)
    normal = np.exp(-0.5 * ((x - r.mean()) / r.std()) ** 2) / (r.std() * np.sqrt(2 * np.pi))
    ax.plot(x, normal, "k--", lw=1, label="normal, same mean and std (pooled)")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5 / (len(r) * (edges[1] - edges[0])))  # about one day per bin
    ax.xaxis.set_major_formatter(PERCENT)
    ax.set_xlabel("daily return")
    ax.set_ylabel("density (log scale)")
    ax.legend()
    return fig


def correlation_heatmap(corr: pd.DataFrame, title: str = "Daily return correlation") -> Figure:
    """Pairwise correlation matrix with the values written in the cells."""
    n = len(corr)
    size = max(5.0, 0.55 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size * 0.8))
    im = ax.imshow(corr.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), corr.columns, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), corr.index)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = corr.iat[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9 if n <= 8 else 7,
                        color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def drawdown(equity: pd.Series) -> pd.Series:
    """Fall from the running peak, as a negative fraction."""
    return equity / equity.cummax() - 1


def _shade_positions(ax: Any, positions: pd.Series) -> None:
    """Background bands where the position is long (green) or short (red): readable for any
    number of trades, where one marker per trade piles up."""
    side = np.sign(positions.to_numpy(float))
    for value, color, label in ((1, COLORS["long"], "long"), (-1, COLORS["short"], "short")):
        if (side == value).any():
            ax.fill_between(positions.index, 0, 1, where=side == value, step="post", color=color,
                            alpha=0.12, lw=0, transform=ax.get_xaxis_transform(), label=f"held {label}")


def trades_on_price(prices: pd.DataFrame, lines: Mapping[str, pd.Series], trades: pd.DataFrame,
                    title: str = "", positions: pd.Series | None = None, max_markers: int = 40,
                    ax: Any = None) -> Figure:
    """Close with the strategy's indicator lines and its trades: held periods shaded when
    `positions` is given, entry triangles and exit crosses while there are at most `max_markers`
    trades (past that the markers only hide the price; the shading carries the story)."""
    fig = ax.figure if ax is not None else plt.subplots(figsize=(11, 4.5))[0]
    ax = ax if ax is not None else fig.axes[0]
    ax.plot(prices.index, prices["close"], lw=1, color="black", label="close")
    for name, line in lines.items():
        ax.plot(line.index, line, lw=1, label=name)
    if positions is not None:
        _shade_positions(ax, positions)
    if len(trades) <= max_markers:
        for side, marker in (("long", "^"), ("short", "v")):
            entries = trades[trades["side"] == side]
            ax.scatter(entries["entry_date"], entries["entry_price"], marker=marker,
                       color=COLORS[side], s=40, zorder=3, label=f"{side} entry")
        exits = trades[trades["status"] == "closed"]
        ax.scatter(exits["exit_date"], exits["exit_price"], marker="x", color="tab:gray", s=30,
                   zorder=3, label="exit")
    note = "" if len(trades) <= max_markers else f" ({len(trades)} trades: held periods shaded)"
    ax.set_title(title + note)
    ax.set_ylabel("price")
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    return fig


def equity_and_drawdown(curves: Mapping[str, pd.Series], title: str = "",
                        marks: Sequence[pd.Timestamp] = (), axes: Sequence[Any] | None = None
                        ) -> Figure:
    """Equity curves (e.g. strategy vs buy-and-hold) above their drawdowns from the running peak.
    Drawdowns are lines (the first curve's also lightly filled) so overlaps stay readable;
    `marks` draws dotted vertical lines (e.g. walk-forward window starts)."""
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [2, 1]})
    top, bottom = axes
    palette = [COLORS["strategy"], COLORS["hold"], "tab:orange", "tab:purple", "tab:brown"]
    for i, (name, equity) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        z = 3 if i == 0 else 2  # the first curve (the strategy) stays visible where they overlap
        top.plot(equity.index, equity, lw=1.2, color=color, label=name, zorder=z)
        dd = drawdown(equity)
        bottom.plot(dd.index, dd, lw=1, color=color, label=name, zorder=z)
        if i == 0:
            bottom.fill_between(dd.index, dd, 0, color=color, alpha=0.2, lw=0)
    for ax in (top, bottom):
        for m in marks:
            ax.axvline(m, color="black", lw=0.6, ls=":", alpha=0.6)
    top.set_ylabel("equity")
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PERCENT)
    bottom.legend(loc="lower left", fontsize=8)
    fig = top.figure
    fig.tight_layout()
    return fig


def hold_equity(close: pd.Series, cash: float) -> pd.Series:
    """Buy-and-hold of the same bars: all cash in at the first close, as the engine's benchmark."""
    return cash * close / close.iloc[0]


def result_chart(result: Any, prices: pd.DataFrame | None = None,
                 lines: Mapping[str, pd.Series] | None = None, title: str = "",
                 start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None,
                 max_markers: int = 40) -> Figure:
    """One backtest in three panels sharing the date axis: price with indicator `lines`, held
    periods and (up to `max_markers`) trade markers; equity against buy-and-hold; drawdowns.

    `prices` are the bars the result was run on (a Result does not keep them; extra history is
    cut to the result's dates). `start`/`end` zoom into a part of the run, e.g. to see single
    trades of a busy strategy; buy-and-hold and drawdowns are still measured from the run's start.
    """
    prices = prices if prices is not None else getattr(result, "prices", None)
    if prices is None:
        raise ValueError("result_chart needs prices=<the bars the backtest ran on>")
    equity = result.equity
    bars = prices.loc[equity.index[0]:equity.index[-1]]
    cash = float(result.params.get("cash", CASH))
    full = {"strategy": equity, "buy and hold": hold_equity(bars["close"], cash)}
    view = slice(start, end)
    days = equity.loc[view].index
    trades = result.trades
    if len(days) < len(equity):
        trades = trades[(trades["exit_date"] >= days[0]) & (trades["entry_date"] <= days[-1])]
    fig, (price_ax, eq_ax, dd_ax) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                                                 gridspec_kw={"height_ratios": [2.2, 1.6, 1]})
    shown = {k: v.loc[view] for k, v in (lines or {}).items()}
    positions = result.positions if isinstance(result.positions, pd.Series) else None
    trades_on_price(bars.loc[view], shown, trades, title,
                    positions.loc[view] if positions is not None else None, max_markers, price_ax)
    for (name, curve), color in zip(full.items(), (COLORS["strategy"], COLORS["hold"]), strict=True):
        z = 3 if name == "strategy" else 2
        eq_ax.plot(days, curve.loc[view], lw=1.2, color=color, label=name, zorder=z)
        dd = drawdown(curve).loc[view]  # measured from the run's start, also when zoomed
        dd_ax.plot(days, dd, lw=1, color=color, label=name, zorder=z)
        if name == "strategy":
            dd_ax.fill_between(days, dd, 0, color=color, alpha=0.2, lw=0)
    eq_ax.set_ylabel("equity")
    eq_ax.legend(loc="upper left", fontsize=8)
    dd_ax.set_ylabel("drawdown")
    dd_ax.yaxis.set_major_formatter(PERCENT)
    dd_ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def _ticks(labels: Sequence[object], most: int = 12) -> tuple[list[int], list[str]]:
    step = max(1, int(np.ceil(len(labels) / most)))
    keep = list(range(0, len(labels), step))
    return keep, [_label(labels[i]) for i in keep]


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def sweep_heatmaps(panels: Mapping[str, pd.DataFrame], x: str, y: str, value: str,
                   chosen: Mapping[str, object] | None = None) -> Figure:
    """One heatmap of `value` over the (x, y) grid per panel (e.g. in-sample, out-of-sample), on
    one colour scale centred on zero, with the chosen parameters circled. Each grid value is one
    cell (categorical axes), so booleans and uneven steps plot as what they are."""
    grids = {name: t.pivot_table(index=y, columns=x, values=value) for name, t in panels.items()}
    both = np.concatenate([g.to_numpy().ravel() for g in grids.values()])
    lim = np.nanmax(np.abs(both)) if np.isfinite(both).any() else 1.0
    tall = len(next(iter(grids.values())).index) > 3
    fig, axes = plt.subplots(1, len(grids), figsize=(6 * len(grids), 5 if tall else 3),
                             squeeze=False)
    for ax, (name, g) in zip(axes[0], grids.items(), strict=True):
        im = ax.imshow(g.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, origin="lower",
                       aspect="auto", interpolation="nearest")
        ax.set_xticks(*_ticks(list(g.columns)))
        ax.set_yticks(*_ticks(list(g.index)))
        if chosen is not None:
            cx, cy = list(g.columns).index(chosen[x]), list(g.index).index(chosen[y])
            ax.scatter([cx], [cy], s=150, facecolors="none", edgecolors="black", linewidths=2,
                       clip_on=False)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{name}: {value}" + (" (circle: chosen on train)" if chosen is not None else ""))
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def monthly_returns_heatmap(equity: pd.Series, title: str = "Monthly returns") -> Figure:
    """Calendar of monthly returns (rows years, columns months), the values written in."""
    monthly = equity.resample("ME").last().pct_change()
    monthly.iloc[0] = equity.resample("ME").last().iloc[0] / equity.iloc[0] - 1
    table = pd.DataFrame({"year": monthly.index.year, "month": monthly.index.month,
                          "r": monthly.to_numpy()}).pivot(index="year", columns="month", values="r")
    table = table.reindex(columns=range(1, 13))
    lim = max(float(np.nanmax(np.abs(table.to_numpy()))), 1e-9)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(table) + 1.5))
    ax.imshow(table.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                              "Nov", "Dec"])
    ax.set_yticks(range(len(table)), table.index)
    for i in range(len(table)):
        for j in range(12):
            v = table.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1%}", ha="center", va="center", fontsize=7)
    ax.set_title(title)
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

    k = np.arange(1, lags + 1)
    sim = metrics.autocorrelation(np.abs(simulated), k)
    right.fill_between(k, *np.quantile(sim, [0.05, 0.95], axis=0), alpha=0.3, label="simulated 5-95 %")
    right.plot(k, np.median(sim, axis=0), label="simulated median")
    right.plot(k, metrics.autocorrelation(np.abs(history), k)[0], color="black", label="history")
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
