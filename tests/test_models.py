"""The forecaster: purged chronological splits, deterministic training, evaluation against the
baselines, the SageMaker entry script under a temporary SM_* layout, artifacts and `train` CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algotrading import features, jobs, schema, sources
from algotrading.cli import main
from algotrading.models import forecast, train

ROOT = Path(__file__).resolve().parents[1]
FAST = forecast.Config(epochs=4, patience=2)  # a few epochs: the mechanics, not the skill


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC")


@pytest.fixture(scope="module")
def trained(gspc):
    return forecast.train(gspc, FAST)


def test_splits_are_chronological_disjoint_and_purged(gspc):
    cfg = forecast.Config(horizon=5)
    rows = forecast.split_rows(gspc.index, cfg)
    assert list(rows) == list(forecast.SPLITS)
    flat = np.concatenate(list(rows.values()))
    assert (np.diff(flat) > 0).all()  # in order, no overlap
    dates = gspc.index
    assert dates[rows["early_stop"][-1] + 5] <= pd.Timestamp(cfg.train_end)  # labels stay inside
    assert dates[rows["validation"][0]] > pd.Timestamp(cfg.train_end)
    assert dates[rows["validation"][-1] + 5] <= pd.Timestamp(cfg.validation_end)
    assert dates[rows["test"][0]] > pd.Timestamp(cfg.validation_end)
    assert rows["test"][-1] + 5 == len(gspc) - 1  # the last labelled bar
    # each purge drops exactly `horizon` rows before the next split starts
    assert rows["early_stop"][0] - rows["fit"][-1] == 6
    train_rows = len(rows["fit"]) + len(rows["early_stop"]) + 10
    assert len(rows["early_stop"]) + 5 == int(train_rows * cfg.early_stop_fraction)
    workshop = forecast.split_rows(gspc.index, forecast.Config(split="workshop"))
    assert len(workshop["validation"]) == 0
    assert workshop["test"][0] == int(len(gspc) * 0.4)
    with pytest.raises(ValueError, match="train_end"):
        forecast.split_rows(gspc.index, forecast.Config(train_end="2030-01-01"))


@pytest.mark.slow
def test_training_is_deterministic_and_leaves_torch_as_it_was(gspc, trained):
    model, report = trained
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again, report2 = forecast.train(gspc, FAST)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    for (name, a), b in zip(model.net.state_dict().items(), again.net.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(report["evaluation"], report2["evaluation"])
    assert model.meta["metrics"] == again.meta["metrics"]
    # a different seed gives a different network
    other, _ = forecast.train(gspc, forecast.Config(epochs=4, patience=2, seed=7))
    assert not torch.equal(other.net.layers[0].weight, model.net.layers[0].weight)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch(gspc):
    cfg = forecast.Config(epochs=30, patience=3)
    data = forecast.dataset(gspc, cfg)
    model, history = forecast.fit(data, cfg)
    best = int(history["early_stop_loss"].idxmin())
    assert model.meta["best_epoch"] == best
    assert len(history) == min(cfg.epochs, best + cfg.patience)
    X, y = data.part("early_stop")
    loss = torch.nn.BCEWithLogitsLoss()
    with torch.no_grad():
        logits = model.net(torch.from_numpy(model.scaler(X)))
    assert float(loss(logits, torch.from_numpy(y))) == pytest.approx(
        history.loc[best, "early_stop_loss"], rel=1e-6)


@pytest.mark.slow
def test_evaluation_table_has_the_network_and_three_baselines(gspc, trained):
    model, report = trained
    table = report["evaluation"]
    assert list(table.index) == [(m, o) for m in forecast.MODELS for o in forecast.OUTPUTS]
    test_rows = len(report["data"].rows["test"])
    assert (table[["tn", "fp", "fn", "tp"]].sum(axis=1) == test_rows).all()
    majority = table.loc["majority"]
    assert (majority["roc_auc"] == 0.5).all() and (majority["tp"] == 0).all()
    assert (majority["balanced_accuracy"] == 0.5).all()
    # accuracy of "never trade" is 1 - label rate: the number the workshop reported as skill
    np.testing.assert_allclose(majority["accuracy"], 1 - majority["label_rate"])
    assert table["roc_auc"].between(0, 1).all()
    rates = report["rates"]
    assert list(rates.index) == list(forecast.SPLITS) and (rates["rows"] > 0).all()
    assert set(model.meta["metrics"]) == set(forecast.METRICS)


def test_scores_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0], float)
    p = np.array([0.1, 0.6, 0.7, 0.4, 0.9, 0.2])
    s = forecast.scores(y, p)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 1, 2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (pos, neg) pairs ranked right
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(forecast.scores(np.zeros(4), np.full(4, 0.3))["roc_auc"])


def test_config_from_hyperparameters():
    cfg = forecast.Config.from_params({"epochs": "7", "target": "0.03", "extra_features": "true",
                                       "symbol": "INTC"})
    assert (cfg.epochs, cfg.target, cfg.extra_features, cfg.symbol) == (7, 0.03, True, "INTC")
    assert forecast.Config.from_params(asdict(cfg)) == cfg
    with pytest.raises(ValueError, match="forecast has no parameter .epoch. \\(did you mean .epochs.\\?\\)"):
        forecast.Config.from_params({"epoch": 3})
    with pytest.raises(ValueError, match="epochs=2.5"):
        forecast.Config.from_params({"epochs": 2.5})
    with pytest.raises(ValueError, match="dropout"):
        forecast.Config(dropout=1.0)
    with pytest.raises(ValueError, match="extra_features"):
        forecast.Config.from_params({"extra_features": "yes"})


def _sm_layout(tmp_path: Path, prices: pd.DataFrame, params: dict) -> dict[str, str]:
    """The folders and variables a SageMaker training container sees."""
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    # SageMaker hands every hyperparameter over as a string
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) if not isinstance(v, str)
                                                             else v for k, v in params.items()}))
    train.write_prices(prices, tmp_path / "input" / "data" / "training", params["symbol"])
    return {"SM_INPUT_CONFIG_DIR": str(config),
            "SM_CHANNEL_TRAINING": str(tmp_path / "input" / "data" / "training"),
            "SM_MODEL_DIR": str(tmp_path / "model")}


@pytest.mark.slow
def test_entry_script_under_a_sagemaker_layout(gspc, tmp_path):
    """`python -m algotrading.models.train` as the job's command runs it: artifact in
    SM_MODEL_DIR, metrics as `name=value;` lines the job's metric definitions match, and the
    same weights as the in-process (local backend) run."""
    params = {**asdict(FAST), "extra_features": True}
    env = {**os.environ, **_sm_layout(tmp_path, gspc, params)}
    done = subprocess.run([sys.executable, "-m", train.ENTRY], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    found = {name: float(m.group(1)) for name, regex in
             jobs.metric_definitions(forecast.METRICS).items()
             if (m := re.search(regex, done.stdout))}
    assert set(found) == set(forecast.METRICS)
    model = forecast.load(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.json", "model.pt"]
    meta = model.meta
    assert meta["config"] == asdict(forecast.Config.from_params(params))
    assert meta["data"]["sha256"] == forecast.fingerprint(gspc)
    assert meta["features"] == list(features.workshop(gspc.iloc[:30], extra=True).columns)
    assert len(meta["scaler"]["mean"]) == 35 and meta["history"][0]["epoch"] == 1
    assert found["best_epoch"] == meta["best_epoch"]
    assert found["test_roc_auc_long"] == pytest.approx(meta["metrics"]["test_roc_auc_long"], 1e-5)

    local, _ = train.train_local(gspc, forecast.Config.from_params(params), tmp_path / "local")
    pd.testing.assert_frame_equal(model.predict(gspc), local.predict(gspc))
    assert json.loads((tmp_path / "local" / "model.json").read_text())["metrics"] == meta["metrics"]


@pytest.mark.slow
def test_artifact_round_trip_folder_and_tar_gz(gspc, trained, tmp_path):
    model, _ = trained
    folder = forecast.save(model, tmp_path / "model")
    tar = forecast.pack(folder, tmp_path / "model.tar.gz")
    expected = model.predict(gspc)
    for source in (folder, tar, str(tar)):
        back = forecast.load(source)
        pd.testing.assert_frame_equal(back.predict(gspc), expected)
        assert back.config == FAST
    assert expected.index.equals(gspc.index) and expected.stack().between(0, 1).all()
    with pytest.raises(FileNotFoundError, match="train the model first"):
        forecast.load(tmp_path / "missing")
    import tarfile

    with tarfile.open(tmp_path / "junk.tar.gz", "w:gz") as junk:
        junk.add(folder / "model.pt", arcname="model.pt")
    with pytest.raises(ValueError, match="model.json"):
        forecast.load(tmp_path / "junk.tar.gz")


@pytest.mark.slow
def test_cli_train_forecast_locally(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample"]) == 0
    capsys.readouterr()
    out = tmp_path / "artifact"
    assert main(["train", "forecast", "--symbol", "IXIC", "--param", "epochs=2",
                 "--param", "patience=1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "roc_auc" in text and "gbt" in text and "logistic" in text and "majority" in text
    assert f"artifact: {out}" in text
    assert forecast.load(out).meta["data"]["symbol"] == "IXIC"
    assert main(["train", "forecast", "--symbol", "IXIC", "--param", "horizon=0"]) == 2
    assert "horizon=0" in capsys.readouterr().err


@pytest.mark.slow
def test_train_model_dispatch_refuses_incomplete_settings(gspc, tmp_path):
    with pytest.raises(ValueError, match="model_dir"):
        train.train_model(gspc, FAST, "local")
    with pytest.raises(ValueError, match="output_path"):
        train.train_model(gspc, FAST, "aws")
    with pytest.raises(ValueError, match="backend"):
        train.train_model(gspc, FAST, "gpu", model_dir=tmp_path)
    model, where = train.train_model(gspc, FAST, "local", model_dir=tmp_path / "m")
    assert where == str(tmp_path / "m") and forecast.load(where).meta["metrics"] == model.meta["metrics"]
