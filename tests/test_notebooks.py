"""The fast notebook tier: each notebook runs through papermill with small parameters, the same
way `make run` runs it, and its recorded results are checked. (nbval separately re-runs the
committed notebooks with their defaults and compares every text output.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = os.environ.get("ALGO_PUBLIC_DATA")
pytestmark = pytest.mark.notebooks


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fresh lake and run folder; kernels inherit the environment."""
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def execute(notebook: str, run_dir: Path, **parameters) -> dict:
    source = ROOT / notebook
    (run_dir / notebook).parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(source), str(run_dir / notebook), parameters=parameters,
                        cwd=str(source.parent), kernel_name="python3", progress_bar=False)
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
    assert sma["sweep"]["combinations"] == 16  # fast 5..20 x slow 30..60, all with fast < slow
    assert sma["sweep"]["chosen"]["fast_period"] in (5, 10, 15, 20)
    test = sma["test"]
    # costs can only lower the result of the same trades
    assert test["with_costs"]["final_value"] < test["no_costs"]["final_value"]
    assert test["with_costs"]["trades_closed"] == test["no_costs"]["trades_closed"] > 0
    assert test["buy_and_hold"]["trades_open"] == 1
    assert sma["walk_forward"]["windows"] >= 5
    breakout = execute("2_Strategies/Strategy_Breakout.ipynb", run_dir, sweep_period=[20, 60, 20])
    assert breakout["sweep"]["combinations"] == 6  # 3 periods x go_short in (True, False)
    assert breakout["rule"]["period"] == 50


def test_pipeline_runs_notebooks_into_a_report(run_dir):
    from algotrading import pipeline

    out = run_dir / "pipeline"
    report = pipeline.run(only=["Load_Hist"], parameters={"symbols": ["GSPC"], "unknown": 1}, out=out)
    text = report.read_text()
    assert "[1_Data/Load_Hist_Data_Daily.ipynb](1_Data/Load_Hist_Data_Daily.ipynb) | ok" in text
    assert "| rows.GSPC | 5031 |" in text
    assert (out / "1_Data" / "Load_Hist_Data_Daily.ipynb").is_file()
    assert os.environ["ALGO_RUN_DIR"] == str(run_dir)  # the caller's setting is restored
    with pytest.raises(ValueError, match="no notebook matches"):
        pipeline.run(only=["Nope"], out=run_dir)


def test_forecast_model_and_ml_strategy_notebooks(run_dir):
    from algotrading import lake, sources

    lake.write(sources.read("sample").frame)  # what Load_Hist_Data_Daily does by default
    trained = execute("3_Models/Train_Model_Forecast.ipynb", run_dir, symbol="IXIC", epochs=3,
                      extra_features=True)
    assert trained["config"]["symbol"] == "IXIC" and trained["epochs_run"] <= 3
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
