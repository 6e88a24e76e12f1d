"""The fast notebook tier: each notebook runs through papermill with small parameters, the same
way `make run` runs it, and its recorded results are checked. (nbval separately re-runs the
committed notebooks with their defaults and compares every text output.)"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from algotrading import pipeline
from algotrading.pipeline import KERNEL, NotebookFailed

from helpers import snapshot

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = os.environ.get("ALGO_PUBLIC_DATA")
pytestmark = pytest.mark.notebooks


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fresh lake and run folder; kernels inherit the environment."""
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_notebooks_run_on_the_projects_kernel():
    for notebook in pipeline.notebooks(ROOT):
        spec = json.loads((ROOT / notebook).read_text())["metadata"]["kernelspec"]
        assert spec == pipeline.KERNELSPEC, notebook
    assert pipeline.KERNELSPEC == {"name": "algotrading", "display_name": "Python (algotrading)",
                                   "language": "python"}


def execute(notebook: str, run_dir: Path, **parameters) -> dict:
    from algotrading.pipeline import execute as run_notebook

    source = ROOT / notebook
    run_notebook(source, run_dir / notebook, parameters)  # as `algotrading run` does
    return json.loads((run_dir / "results" / f"{source.stem}.json").read_text())


@pytest.mark.skipif(not PUBLIC or not Path(PUBLIC).is_file(), reason="public dataset not present")
def test_data_notebooks_on_the_public_set(run_dir):
    loaded = execute("1_Data/Load_Hist_Data_Daily.ipynb", run_dir, source="public",
                     symbols=["INTC", "AAPL"])
    assert loaded["symbols"] == ["AAPL", "INTC"]
    assert loaded["rows"] == {"AAPL": 1258, "INTC": 1258}
    assert loaded["dropped"] == {"AAPL": 567, "INTC": 567}
    assert loaded["repaired"] == {"AAPL": 1, "INTC": 2}
    explored = execute("1_Data/Explore_Hist_Data.ipynb", run_dir, symbol="INTC", month="2014-01",
                       ma_windows=[10, 30])
    assert explored["days"] == {"AAPL": 1258, "INTC": 1258}
    assert explored["month"]["days"] == 21  # January 2014 had 21 NYSE trading days
    assert 0 < explored["mean_pair_corr"] < 1


def test_strategy_notebooks_with_a_small_grid(run_dir):
    execute("1_Data/Load_Hist_Data_Daily.ipynb", run_dir)
    sma = execute("2_Strategies/Strategy_SMA.ipynb", run_dir, symbol="IXIC", sweep_fast=[5, 20, 5],
                  sweep_slow=[30, 60, 10], fast_period=10, slow_period=30, long_only=True)
    assert sma["symbol"] == "IXIC" and sma["rule"]["long_only"] is True
    sweep = sma["sweep"]
    assert sweep["combinations"] == 16  # fast 5..20 x slow 30..60, all with fast < slow
    assert sweep["chosen"]["fast_period"] in (5, 10, 15, 20)
    assert set(sweep["on_edge"]) <= {"fast_period", "slow_period"}
    assert 0 <= sweep["deflated_sharpe"]["dsr"] <= 1 and sweep["deflated_sharpe"]["trials"] == 16
    test = sma["test"]
    # costs can only lower the result of the same trades
    assert test["with_costs"]["final_value"] < test["no_costs"]["final_value"]
    assert test["with_costs"]["trades_closed"] == test["no_costs"]["trades_closed"] > 0
    assert test["buy_and_hold"]["trades_open"] == 1
    wf = sma["walk_forward"]
    assert wf["windows"] == 17 and wf["last"] == "2018-12-31"  # (5031 - 756) / 252 windows, to the end
    assert "buy-and-hold" in sma["conclusion"] and "Walk-forward (17 windows" in sma["conclusion"]
    curves = pd.read_csv(run_dir / "results" / "Strategy_SMA.equity.csv", index_col=0)
    assert list(curves.columns) == ["strategy", "no_costs", "buy_and_hold"]
    assert curves["strategy"].iloc[-1] == pytest.approx(test["with_costs"]["final_value"])
    breakout = execute("2_Strategies/Strategy_Breakout.ipynb", run_dir, sweep_period=[20, 60, 20])
    assert breakout["sweep"]["combinations"] == 6  # 3 periods x go_short in (True, False)
    assert breakout["rule"]["period"] == 50
    assert isinstance(breakout["sweep"]["chosen"]["go_short"], bool)


