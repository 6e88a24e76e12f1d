"""A run folder's reports: `report.html` (one self-contained page: leaderboard, a test-period
tearsheet per strategy, the notebooks with their parameters and data fingerprint) and a short
`report.md`.

Written by hand on matplotlib rather than with quantstats: quantstats pulls in yfinance (and
curl_cffi, peewee, websockets) for a report that covers one strategy per page with its own
definitions of Sharpe, CAGR and drawdown, where this page compares several strategies with the
same metrics the notebooks and the CLI print. Figures are inline PNGs, so the file opens from
the file system with no server and no internet.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from algotrading import metrics, plots
from algotrading.runs import RESULTS, load_manifest, write_atomic

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1150px;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
.ok{color:#17803d}.failed{color:#c0392b;font-weight:bold}.muted{color:#777;font-size:.85em}
.conclusion{background:#f7f9fc;border-left:4px solid #3b73b9;padding:.6em 1em;white-space:pre-line}
img{max-width:100%}code{background:#f4f4f4;padding:0 .2em}
"""


def _png(fig: Figure) -> str:
    """The figure as an inline <img> (base64 PNG), closed afterwards."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if kind == "%":
            return f"{value:.1%}"
        if kind == "money":
            return f"{value:,.0f}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


KINDS = {"final_value": "money", "total_return": "%", "cagr": "%", "max_drawdown": "%",
         "volatility": "%", "exposure": "%", "win_rate": "%", "alpha": "%"}


def _table(frame: pd.DataFrame, kinds: Mapping[str, str] | None = None, by_row: bool = True) -> str:
    """HTML table; `kinds` (per row label if by_row, else per column) picks the number format."""
    kinds = kinds or {}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *frame.columns])
    rows = []
    for label, row in frame.iterrows():
        cells = "".join(
            f"<td>{html.escape(_fmt(_plain(v), kinds.get(label if by_row else col, '')))}</td>"
            for col, v in row.items())
        rows.append(f"<tr><td>{html.escape(str(label))}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6 and not math.isnan(v):
        return int(v)
    return v


def tearsheet_stats(curves: pd.DataFrame, column: str, benchmark: str = "buy_and_hold"
                    ) -> dict[str, float]:
    """Annualised volatility, and alpha (annualised, arithmetic) and beta of `column`'s daily
    returns regressed on the benchmark's."""
    s = curves[column].pct_change().iloc[1:].to_numpy()
    b = curves[benchmark].pct_change().iloc[1:].to_numpy()
    var = float(np.var(b, ddof=1))
    beta = float(np.cov(s, b, ddof=1)[0, 1] / var) if var > 0 else float("nan")
    return {"volatility": float(np.std(s, ddof=1) * math.sqrt(metrics.YEAR)),
            "beta": beta, "alpha": float((s.mean() - beta * b.mean()) * metrics.YEAR)}


def trade_durations(trades: pd.DataFrame) -> pd.DataFrame:
    """Bars held by closed trades: count, mean, median, longest, for all, winners and losers."""
    closed = trades[trades["status"] == "closed"]
    groups = {"all": closed, "won": closed[closed["pnl"] >= 0], "lost": closed[closed["pnl"] < 0]}
    return pd.DataFrame({name: {"trades": len(g), "mean bars": g["bars_held"].mean() if len(g) else None,
                                "median bars": g["bars_held"].median() if len(g) else None,
                                "longest": g["bars_held"].max() if len(g) else None}
                         for name, g in groups.items()}).T


