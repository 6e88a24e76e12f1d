"""The PPO and what-if notebooks through papermill with small parameters, as `make run` runs
them (nbval separately re-runs the committed notebooks with their defaults)."""

from __future__ import annotations

import pytest
from test_notebooks import execute, run_dir  # noqa: F401  (the shared papermill helpers)

from algotrading import metrics
from algotrading.cli import main
from algotrading.pipeline import NotebookFailed

pytestmark = pytest.mark.notebooks


def _ingest() -> None:
    """GSPC from the offline sample into the fixture's lake (the data notebook's own test covers
    the notebook; these tests need only the bars)."""
    assert main(["ingest", "sample", "--symbols", "GSPC"]) == 0


def test_ppo_notebooks_train_and_evaluate_every_seed(run_dir):  # noqa: F811
    _ingest()
    small = dict(seeds=[0, 1], total_timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
                 lstm_hidden_size=8)
    trained = execute("3_Models/Train_Model_PPO.ipynb", run_dir, **small)
    assert set(trained["train_seconds"]) == {"0", "1"} and len(trained["fingerprint"]) == 64
    assert set(trained["weights_sha256"]) == {"0", "1"}
    assert trained["weights_sha256"]["0"] != trained["weights_sha256"]["1"]
    assert (run_dir / "models" / "ppo" / "GSPC-seed1" / "policy.pt").is_file()
    with pytest.raises(NotebookFailed) as missing:  # seed 2 was not trained
        execute("2_Strategies/Strategy_PPO.ipynb", run_dir, seeds=[0, 2])
    assert ("MissingArtifact: Strategy_PPO needs <run dir>/models/ppo/GSPC-seed2/policy.pt and 1 more "
            "(from 3_Models/Train_Model_PPO.ipynb): run 3_Models/Train_Model_PPO.ipynb first") in str(
        missing.value)
    strategy = execute("2_Strategies/Strategy_PPO.ipynb", run_dir, seeds=[0, 1], level=0.9)
    returns = [strategy["ppo"][s]["total_return"] for s in ("0", "1")]
    assert strategy["ppo_mean"]["total_return"] == pytest.approx(sum(returns) / 2)
    assert strategy["test_start"] == "2013-01-01" and strategy["buy_and_hold"]["trades_closed"] == 0
    assert strategy["engine"] == {"commission_bps": 1.0, "slippage_bps": 2.0}
    # the verdict comes from the seeds' bootstrap interval against buy-and-hold, nothing else
    interval = strategy["ppo_interval"]
    assert (interval["low"], interval["high"]) == pytest.approx(
        metrics.bootstrap_interval(returns, level=0.9, resamples=10_000, seed=0))
    assert interval["level"] == 0.9 and interval["statistic"] == "mean total_return"
    hold = strategy["buy_and_hold"]["total_return"]
    expected = ("beats" if interval["low"] > hold else "loses to" if interval["high"] < hold
                else "cannot be told apart with 2 seeds")
    assert expected in strategy["verdict"] and strategy["verdict"] in strategy["conclusion"]


def test_whatif_notebook_reports_each_generator(run_dir):  # noqa: F811
    _ingest()
    out = execute("2_Strategies/Strategy_WhatIfScenarios.ipynb", run_dir, paths=4, bars=400,
                  fast_period=10, slow_period=30)
    assert set(out["models"]) == {"gbm", "garch", "bootstrap"}
    for model in out["models"].values():
        assert model["paths"] == 4 and 0 <= model["p_loss"] <= 1
    stress = out["cost_stress"]
    assert stress["costs x0"] > stress["costs x1"] > stress["costs x2"] > stress["costs x5"]