def test_pipeline_run_only_updates_its_entries_and_reports_failures(run_dir, capfd):
    from algotrading import pipeline

    out = run_dir / "pipeline"
    pipeline.run(only=["Load_Hist"], parameters={"symbols": ["GSPC"]}, out=out)
    load = pipeline.load_manifest(out)["1_Data/Load_Hist_Data_Daily.ipynb"]
    assert load["status"] == "ok" and load["overrides"] == {"symbols": ["GSPC"]}
    assert load["parameters"] == {"source": "sample", "path": None, "symbols": ["GSPC"],
                                  "corrections": None, "jump": 0.3, "accept_jumps": False}
    lake_file = Path(os.environ["ALGO_LAKE"]) / "hist_data_daily" / "GSPC.csv"
    assert load["data"]["files"] == {"GSPC.csv": hashlib.sha256(lake_file.read_bytes()).hexdigest()}
    assert load["version"] == version("algotrading")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert load["commit"] == (head.stdout.strip() or None)

    # the README's old example: the data ends in 2018, so the month has no rows
    with pytest.raises(pipeline.NotebookFailed) as failed:
        pipeline.run(only=["Explore"], parameters={"month": "2020-03"}, out=out)
    message = str(failed.value)
    assert re.match(r"Explore_Hist_Data.ipynb failed in cell \d+ \(In \[\d+\]\): ValueError: no bars",
                    message)
    assert "\n" not in message and "Traceback" not in message
    assert (out / "1_Data" / "Explore_Hist_Data.ipynb").is_file()  # kept for inspection
    entries = pipeline.load_manifest(out)
    assert entries["1_Data/Explore_Hist_Data.ipynb"]["error"] == message
    assert entries["1_Data/Load_Hist_Data_Daily.ipynb"] == load  # untouched by the other run

    pipeline.run(only=["Explore"], out=out)
    entries = pipeline.load_manifest(out)
    assert [e["status"] for e in entries.values()] == ["ok", "ok"]
    assert entries["1_Data/Load_Hist_Data_Daily.ipynb"] == load
    assert {p.name for p in (out / "results").iterdir()} == {"Load_Hist_Data_Daily.json",
                                                             "Explore_Hist_Data.json"}
    md = (out / "report.md").read_text()
    assert "Load_Hist_Data_Daily.ipynb) | ok" in md and "Explore_Hist_Data.ipynb) | ok" in md
    assert "without encryption" not in capfd.readouterr().err  # kernels run with CurveZMQ
    assert os.environ["ALGO_RUN_DIR"] == str(run_dir)  # the caller's setting is restored

    with pytest.raises(ValueError, match="sourc not declared.*source, path, symbols, corrections"):
        pipeline.run(only=["Load_Hist"], parameters={"sourc": "csv"}, out=run_dir / "never")
    assert not (run_dir / "never").exists()
    with pytest.raises(ValueError, match="no notebook matches"):
        pipeline.run(only=["Nope"], out=run_dir)


def test_an_ad_hoc_papermill_run_writes_nothing_under_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.delenv("ALGO_RUN_DIR", raising=False)
    runs = ROOT / "runs"
    before = snapshot(runs) if runs.is_dir() else {}
    source = ROOT / "1_Data" / "Load_Hist_Data_Daily.ipynb"
    pm.execute_notebook(str(source), str(tmp_path / "load.ipynb"), parameters={"symbols": ["GSPC"]},
                        cwd=str(source.parent), kernel_name=KERNEL, progress_bar=False)
    assert (tmp_path / "lake" / "hist_data_daily" / "GSPC.csv").is_file()  # it did run
    assert (snapshot(runs) if runs.is_dir() else {}) == before


def test_forecast_model_and_ml_strategy_notebooks(run_dir):
    from algotrading import lake, sources

    lake.write(sources.read("sample").frame)  # what Load_Hist_Data_Daily does by default
    with pytest.raises(NotebookFailed) as missing:  # no model in the run folder yet
        execute("2_Strategies/Strategy_ML_Forecast.ipynb", run_dir, symbol="IXIC")
    assert ("MissingArtifact: Strategy_ML_Forecast needs <run dir>/models/forecast-IXIC/model.pt and 1 "
            "more (from 3_Models/Train_Model_Forecast.ipynb): run 3_Models/Train_Model_Forecast.ipynb "
            "first") in str(missing.value)
    trained = execute("3_Models/Train_Model_Forecast.ipynb", run_dir, symbol="IXIC", epochs=3,
                      extra_features=True)
    assert trained["config"]["symbol"] == "IXIC" and trained["epochs_run"] <= 3
    assert len(trained["weights_sha256"]) == 64
    assert trained["artifact"] == "<run dir>/models/forecast-IXIC"
    for mode in ("barrier", "workshop"):
        test_rates = trained["label_rates"][mode]["test"]
        assert test_rates["rows"] > 1000 and 0 < test_rates["long"] < 1
    assert set(trained["test"]) == {"network", "majority", "logistic", "gbt"}
    assert trained["test"]["majority"]["long"]["roc_auc"] == 0.5
    ml = execute("2_Strategies/Strategy_ML_Forecast.ipynb", run_dir, symbol="IXIC",
                 sweep_long=[0.2, 0.4, 0.1], sweep_short=[0.2, 0.4, 0.1])
    assert ml["validation"]["pairs"] == 9
    assert ml["chosen"]["long_threshold"] in (0.2, 0.3, 0.4)
    assert ml["exits"] == {"take_profit": 0.02, "stop_loss": 0.015, "max_bars": 5}
    reasons = ml["test"]["exit_reasons"]
    assert set(reasons) <= {"take_profit", "stop_loss", "max_bars", "signal", "open"}
    assert reasons.get("signal", 0) <= 0.02 * sum(reasons.values())  # only slippage's edge cases
    assert ml["test"]["buy_and_hold"]["trades_open"] == 1
    assert ml["test"]["sma"]["trades_closed"] >= 1


def test_paper_trading_notebook(run_dir):
    from algotrading.cli import main

    assert main(["ingest", "sample"]) == 0  # the fixture's fresh lake
    paper = execute("2_Strategies/Run_Strategy_Paper.ipynb", run_dir, replay_days=60,
                    loss_alert=1.0)
    assert paper["bars"] == 60
    # the paper run reproduces the backtest (up to float rounding: the backtest sums cash flows
    # with numpy, the broker adds them one by one)
    assert abs(paper["parity_difference"]) < 1e-6
    assert paper["paper"]["fills"] > 0
    assert "loss" in paper["alerts"]