def _strategy_section(name: str, result: dict, folder: Path) -> str:
    curves_path, trades_path = folder / f"{name}.equity.csv", folder / f"{name}.trades.csv"
    parts = [f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>']
    if result.get("conclusion"):
        parts.append(f'<div class="conclusion">{html.escape(result["conclusion"])}</div>')
    looks = result.get("test_accesses")
    if looks:
        parts.append(f"<h3>Looks at the test period ({len(looks)})</h3>"
                     + _table(pd.DataFrame(looks, index=range(1, len(looks) + 1))
                              .reindex(columns=["what", "when", "bars"])))
    test = result["test"]
    rows = {label: dict(test[key]) for label, key in (("with costs", "with_costs"),
                                                       ("no costs", "no_costs"),
                                                       ("buy and hold", "buy_and_hold"))
            if isinstance(test.get(key), Mapping)}
    luck = deflated(result)
    if luck:
        rows["with costs"]["deflated_sharpe"] = luck.get("dsr")
        rows["with costs"]["deflated_sharpe_effective"] = luck.get("dsr_effective")
    if curves_path.is_file():
        curves = pd.read_csv(curves_path, index_col=0, parse_dates=True)
        for label, col in (("with costs", "strategy"), ("no costs", "no_costs"),
                           ("buy and hold", "buy_and_hold")):
            if label in rows and col in curves:
                rows[label].update(tearsheet_stats(curves, col))
        parts.append(_png(plots.equity_and_drawdown(
            {"strategy (with costs)": curves["strategy"], "buy and hold": curves["buy_and_hold"]},
            f"{result.get('symbol', '')} {chosen_label(result)}: test period, equity and "
            "drawdown against buy-and-hold")))
        parts.append("<h3>Monthly returns</h3>")
        parts.append(_png(plots.monthly_returns_heatmap(curves["strategy"],
                                                        "Monthly returns of the strategy (with costs)")))
    shown = ["final_value", "total_return", "cagr", "volatility", "sharpe", "sortino",
             "max_drawdown", "calmar", "alpha", "beta", "deflated_sharpe",
             "deflated_sharpe_effective", "exposure", "turnover", "trades_closed", "win_rate",
             "profit_factor", "sqn"]
    table = pd.DataFrame(rows).reindex(shown)
    parts.append("<h3>Key metrics, test period</h3>" + _table(table, KINDS))
    if trades_path.is_file():
        trades = pd.read_csv(trades_path)
        if len(trades):
            parts.append("<h3>Trade durations (bars held)</h3>" + _table(trade_durations(trades)))
    return "\n".join(parts)


def chosen_label(result: Mapping[str, Any]) -> str:
    """What the test period scored, as the strategy notebook recorded it: "breakout period=195,
    go_short=False (chosen on train by sharpe)"; "" when it did not say."""
    test = result.get("test", {})
    params = test.get("params") if isinstance(test, Mapping) else None
    basis = test.get("basis", "") if isinstance(test, Mapping) else ""
    what = ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, Mapping) else ""
    name = result.get("strategy", "")
    return " ".join(x for x in (name, what, f"({basis})" if basis else "") if x)


def is_whatif(result: Mapping[str, Any]) -> bool:
    """A what-if notebook's results: per generator, the rule's outcome odds on its paths."""
    models = result.get("models")
    return isinstance(models, Mapping) and all(
        isinstance(m, Mapping) and "p_loss" in m for m in models.values()) and bool(models)


