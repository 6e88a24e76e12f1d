"""PPO training: seeded and reproducible on CPU, the artifact round-trips with its observation
config and data fingerprint, evaluation is a backtest of the policy's positions, and the
SageMaker entry runs in-process under an SM_* layout. The job request is checked on the moto
server in tests/test_rl_job.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest
from algotrading.rl import train

from helpers import random_walk

pytestmark = pytest.mark.slow  # every test here trains a policy

TINY = dict(total_timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
            lstm_hidden_size=8, episode_bars=60)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return random_walk(700, seed=5, start="2012-01-02", base=80.0, drift=3e-4, vol=0.012)


@pytest.fixture(scope="module")
def trained(prices):
    return train.train(prices, "2013-12-31", seed=3, engine={"commission_bps": 2.0}, **TINY)


def test_training_is_seeded(prices, trained):
    again = train.train(prices, "2013-12-31", seed=3, engine={"commission_bps": 2.0}, **TINY)
    other = train.train(prices, "2013-12-31", seed=4, engine={"commission_bps": 2.0}, **TINY)
    params = trained.model.policy.state_dict()
    assert all(np.array_equal(v, again.model.policy.state_dict()[k]) for k, v in params.items())
    assert not all(np.array_equal(v, other.model.policy.state_dict()[k]) for k, v in params.items())
    assert trained.episode_rewards == again.episode_rewards and len(trained.episode_rewards) >= 2
    with pytest.raises(ValueError, match="PPO has no parameter"):
        train.train(prices, "2013-12-31", learning_rat=1e-3)


def test_artifact_round_trip_and_evaluation_is_a_backtest(prices, trained, tmp_path):
    folder = train.save(trained, tmp_path / "ppo")
    loaded = train.load(folder)
    config = loaded.config
    assert config["fingerprint"] == train.fingerprint(prices.loc[:"2013-12-31"])
    assert config["train_end"] == "2013-12-31" and config["window"] == train.HYPERPARAMETERS["window"]
    assert config["engine"] == {"commission_bps": 2.0}
    assert len(config["scale_mean"]) == len(config["features"])
    before = train.positions(trained, prices, "2014-01-01")
    after = train.positions(loaded, prices, "2014-01-01")
    pd.testing.assert_series_equal(before, after)
    assert before.index[0] >= pd.Timestamp("2014-01-01") and set(before.unique()) <= {-1.0, 0.0, 1.0}
    result = train.evaluate(loaded, prices, "2014-01-01")
    direct = backtest.run(before, prices, start="2014-01-01", commission_bps=2.0)
    assert result.metrics["final_value"] == direct.metrics["final_value"]
    assert result.equity.index[0] == before.index[0]
    with pytest.raises(FileNotFoundError, match="not a PPO artifact"):
        train.load(tmp_path)


def test_entry_runs_under_the_sagemaker_layout(prices, tmp_path, monkeypatch, capsys):
    config, data, model = tmp_path / "config", tmp_path / "data", tmp_path / "model"
    config.mkdir()
    train.write_channel(prices, "SYN", data)
    hyper = {"symbol": "SYN", "train_end": "2013-12-31", "seed": "1", "commission_bps": "1.0",
             **{k: json.dumps(v) for k, v in TINY.items()}}
    (config / "hyperparameters.json").write_text(json.dumps(hyper))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(config))
    monkeypatch.setenv("SM_CHANNEL_TRAINING", str(data))
    monkeypatch.setenv("SM_MODEL_DIR", str(model))
    train.main()
    out = capsys.readouterr().out
    assert "train_seconds=" in out and "episode_reward=" in out
    loaded = train.load(model)
    assert loaded.config["seed"] == 1 and loaded.config["engine"] == {"commission_bps": 1.0}
    assert loaded.config["fingerprint"] == train.fingerprint(prices.loc[:"2013-12-31"])


def test_cli_train_ppo_locally(tmp_path, monkeypatch, capsys):
    from algotrading.cli import main

    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample", "--symbols", "IXIC"]) == 0
    capsys.readouterr()
    out = tmp_path / "ppo"
    tiny = [f"--param={k}={v}" for k, v in TINY.items()]
    assert main(["train", "ppo", "--symbol", "IXIC", "--start", "2010-01-01", "--param",
                 "train_end=2012-12-31", "--param", "seed=4", "--param", "commission_bps=1",
                 "--out", str(out), *tiny]) == 0
    text = capsys.readouterr().out
    assert "seed 4" in text and f"artifact: {out}" in text
    back = train.load(out)
    assert back.config["seed"] == 4 and back.config["train_end"] == "2012-12-31"
    assert back.config["engine"] == {"commission_bps": 1}
    assert main(["train", "ppo", "--symbol", "IXIC", "--param", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", "ppo", "--symbol", "IXIC", "--param", "seed=-1"]) == 2
    assert "seed" in capsys.readouterr().err
