"""Fast tests of the research workflow's package side: the study protocol (choice, luck, grid
edges, walk-forward stitching, conclusion), the charts' fixes, record() and report.html.
Notebook executions are in test_notebooks.py."""

from __future__ import annotations

import ast
import dataclasses
import html
import json
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics, pipeline, plots, report, study
from algotrading.cli import main
from algotrading.metrics import to_json

matplotlib.use("Agg")


def trending(n: int = 1500, seed: int = 7, drift: float = 0.0004) -> pd.DataFrame:
    """Random-walk daily bars with an upward drift (buy-and-hold is hard to beat on it)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + 0.01 * rng.standard_normal(n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + 0.001 * rng.standard_normal(n))
    days = pd.bdate_range("2000-01-03", periods=n, name="dt")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.002,
                         "low": np.minimum(open_, close) * 0.998, "close": close,
                         "vol": 1e6}, index=days)


@pytest.fixture(scope="module")
def done() -> study.Study:
    prices = trending()
    s = study.Study("sma", prices, "2002-12-31", "2004-06-30", symbol="X",
                    rule=dict(fast_period=10, slow_period=30, size=10),
                    costs=dict(commission_per_share=0.01, slippage_bps=2.0))
    s.rule_check()
    s.choose({"fast_period": [5, 10, 20], "slow_period": [30, 60, 90]})
    s.test_run()
    s.walk_forward({"fast_period": [5, 10, 20], "slow_period": [30, 60, 90]}, train_bars=400,
                   test_bars=200)
    return s


def test_choice_is_made_on_train_only_and_keeps_integer_types(done):
    c = done.choice
    best_row = c.train.loc[c.train["sharpe"].idxmax()]
    assert c.chosen == {"fast_period": int(best_row["fast_period"]),
                        "slow_period": int(best_row["slow_period"])}
    assert all(type(v) is int for v in c.chosen.values())
    # the choice table's train column is the chosen row of the train sweep, and every period
    # carries buy-and-hold of the same days
    assert c.table.loc["sharpe", "train"] == pytest.approx(best_row["sharpe"])
    test = backtest.run_period("sma", done.prices, done.bounds["test"], **done.fixed(c.grid),
                               **c.chosen)
    assert c.table.loc["sharpe", "test buy-and-hold"] == pytest.approx(test.metrics["benchmark"]["sharpe"])
    assert c.train["hold_sharpe"].to_numpy() == pytest.approx(c.table.loc["sharpe", "train buy-and-hold"])
    top = c.top(3)
    assert list(top["sharpe_train"]) == sorted(c.train["sharpe"], reverse=True)[:3]
    assert "hold_sharpe_validation" in top


def test_test_run_scores_only_the_choice_and_every_look_is_logged(done):
    c, t = done.choice, done.test
    assert t.params == c.chosen and t.basis == "chosen on train by sharpe"
    # the test curve is the chosen combination's own backtest on the test period
    start, end = done.bounds["test"]
    own = backtest.run("sma", done.prices.loc[:end], start=start, **done.fixed(c.grid), **c.chosen)
    assert t.with_costs.equity.to_numpy() == pytest.approx(own.equity.to_numpy())
    assert c.table.loc["total_return", "test"] == pytest.approx(own.metrics["total_return"])
    # two looks: the choice's test run, and walk-forward windows on test bars
    assert [a["what"].split(":")[0] for a in done.accesses] == ["test_run", "walk_forward"]
    assert done.accesses[0]["bars"] == len(done.prices.loc[start:end])
    assert all(a["when"].endswith("+00:00") for a in done.accesses)
    assert "The test period was looked at 2 times: test_run" in done.conclusion()
    assert done.summary()["test_accesses"] == done.accesses
    done.run("test", **c.chosen)  # any other run on test is a look too
    assert len(done.accesses) == 3 and done.accesses[-1]["what"].startswith("run('test'")
    done.accesses.pop()
    assert "(chosen on train by sharpe) and costs returned" in done.conclusion().splitlines()[0]


def test_hand_set_rule_is_shown_on_train_and_validation_only(done):
    hand = done.hand
    assert list(hand.columns) == ["train (hand-set rule (fast_period=10, slow_period=30, size=10))",
                                  "train buy-and-hold",
                                  "validation (hand-set rule (fast_period=10, slow_period=30, "
                                  "size=10))", "validation buy-and-hold"]
    start, end = done.bounds["validation"]
    own = backtest.run("sma", done.prices.loc[:end], start=start, **done.rule, **done.costs)
    assert hand.iloc[:, 2]["sharpe"] == pytest.approx(own.metrics["sharpe"])
    assert "Set by hand, sma with fast_period=10, slow_period=30, size=10 had a Sharpe of" in \
        done.conclusion() and "it is not scored on test" in done.conclusion()


def test_a_test_run_without_a_choice_is_labelled_set_by_hand():
    s = study.Study("sma", trending(900), "2001-06-29", "2002-06-28",
                    rule=dict(fast_period=10, slow_period=30))
    s.test_run()
    assert s.test.basis == "set by hand" and len(s.accesses) == 1
    assert " sma with fast_period=10, slow_period=30 (set by hand) and no costs returned " in \
        s.conclusion()
    s.choose({"fast_period": [5, 10], "slow_period": [30, 60]})
    assert "scored a rule set by hand, not the protocol's choice" in s.conclusion()
    s.test_run()
    assert s.test.basis.startswith("chosen on train") and len(s.accesses) == 2
    assert "looked at 2 times" in s.conclusion()


def test_every_combination_counts_in_the_deflated_sharpe_even_those_that_never_trade(done):
    chosen = done.choice.runs["train"]
    with_idle = study.deflated_sharpe([0.5, -0.2, float("nan"), float("nan")], chosen)
    as_zero = study.deflated_sharpe([0.5, -0.2, 0.0, 0.0], chosen)
    assert with_idle["trials"] == 4 and with_idle == as_zero
    luck = done.choice.luck
    assert luck["trials"] == len(done.choice.train) == 9
    assert 1 <= luck["effective_trials"] <= luck["trials"]
    # fewer independent tries set a lower bar, so the effective count's DSR is never lower
    assert luck["expected_max_sharpe_effective"] <= luck["expected_max_sharpe"]
    assert luck["dsr_effective"] >= luck["dsr"]
    text = done.conclusion()
    assert f"counting all {luck['trials']} tries on train as independent" in text
    assert f"counted as the {luck['effective_trials']} independent tries" in text


def test_effective_trials_counts_the_independent_factors():
    rng = np.random.default_rng(3)
    factors = rng.standard_normal((3, 2000))
    # 30 trials, ten noisy copies of each of 3 independent return series, plus 4 flat ones
    copies = np.repeat(factors, 10, axis=0) + 0.05 * rng.standard_normal((30, 2000))
    assert metrics.effective_trials(copies) == 3
    assert metrics.effective_trials(np.vstack([copies, np.zeros((4, 2000))])) == 4
    # independent trials: each eigenvalue is about 1, so 90 % of 5 needs all 5
    assert metrics.effective_trials(rng.standard_normal((5, 5000))) == 5
    assert metrics.effective_trials(rng.standard_normal((5, 5000)), share=0.5) == 3
    with pytest.raises(ValueError, match="share"):
        metrics.effective_trials(copies, share=0)


def test_curves_rows_are_each_combinations_backtest():
    prices = trending(700)
    grid = {"fast_period": [5, 10], "slow_period": [30, 60]}
    combos, equity = backtest.curves("sma", prices, grid, start=prices.index[100], size=10)
    assert equity.shape == (4, 600) and list(combos.columns) == list(grid)
    for i, row in combos.iterrows():
        own = backtest.run("sma", prices, start=prices.index[100], size=10, **row.to_dict())
        assert equity[i] == pytest.approx(own.equity.to_numpy())


def test_edges_flag_the_grid_ends_of_numeric_parameters():
    grid = {"fast_period": [5, 10, 20], "slow_period": [30, 60, 90], "go_short": [True, False]}
    assert study.edges({"fast_period": 20, "slow_period": 60, "go_short": False}, grid) == ["fast_period"]
    assert study.edges({"fast_period": 10, "slow_period": 30, "go_short": True}, grid) == ["slow_period"]
    assert study.edges({"fast_period": 10, "slow_period": 60, "go_short": True}, grid) == []


def test_deflated_sharpe_penalises_many_trials(done):
    chosen = done.choice.runs["train"]
    one = study.deflated_sharpe([chosen.metrics["sharpe"]], chosen)
    assert one["expected_max_sharpe"] == 0 and one["trials"] == 1
    # with one trial DSR is the probabilistic Sharpe ratio against 0: above 0.5 iff Sharpe > 0
    assert (one["dsr"] > 0.5) == (chosen.metrics["sharpe"] > 0)
    rng = np.random.default_rng(1)
    few = study.deflated_sharpe(rng.normal(0, 0.5, 10), chosen)
    many = study.deflated_sharpe(rng.normal(0, 0.5, 1000), chosen)
    assert 0 < many["expected_max_sharpe"] and few["expected_max_sharpe"] < many["expected_max_sharpe"]
    assert many["dsr"] < few["dsr"] < one["dsr"]
    assert one["sharpe"] == pytest.approx(chosen.metrics["sharpe"], rel=1e-9)


def test_walk_forward_covers_the_data_to_its_last_bar(done):
    wf, prices = done.walk, done.prices
    assert wf.equity.index[0] == prices.index[400] and wf.equity.index[-1] == prices.index[-1]
    assert wf.equity.index.is_unique and len(wf.equity) == len(prices) - 400
    assert list(wf.hold.index) == list(wf.equity.index)
    # the stitched curve compounds the windows' own returns
    compounded = np.prod(1 + wf.windows["total_return"].to_numpy())
    assert wf.equity.iloc[-1] / 100_000 == pytest.approx(compounded, rel=1e-9)
    assert wf.table.loc["buy and hold", "total_return"] == pytest.approx(
        prices["close"].iloc[-1] / prices["close"].iloc[400] - 1)
    assert {"hold_sharpe", "hold_total_return"} <= set(wf.windows.columns)


def test_conclusion_is_computed_from_the_numbers(done):
    text = done.conclusion()
    t = done.test.table
    beat = t.loc["with costs", "total_return"] > t.loc["buy and hold", "total_return"]
    assert ("did not beat buy-and-hold" in text) == (not beat and t.loc["with costs", "sharpe"]
                                                     <= t.loc["buy and hold", "sharpe"])
    assert f"{t.loc['with costs', 'total_return']:.1%}" in text
    assert f"{len(done.choice.train)} combinations" in text
    for k in done.choice.edges:
        assert f"{k}={done.choice.chosen[k]} sits on the edge" in text
    assert f"Walk-forward ({len(done.walk.windows)} windows" in text


def test_summary_is_plain_json(done):
    summary = done.summary()
    assert json.loads(json.dumps(to_json(summary), allow_nan=False))["conclusion"] == done.conclusion()
    assert summary["sweep"]["chosen"] == done.choice.chosen
    assert 0 <= summary["sweep"]["deflated_sharpe"]["dsr"] <= 1
    assert summary["walk_forward"]["last"] == str(done.prices.index[-1].date())


def test_result_chart_thins_markers_and_labels_drawdowns():
    prices = trending(600)
    busy = backtest.run("breakout", prices, period=3, size=10)
    assert len(busy.trades) > 40
    fig = plots.result_chart(busy, prices, title="busy")
    price_ax, eq_ax, dd_ax = fig.axes
    labels = price_ax.get_legend_handles_labels()[1]
    assert "long entry" not in labels and "held long" in labels  # shaded, not 100+ markers
    assert [t.get_text() for t in dd_ax.get_legend().get_texts()] == ["strategy", "buy and hold"]
    assert eq_ax.lines[1].get_ydata()[-1] == pytest.approx(
        100_000 * prices["close"].iloc[-1] / prices["close"].iloc[0])
    calm = backtest.run("sma", prices, fast_period=20, slow_period=60, size=10)
    zoom = plots.result_chart(calm, prices, start="2001-01-01", end="2001-06-30")
    assert "long entry" in zoom.axes[0].get_legend_handles_labels()[1]
    shown = pd.to_datetime(zoom.axes[1].lines[0].get_xdata())
    assert shown[0] >= pd.Timestamp("2001-01-01") and shown[-1] <= pd.Timestamp("2001-06-30")
    assert len(plots.result_chart(calm).axes) == 3  # a Result keeps the prices it ran on
    with pytest.raises(ValueError, match="prices"):
        plots.result_chart(dataclasses.replace(calm, prices=None))
    assert len(calm.plot().axes) == 3  # Result.plot draws the same chart
    assert len(calm.plot(prices=prices).axes) == 3


def test_heatmap_axes_are_categorical_and_histogram_log_scaled():
    table = pd.DataFrame({"period": [5, 10, 5, 10], "go_short": [True, True, False, False],
                          "sharpe": [0.1, -0.2, 0.3, 0.0]})
    fig = plots.sweep_heatmaps({"train": table}, "period", "go_short", "sharpe",
                               {"period": 5, "go_short": False})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["False", "True"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10"]
    r = pd.DataFrame({"A": np.random.default_rng(0).standard_t(3, 500) / 100})
    hist = plots.return_histogram(r).axes[0]
    assert hist.get_yscale() == "log" and "log" in hist.get_ylabel()


def test_report_is_one_offline_page_with_inline_charts(done, tmp_path, monkeypatch):
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path))
    done.record("Strategy_X")
    pipeline.record("Explore", {"symbols": ["A", "B"], "mean": None})
    # a model notebook's `test` holds classification metrics: not a strategy, not on the board
    pipeline.record("Train_Model_X", {"test": {"network": {"long": {"roc_auc": 0.61}}}})
    entries = {"2_Strategies/Strategy_X.ipynb": {"status": "ok", "seconds": 1.0, "overrides": {},
                                                 "data": {"sha256": "ab" * 32}, "commit": "c" * 40},
               "3_Models/Train_Model_X.ipynb": {"status": "ok", "seconds": 1.0},
               "1_Data/Explore.ipynb": {"status": "failed", "error": "Explore.ipynb failed in cell 3"}}
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": entries}))
    page = report.write(tmp_path).read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from a network
    assert page.count("data:image/png;base64,") == 2  # equity/drawdown and monthly returns
    assert 'href="2_Strategies/Strategy_X.ipynb"' in page and "failed in cell 3" in page
    for words in ("Leaderboard", "buy and hold (X)", "volatility", "alpha", "beta",
                  "Trade durations", "Monthly returns", done.conclusion().splitlines()[0][:60],
                  "Looks at the test period (2)", "deflated Sharpe (effective tries)",
                  html.escape(done.accesses[0]["what"])):
        assert words in page
    # the ML notebook records its thresholds' deflated Sharpe under `validation`
    assert report.deflated({"validation": {"deflated_sharpe": {"dsr": 0.13}}}) == {"dsr": 0.13}
    assert report.deflated({"sweep": {"deflated_sharpe": done.choice.luck}}) == done.choice.luck
    md = (tmp_path / "report.md").read_text()
    assert "[report.html](report.html)" in md and "| Strategy_X | X |" in md
    assert "| Train_Model_X |" not in md and "Train_Model_X" in page
    assert len(md.splitlines()) < 40


def test_report_md_carries_no_raw_html_from_parameters_or_errors(tmp_path):
    entries = {"1_Data/Explore.ipynb": {
        "status": "failed", "seconds": 1.0,
        "overrides": {"symbol": "<script>alert(1)</script>|x"},
        "error": "failed: <img src=x onerror=alert(2)>\nsecond line"}}
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": entries}))
    report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "<script" not in md and "<img" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in md  # escaped, one table cell
    assert "&lt;img src=x onerror=alert(2)&gt; second line" in md


def test_cli_run_rejects_an_undeclared_parameter(capsys):
    assert main(["run", "--only", "Load_Hist", "-p", "sourc=csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sourc" in err and "source, path, symbols" in err


def test_cli_run_parameters_must_fit_the_declared_type(tmp_path, capsys):
    from papermill.translators import PythonTranslator

    marker = tmp_path / "marker"
    hostile = f"""('x"; open("{marker}", "w"); y="',)"""
    # what papermill would have written into the parameters cell: code that creates the marker
    exec(f"symbol = {PythonTranslator.translate(ast.literal_eval(hostile))}", {})  # as -p parses it
    assert marker.exists()
    marker.unlink()
    # a string parameter keeps the text given, whatever it looks like (no code, no number)
    assert pipeline.string_parameters(["Explore_Hist"]) == {"symbol", "month"}
    for value, kind in (("(1, 2)", "give a list like [50, 200]"), (hostile, "give a list like"),
                        ("{1, 2}", "give a list like"), ("50", "give a list like")):
        assert main(["run", "--only", "Explore_Hist", "-p", f"ma_windows={value}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Explore_Hist_Data declares ma_windows = [50, 200]" in err
        assert kind in err
    with pytest.raises(ValueError, match="Explore_Hist_Data declares symbol = 'GSPC'; give a string"):
        pipeline.run(only=["Explore_Hist"], parameters={"symbol": ast.literal_eval(hostile)},
                     out=tmp_path / "run")
    assert not marker.exists()
    assert pipeline.fits(10, 0.5) and pipeline.fits([1, 2], [50]) and pipeline.fits("a", None)
    assert not any((pipeline.fits(1.5, 10), pipeline.fits(True, 1), pipeline.fits(["a"], [50]),
                    pipeline.fits((1,), None), pipeline.fits({"a": 1}, None)))


def test_run_outside_the_checkout_says_where_to_run(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="inside the project checkout"):
        pipeline.run(root=tmp_path, out=tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # the CLI from a folder with no pyproject.toml above it
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "inside the project checkout" in err and "no notebook matches" not in err


def test_one_colour_per_role_and_trade_charts_shade_what_their_titles_promise():
    roles = plots.role_colors(["PPO seed 0", "PPO seed 1", "buy and hold", "SMA 50/200",
                               "strategy (with costs)", "Buy-and-hold (X)"])
    assert roles[2] == (plots.COLORS["hold"], "-") and roles[5][0] == plots.COLORS["hold"]
    assert roles[0][0] == roles[1][0] != plots.COLORS["hold"] and roles[0][1] != roles[1][1]
    assert roles[3][0] == plots.ROLES["sma"] and roles[4][0] == plots.COLORS["strategy"]
    prices = trending(600)
    busy = backtest.run("breakout", prices, period=3, size=10)
    fig = plots.trades_on_price(prices, {}, busy.trades, "busy")  # no positions given
    ax = fig.axes[0]
    assert "trades: held periods shaded" in ax.get_title()
    assert "held long" in ax.get_legend_handles_labels()[1]
    held = plots.positions_from_trades(prices.index, busy.trades)
    # the shading is the backtest's own positions at each close (entry bar .. bar before exit)
    np.testing.assert_array_equal(np.sign(held.to_numpy()), np.sign(busy.positions.to_numpy()))


def test_report_gives_every_strategy_notebook_its_section(done, tmp_path, monkeypatch):
    """A strategy without a no-costs run (PPO's mean of seeds) and the what-if notebook get
    their sections: conclusion, charts, metrics, what-if odds, volatility check and fan chart."""
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path))
    days = pd.bdate_range("2013-01-02", periods=300)
    rng = np.random.default_rng(0)
    curve = 100_000 * np.cumprod(1 + 0.01 * rng.standard_normal(300))
    hold = 100_000 * np.cumprod(1 + 0.01 * rng.standard_normal(300))
    mean_run = {"total_return": curve[-1] / 1e5 - 1, "sharpe": 0.1, "max_drawdown": 0.2,
                "cagr": 0.01, "trades_closed": 12.4}
    pipeline.record("Strategy_PPO", {
        "symbol": "X", "strategy": "ppo", "conclusion": "PPO loses to buy-and-hold.",
        "test": {"params": {"seeds": "0/1"}, "basis": "mean of 2 seeds, none chosen",
                 "with_costs": mean_run, "buy_and_hold": {**mean_run, "trades_closed": 0}}},
        {"equity": pd.DataFrame({"strategy": curve, "buy_and_hold": hold}, index=days)})
    quantiles = plots.fan_quantiles(100_000 * np.cumprod(1 + 0.01 * rng.standard_normal((50, 300)),
                                                         axis=1))
    fan = pd.DataFrame(quantiles.T, index=days, columns=["5%", "25%", "50%", "75%", "95%"])
    check = {"covers": False, "explosive": False, "history min": 0.067, "history max": 0.41}
    pipeline.record("Strategy_WhatIfScenarios", {
        "symbol": "X", "strategy": "sma", "conclusion": "sma on paths.", "rule": {"fast_period": 50},
        "paths": 50, "bars": 300,
        "models": {"garch": {"p_loss": 0.5, "p_beat_buy_and_hold": 0.2, "bankrupt": 6,
                             "median_total_return": -0.1, "median_sharpe": 0.06,
                             "median_max_drawdown": 0.6, "vol_check": check}}},
        {"fan_garch": fan.assign(**{"real history": curve})})
    entries = {f"2_Strategies/{n}.ipynb": {"status": "ok"} for n in ("Strategy_PPO",
                                                                     "Strategy_WhatIfScenarios")}
    (tmp_path / "run.json").write_text(json.dumps({"notebooks": entries}))
    page = report.write(tmp_path).read_text()
    ppo = page[page.index('<h2 id="Strategy_PPO">'):page.index('<h2 id="Strategy_WhatIfScenarios">')]
    assert "PPO loses to buy-and-hold." in ppo and "Monthly returns" in ppo
    assert ppo.count("data:image/png;base64,") == 2 and "no costs" not in ppo
    whatif = page[page.index('<h2 id="Strategy_WhatIfScenarios">'):]
    for words in ("sma on paths.", "Outcomes over the paths", "Path-year volatility", "bankrupt",
                  "41.0%"):
        assert words in whatif
    assert whatif.count("data:image/png;base64,") == 1  # the fan chart
    board = page[page.index("Leaderboard"):page.index("<h2>Notebooks")]
    assert "Strategy_PPO" in board and "Strategy_WhatIfScenarios" not in board
