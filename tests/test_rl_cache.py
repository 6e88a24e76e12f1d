"""The PPO cache: the same inputs read back the policy trained before (weights bit for bit); a
changed hyperparameter, changed training bars, other package versions or other code give another
key and train again; a damaged entry is trained again."""

from __future__ import annotations

import numpy as np
import pytest

from algotrading import numerics
from algotrading.rl import cache, train

from helpers import random_walk

TINY = dict(total_timesteps=128, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
            lstm_hidden_size=8, episode_bars=60)
END = "2013-12-31"
ENGINE = {"commission_bps": 2.0}


@pytest.fixture(scope="module")
def prices():
    return random_walk(700, seed=5, start="2012-01-02", base=80.0, drift=3e-4, vol=0.012)


def weights(trained: train.Trained) -> str:
    return numerics.weights_sha256(trained.model.policy.state_dict())


def test_key_changes_with_every_input(prices, monkeypatch):
    base = cache.key(prices, END, 0, ENGINE, **TINY)
    assert base == cache.key(prices, END, 0, dict(ENGINE), **dict(TINY))  # same inputs, same key
    bumped = prices.copy()
    bumped.iloc[100, bumped.columns.get_loc("close")] *= 1.001  # one training bar
    others = {
        "seed": cache.key(prices, END, 1, ENGINE, **TINY),
        "hyperparameter": cache.key(prices, END, 0, ENGINE, **{**TINY, "learning_rate": 1e-3}),
        "engine": cache.key(prices, END, 0, {"commission_bps": 3.0}, **TINY),
        "train_end": cache.key(prices, "2013-06-28", 0, ENGINE, **TINY),
        "data": cache.key(bumped, END, 0, ENGINE, **TINY),
    }
    monkeypatch.setattr(cache, "_versions", lambda: {"torch": "0.0"})
    others["versions"] = cache.key(prices, END, 0, ENGINE, **TINY)
    monkeypatch.undo()
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "0" * 64)
    others["code"] = cache.key(prices, END, 0, ENGINE, **TINY)
    assert len({base, *others.values()}) == len(others) + 1, others


def test_code_fingerprint_covers_what_training_imports():
    seen = set()
    todo = list(cache.ROOTS)
    while todo:  # the closure code_fingerprint hashes, checked for the modules training runs
        module = todo.pop()
        if module not in seen and cache._source(module):
            seen.add(module)
            todo.extend(cache._imports(module, cache._source(module)))
    assert {"algotrading.rl.env", "algotrading.backtest.broker", "algotrading.features",
            "algotrading.backtest.settings", "algotrading.numerics"} <= seen


@pytest.mark.slow
def test_same_inputs_read_back_and_changes_retrain(prices, tmp_path):
    first = cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path, **TINY)
    assert not first.cached
    again = cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path, **TINY)
    assert again.cached and weights(again) == weights(first) == first.config["weights_sha256"]
    assert again.episode_rewards == first.episode_rewards and again.seconds == first.seconds
    assert {type(r) for r in again.episode_rewards} == {type(r) for r in first.episode_rewards}
    np.testing.assert_array_equal(train.positions(again, prices, "2014-01-01"),
                                  train.positions(first, prices, "2014-01-01"))
    direct = train.train(prices, END, 0, engine=ENGINE, **TINY)  # what the cache stands in for
    assert weights(direct) == weights(again)

    changed = cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path,
                            **{**TINY, "learning_rate": 1e-3})
    assert not changed.cached and weights(changed) != weights(first)
    bumped = prices.copy()
    bumped.iloc[100, bumped.columns.get_loc("close")] *= 1.001
    assert not cache.trained(bumped, END, 0, engine=ENGINE, where=tmp_path, **TINY).cached
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.slow
def test_damaged_entry_is_trained_again(prices, tmp_path):
    first = cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path, **TINY)
    entry = tmp_path / cache.key(prices, END, 0, ENGINE, **TINY)
    (entry / "model.zip").write_bytes(b"not a zip")
    again = cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path, **TINY)
    assert not again.cached and weights(again) == weights(first)
    assert cache.trained(prices, END, 0, engine=ENGINE, where=tmp_path, **TINY).cached
