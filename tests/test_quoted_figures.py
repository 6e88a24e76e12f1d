"""Figures the README and docs quote from the default run equal the committed run's recorded
results (results/*.json), formatted as the text prints them: a table row that drifts from the
run fails here. Each row names the document, the table row's first cell, the results file and,
per column, where its value is and how it is printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def money(v: float) -> str:
    return f"{v:,.0f}"


def pct(v: float) -> str:
    return f"{v * 100:.1f} %"


def signed_pct(v: float) -> str:
    return f"{v * 100:+.1f} %"


def ratio(v: float) -> str:
    return f"{v:.2f}"


def auc(v: float) -> str:
    return f"{v:.3f}"


def count(v: float) -> str:
    return f"{int(v):,}"


def dig(data: dict, path: str) -> float:
    for part in path.split("."):
        data = data[part]
    return data


def run_row(where: str) -> list:
    """The columns final value, total return, Sharpe, max drawdown, closed trades of a run."""
    return [(f"{where}.final_value", money), (f"{where}.total_return", pct),
            (f"{where}.sharpe", ratio), (f"{where}.max_drawdown", pct),
            (f"{where}.trades_closed", count)]


def hold_row(where: str) -> list:
    return run_row(where)[:4] + [None]


def scores_row(who: str) -> list:
    return [(f"test.{who}.{o}.{m}", auc) for m in ("roc_auc", "f1", "balanced_accuracy")
            for o in ("long", "short")]


def whatif_row(model: str) -> list:
    m = f"models.{model}"
    return [(f"{m}.p_loss", pct), (f"{m}.p_beat_buy_and_hold", pct),
            (f"{m}.median_total_return", signed_pct), (f"{m}.median_sharpe", ratio),
            (f"{m}.median_max_drawdown", pct)]


ROWS = [
    ("docs/backtests.md", "SMA 50/200 (long/short), with costs", "Strategy_SMA", run_row("test.with_costs")),
    ("docs/backtests.md", "SMA 50/200, no costs", "Strategy_SMA", run_row("test.no_costs")),
    ("docs/backtests.md", "Breakout 195 (long only, chosen on train), with costs",
     "Strategy_Breakout", run_row("test.with_costs")),
    ("docs/backtests.md", "Breakout 195, no costs", "Strategy_Breakout", run_row("test.no_costs")),
    ("docs/backtests.md", "buy-and-hold#2", "Strategy_SMA", hold_row("test.buy_and_hold")),
    ("docs/models.md", "network (PyTorch MLP)", "Train_Model_Forecast", scores_row("network")),
    ("docs/models.md", 'majority ("no trade")', "Train_Model_Forecast", scores_row("majority")),
    ("docs/models.md", "logistic regression", "Train_Model_Forecast", scores_row("logistic")),
    ("docs/models.md", "gradient-boosted trees", "Train_Model_Forecast", scores_row("gbt")),
    ("docs/models.md", "ML forecast, with costs", "Strategy_ML_Forecast", run_row("test.with_costs")),
    ("docs/models.md", "ML forecast, no costs", "Strategy_ML_Forecast", run_row("test.no_costs")),
    ("docs/models.md", "SMA 50/200, with costs", "Strategy_ML_Forecast", run_row("test.sma")),
    ("docs/models.md", "GBM", "Strategy_WhatIfScenarios", whatif_row("gbm")),
    ("docs/models.md", "GARCH(1,1)-t", "Strategy_WhatIfScenarios", whatif_row("garch")),
    ("docs/models.md", "block bootstrap", "Strategy_WhatIfScenarios", whatif_row("bootstrap")),
]


def table_row(doc: str, label: str) -> list[str]:
    """The cells after the first of the markdown table row whose first cell is `label` (the
    first such row in the document; "label#2" the second)."""
    label, _, nth = label.partition("#")
    rows = [cells[1:] for line in (ROOT / doc).read_text().splitlines()
            if line.startswith("|")
            and (cells := [c.strip() for c in line.strip().strip("|").split("|")])[0] == label]
    if len(rows) < int(nth or 1):
        raise AssertionError(f"{doc}: no table row {label!r} (#{nth or 1})")
    return rows[int(nth or 1) - 1]


@pytest.mark.parametrize("doc, label, results, columns", ROWS)
def test_quoted_figures_are_the_recorded_run(doc, label, results, columns):
    recorded = json.loads((ROOT / "results" / f"{results}.json").read_text())
    cells = table_row(doc, label)
    want = [None if col is None else fmt(dig(recorded, path)) for col in columns
            for path, fmt in [col or ("", None)]]
    shown = [cell if want_ is not None else None for cell, want_ in zip(cells, want, strict=False)]
    assert shown == want, f"{doc} row {label!r} quotes {cells}, the run recorded {want}"


def test_the_readme_quotes_no_run_figure_without_a_row_here():
    """The README points to the docs for the run's numbers: no percentage with a decimal (a
    result) appears in it, so none can go stale unchecked."""
    import re

    text = (ROOT / "README.md").read_text()
    assert not re.findall(r"[-+]?\d+\.\d+ ?%", text)