def _whatif_section(name: str, result: dict, folder: Path) -> str:
    """The what-if notebook's distribution table, volatility check and fan charts."""
    parts = [f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>']
    if result.get("conclusion"):
        parts.append(f'<div class="conclusion">{html.escape(result["conclusion"])}</div>')
    rule = result.get("rule", {})
    parts.append(f"<p>{html.escape(str(result.get('symbol', '')))}: the rule "
                 f"{html.escape(_fmt(rule))} with fixed parameters on {_fmt(result.get('paths'))} "
                 f"paths of {_fmt(result.get('bars'))} bars per generator, beside buy-and-hold on "
                 "the same path.</p>")
    keys = ["p_loss", "p_beat_buy_and_hold", "bankrupt", "median_total_return", "median_sharpe",
            "median_max_drawdown"]
    models = result["models"]
    table = pd.DataFrame({m: {k: v.get(k) for k in keys} for m, v in models.items()}).T
    parts.append("<h3>Outcomes over the paths</h3>" + _table(
        table, {"p_loss": "%", "p_beat_buy_and_hold": "%", "median_total_return": "%",
                "median_max_drawdown": "%"}, by_row=False))
    checks = {m: v["vol_check"] for m, v in models.items() if isinstance(v.get("vol_check"), Mapping)}
    if checks:
        parts.append("<h3>Path-year volatility against the history's years</h3>"
                     + _table(pd.DataFrame(checks), {k: "%" for k in next(iter(checks.values()))
                                                     if k not in ("covers", "explosive")}))
    for m in models:
        fan = folder / f"{name}.fan_{m}.csv"
        if fan.is_file():
            q = pd.read_csv(fan, index_col=0, parse_dates=True)
            parts.append(_png(plots.fan_chart(q[["5%", "25%", "50%", "75%", "95%"]].to_numpy().T,
                                              q.index, f"{_fmt(rule)} on {m} paths: equity "
                                              "quantiles against the real history",
                                              {"real history": q["real history"].dropna()},
                                              quantiles=True)))
    return "\n".join(parts)


def is_strategy(result: Mapping[str, Any]) -> bool:
    """A strategy notebook's results: a test-period run with costs beside buy-and-hold (a model
    notebook's `test` holds classification metrics instead)."""
    test = result.get("test")
    return isinstance(test, Mapping) and {"with_costs", "buy_and_hold"} <= set(test)


def _leaderboard(results: Mapping[str, dict], folder: Path) -> pd.DataFrame:
    rows, holds = {}, {}
    for name, r in results.items():
        if not is_strategy(r):
            continue
        t = r["test"]["with_costs"]
        row = {"symbol": r.get("symbol"), "total_return": t["total_return"], "cagr": t["cagr"],
               "sharpe": t["sharpe"], "max_drawdown": t["max_drawdown"],
               "trades_closed": t["trades_closed"]}
        curves = folder / f"{name}.equity.csv"
        if curves.is_file():
            row.update(tearsheet_stats(pd.read_csv(curves, index_col=0, parse_dates=True), "strategy"))
        luck = deflated(r)
        row["deflated_sharpe"] = luck.get("dsr")
        row["deflated_sharpe_effective"] = luck.get("dsr_effective")
        row["walk_forward_return"] = r.get("walk_forward", {}).get("oos", {}).get("total_return")
        rows[name] = row
        h = r["test"]["buy_and_hold"]
        hold = {"symbol": r.get("symbol"), "total_return": h["total_return"], "cagr": h["cagr"],
                "sharpe": h["sharpe"], "max_drawdown": h["max_drawdown"], "trades_closed": 0}
        if curves.is_file():
            hold.update(tearsheet_stats(pd.read_csv(curves, index_col=0, parse_dates=True),
                                        "buy_and_hold"))
        holds[f"buy and hold ({r.get('symbol')})"] = hold
    if not rows:
        return pd.DataFrame()
    board = pd.DataFrame({**rows, **holds}).T
    order = ["symbol", "total_return", "cagr", "volatility", "sharpe", "max_drawdown", "alpha",
             "beta", "trades_closed", "deflated_sharpe", "deflated_sharpe_effective",
             "walk_forward_return"]
    board = board.reindex(columns=order)
    return board.sort_values("sharpe", ascending=False, key=lambda s: s.astype(float).fillna(-1e9))


def deflated(result: Mapping[str, Any]) -> dict[str, Any]:
    """The deflated Sharpe of a strategy notebook's choice: a study's sweep on train, or a
    selection the notebook records under `validation` (the ML thresholds)."""
    for step in ("sweep", "validation"):
        luck = result.get(step, {})
        if isinstance(luck, Mapping) and isinstance(luck.get("deflated_sharpe"), Mapping):
            return dict(luck["deflated_sharpe"])
    return {}


BOARD_LABELS = {"total_return": "total return", "cagr": "CAGR", "volatility": "volatility",
                "max_drawdown": "max drawdown", "trades_closed": "trades",
                "deflated_sharpe": "deflated Sharpe (every try)",
                "deflated_sharpe_effective": "deflated Sharpe (effective tries)",
                "walk_forward_return": "walk-forward return",
                "sharpe": "Sharpe"}


def _load(folder: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    entries = load_manifest(folder)
    results = {}
    for nb in entries:
        path = folder / RESULTS / f"{Path(nb).stem}.json"
        if path.is_file():
            results[Path(nb).stem] = json.loads(path.read_text())
    return entries, results


def write(folder: Path) -> Path:
    """Write `report.html` and `report.md` for the run folder (from its manifest and results)."""
    entries, results = _load(folder)
    board = _leaderboard(results, folder / RESULTS)
    commits = {(e.get("commit") or "")[:10] + ("+dirty" if e.get("dirty") else "")
               for e in entries.values()}
    data = {e.get("data", {}).get("sha256", "")[:12] for e in entries.values()}
    body = ["<h1>algotrading run</h1>",
            f'<p class="muted">package {html.escape(_fmt(_first(entries, "version")))}; commit(s) '
            f'{html.escape(", ".join(sorted(commits)))}; '
            f'lake data sha256 {html.escape(", ".join(sorted(data)))}'
            + (" <b>(notebooks ran on different data)</b>" if len(data) > 1 else "") + "</p>"]
    if not board.empty:
        kinds = {BOARD_LABELS.get(k, k): "%" for k in ("total_return", "cagr", "volatility",
                                                       "max_drawdown", "alpha", "walk_forward_return")}
        body += ["<h2>Leaderboard (test period, with costs)</h2>",
                 "<p>Sorted by Sharpe; alpha and beta are against buy-and-hold of the same symbol "
                 "and days; the deflated Sharpe ratio says how likely the choice beats luck "
                 "(0.95 and above is evidence of skill), counting every combination tried as an "
                 "independent try and, beside it, the effective number of independent tries "
                 "(principal components explaining 90 % of the variance of the tries' returns).</p>",
                 _table(board.rename(columns=BOARD_LABELS), kinds, by_row=False)]
    rows = []
    for nb, e in entries.items():
        link = f'<a href="{html.escape(nb)}">{html.escape(nb)}</a>'
        status = f'<span class="{e["status"]}">{e["status"]}</span>'
        rows.append(f"<tr><td>{link}</td><td>{status}</td><td>{_fmt(e.get('seconds'))}</td>"
                    f"<td>{html.escape(_fmt(e.get('overrides')) or 'defaults')}</td>"
                    f"<td>{html.escape(e.get('data', {}).get('sha256', '')[:12])}</td>"
                    f"<td>{html.escape((e.get('commit') or '')[:10])}</td>"
                    f"<td>{html.escape(str(e.get('finished', '')))}</td></tr>")
        if e.get("error"):
            rows.append(f'<tr><td colspan="7" class="failed">{html.escape(e["error"])}</td></tr>')
    body += ["<h2>Notebooks</h2>", "<table><tr><th>executed notebook</th><th>status</th><th>seconds</th>"
             "<th>parameters given</th><th>data sha256</th><th>commit</th><th>finished (UTC)</th></tr>",
             *rows, "</table>"]
    for name, r in results.items():
        if is_strategy(r):
            body.append(_strategy_section(name, r, folder / RESULTS))
        elif is_whatif(r):
            body.append(_whatif_section(name, r, folder / RESULTS))
    others = {k: v for k, v in results.items() if not (is_strategy(v) or is_whatif(v))}
    for name, r in others.items():
        flat = {k: _fmt(v) for k, v in r.items()}
        body += [f"<h2>{html.escape(name)}</h2>", _table(pd.DataFrame({"value": flat}))]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>algotrading run</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    out = folder / "report.html"
    write_atomic(out, page)
    md = ["# algotrading run", "", "Full report with charts: [report.html](report.html)", "",
          "| notebook | status | seconds | parameters given | data sha256 |", "|---|---|---|---|---|"]
    md += [f"| [{nb}]({nb}) | {e['status']} | {_fmt(e.get('seconds'))} | "
           f"{_md(_fmt(e.get('overrides')) or 'defaults')} | "
           f"{e.get('data', {}).get('sha256', '')[:12]} |" for nb, e in entries.items()]
    md += [f"\n{nb}: {_md(e['error'])}" for nb, e in entries.items() if e.get("error")]
    if not board.empty:
        md += ["", "## Leaderboard (test period, with costs)", "",
               "| | symbol | total return | Sharpe | max drawdown | trades |", "|---|---|---|---|---|---|"]
        md += [f"| {k} | {r['symbol']} | {_fmt(r['total_return'], '%')} | {_fmt(r['sharpe'])} | "
               f"{_fmt(r['max_drawdown'], '%')} | {_fmt(_plain(r['trades_closed']))} |"
               for k, r in board.iterrows()]
    for name, r in results.items():
        if r.get("conclusion"):
            md += ["", f"## {name}", "", r["conclusion"]]
    write_atomic(folder / "report.md", "\n".join(md) + "\n")
    return out


def _md(text: str) -> str:
    """User-given text (parameters, errors) as inert Markdown: HTML escaped (a viewer renders
    raw HTML, e.g. <script>), one line, no table cell break."""
    return html.escape(str(text)).replace("|", "\\|").replace("\n", " ")


def _first(entries: Mapping[str, dict], key: str) -> Any:
    return next((e.get(key) for e in entries.values() if e.get(key)), None)
