"""The RL environment trades exactly like the backtest and never looks ahead; the layer-normalised
LSTM behaves like nn.LSTM (and equals it without normalisation); the policy trains and reloads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from algotrading import backtest
from algotrading.rl.env import ACTIONS, TradingEnv, market_features, normaliser
from algotrading.rl.lstm import LayerNormLSTM

from helpers import random_walk


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return random_walk(900, seed=11)


def test_env_passes_gymnasiums_checker(prices):
    check_env(TradingEnv(prices, window=10, episode_bars=50), skip_render_check=True)


def test_episode_starts_are_seeded_and_inside_the_range(prices):
    env = TradingEnv(prices, window=10, episode_bars=50, start="2010-06-01", end="2011-12-30")
    starts = [env.reset(seed=s)[1]["bar"] for s in (1, 2, 1)]
    assert starts[0] == starts[2] != starts[1]
    for _ in range(20):
        bar = env.reset()[1]["bar"]
        assert prices.index[bar] >= pd.Timestamp("2010-06-01")
        assert bar + 50 <= np.searchsorted(prices.index, pd.Timestamp("2011-12-30"), side="right") - 1


@pytest.mark.parametrize("engine", [{}, {"commission_bps": 5.0, "slippage_bps": 3.0},
                                    {"fill": "close", "commission_per_share": 0.01},
                                    {"leverage": 2.0, "fraction": 1.5, "stop_loss": 0.03}])
def test_final_equity_equals_backtest_run_fed_the_same_positions(prices, engine):
    env = TradingEnv(prices, window=5, episode_bars=300, **engine)
    obs, info = env.reset(seed=4)
    rng = np.random.default_rng(0)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(0, 3)))
        total += reward
        done = terminated or truncated
    bars = env.episode_prices(prices)
    assert len(bars) == 301 and len(env.positions) == 300
    # the last decision bar's target is never filled (fill at the next open), so keep it unchanged
    result = backtest.run(np.array(env.positions + env.positions[-1:]), bars, **engine)
    assert env.equity == pytest.approx(result.equity.iloc[-1], rel=1e-12)
    assert result.metrics["trades_closed"] > 10
    # rewards are log equity changes, so they add up to the log of the total return
    assert total == pytest.approx(np.log(result.equity.iloc[-1] / 100_000))  # from the starting cash


def test_observation_at_t_ignores_later_bars(prices):
    changed = prices.copy()
    later = changed.index > changed.index[400]
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.7
    scale = normaliser(market_features(prices), prices.index[400])  # fitted on bars up to t only
    a = TradingEnv(prices, window=20, episode_bars=None, scale=scale)
    b = TradingEnv(changed, window=20, episode_bars=None, scale=scale)
    obs_a, obs_b = a.reset()[0], b.reset()[0]
    rng = np.random.default_rng(1)
    checked = 0
    while True:
        np.testing.assert_array_equal(obs_a, obs_b)
        checked += 1
        if a.t == 400:
            break
        action = int(rng.integers(0, 3))
        obs_a, *_ = a.step(action)
        obs_b, *_ = b.step(action)
    assert checked > 150  # from the first bar with every feature (the 200-bar average) to bar 400
    obs_a, *_ = a.step(2)
    obs_b, *_ = b.step(2)
    assert not np.array_equal(obs_a, obs_b)  # bar 401 differs, and the environment shows it


def test_bankruptcy_terminates_the_episode():
    n = 60
    close = np.concatenate([np.full(30, 100.0), np.full(n - 30, 300.0)])
    index = pd.bdate_range("2020-01-01", periods=n)
    bars = pd.DataFrame({"open": close, "high": close, "low": close, "close": close}, index=index)
    features = pd.DataFrame({"r": np.zeros(n)}, index=index)
    env = TradingEnv(bars, features, window=1, episode_bars=None, leverage=1.0)
    env.reset()
    for _ in range(28):
        *_, terminated, truncated, _ = env.step(ACTIONS.index(-1.0))  # short at 100, price triples
        assert not terminated
    *_, terminated, truncated, _ = env.step(0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and info["equity"] <= 0 and reward == -10.0


def test_bad_inputs_are_named(prices):
    with pytest.raises(ValueError, match="window=0"):
        TradingEnv(prices, window=0)
    with pytest.raises(ValueError, match="usable bars"):
        TradingEnv(prices, window=10, episode_bars=2000)
    with pytest.raises(ValueError, match="indexed like prices"):
        TradingEnv(prices, features=market_features(prices).iloc[1:])
    with pytest.raises(ValueError, match="commission_bps"):
        TradingEnv(prices, commission_bps=-1)


# -- the layer-normalised LSTM ------------------------------------------------------------------
def test_lstm_shapes_and_state_carry_over():
    torch.manual_seed(0)
    lstm = LayerNormLSTM(4, 8, num_layers=2)
    x = torch.randn(12, 3, 4)
    out, (h, c) = lstm(x)
    assert out.shape == (12, 3, 8) and h.shape == c.shape == (2, 3, 8)
    assert torch.equal(out[-1], h[-1])
    first, state = lstm(x[:5])
    second, state2 = lstm(x[5:], state)  # carrying the state over = one pass over the whole
    torch.testing.assert_close(torch.cat([first, second]), out)
    torch.testing.assert_close(state2[0], h)
    fresh, _ = lstm(x[5:])  # a reset (zero) state gives a different continuation
    assert not torch.allclose(fresh, second)
    with pytest.raises(ValueError, match="seq, batch, features"):
        lstm(x[0])


def test_lstm_without_normalisation_equals_torch_lstm():
    torch.manual_seed(1)
    ours = LayerNormLSTM(5, 7, num_layers=2, layer_norm=False)
    ref = torch.nn.LSTM(5, 7, num_layers=2)
    ours.load_state_dict(ref.state_dict(), strict=False)  # same parameter names
    x = torch.randn(9, 4, 5)
    state = (torch.randn(2, 4, 7), torch.randn(2, 4, 7))
    out, (h, c) = ours(x, state)
    out_ref, (h_ref, c_ref) = ref(x, state)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_lstm_normalisation_makes_it_scale_invariant_in_the_input():
    torch.manual_seed(2)
    lstm = LayerNormLSTM(3, 6)
    x = torch.randn(10, 2, 3)
    torch.testing.assert_close(lstm(x)[0], lstm(x * 100)[0], atol=2e-3, rtol=0)  # up to LN eps
    plain = LayerNormLSTM(3, 6, layer_norm=False)
    assert not torch.allclose(plain(x)[0], plain(x * 100)[0], atol=1e-2)


def test_policy_uses_the_layer_normalised_lstm_and_resets_on_episode_start(prices):
    from sb3_contrib import RecurrentPPO

    from algotrading.rl.policy import LnLstmPolicy

    env = TradingEnv(prices, window=5, episode_bars=40)
    model = RecurrentPPO(LnLstmPolicy, env, n_steps=32, batch_size=32, n_epochs=1, seed=0,
                         policy_kwargs={"lstm_hidden_size": 16}, device="cpu")
    policy = model.policy
    assert isinstance(policy.lstm_actor, LayerNormLSTM) and isinstance(policy.lstm_critic, LayerNormLSTM)
    names = {n for n, _ in policy.named_parameters()}
    assert {"lstm_actor.norm_ih.0.weight", "lstm_critic.norm_c.0.bias"} <= names
    assert {id(p) for g in policy.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in policy.parameters()}  # the optimiser trains the new modules
    obs = np.stack([env.reset(seed=0)[0]] * 2)
    _, state = policy.predict(obs, state=None, episode_start=np.ones(2), deterministic=True)
    _, carried = policy.predict(obs, state=state, episode_start=np.zeros(2), deterministic=True)
    _, reset = policy.predict(obs, state=state, episode_start=np.ones(2), deterministic=True)
    np.testing.assert_allclose(reset[0], state[0], rtol=1e-6)  # a start forgets the state
    assert not np.allclose(carried[0], state[0])


def _untrained_artifact(folder):
    """A PPO artifact written by `train.save` from an untrained policy (no training needed)."""
    import gymnasium as gym

    from algotrading.rl import train
    from algotrading.rl.policy import LnLstmPolicy

    policy = LnLstmPolicy(gym.spaces.Box(-5, 5, (12,), np.float32), gym.spaces.Discrete(len(ACTIONS)),
                          lambda _: 0.0, lstm_hidden_size=8, layer_norm=True, shared_lstm=True,
                          enable_critic_lstm=False)
    hyper = {**train.HYPERPARAMETERS, "lstm_hidden_size": 8}
    train.save(train.Trained(train.Policy(policy), {"hyperparameters": hyper}), folder)
    return policy


class _Marker:
    """Unpickling this creates a file: what a crafted artifact would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_ppo_artifact_is_weights_and_json_and_a_pickle_is_refused_without_running(tmp_path):
    import zipfile

    from algotrading.rl import train

    folder = tmp_path / "ppo"
    policy = _untrained_artifact(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "policy.pt"]
    back = train.load(folder)
    for key, value in policy.state_dict().items():
        assert torch.equal(value, back.model.policy.state_dict()[key])
    obs = np.linspace(-1, 1, 12, dtype=np.float32)[None]
    assert back.model.predict(obs, episode_start=np.ones(1), deterministic=True)[0] == \
        policy.predict(obs, episode_start=np.ones(1), deterministic=True)[0]

    marker = tmp_path / "ran"
    # policy.pt whose pickle would create a file: the weights-only loader refuses it
    torch.save({"w": _Marker(marker)}, folder / "policy.pt")
    with pytest.raises(train.ArtifactError,
                       match=r"policy.pt: not this policy's weights, or not weights only"):
        train.load(folder)
    assert not marker.exists()
    # sb3's model.zip (its `data` entry is unpickled by sb3's loader) is refused unread
    with zipfile.ZipFile(folder / "model.zip", "w") as z:
        z.writestr("data", '{"policy_class": {":serialized:": "gASV"}}')
    with pytest.raises(train.ArtifactError, match=r"model.zip: an sb3 model.zip unpickles code on load"):
        train.load(folder)
    # a config without the policy's spaces, or of another format
    (folder / "model.zip").unlink()
    _untrained_artifact(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format": 1}))
    with pytest.raises(train.ArtifactError, match="artifact format 1, expected 2"):
        train.load(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(train.ArtifactError, match=r"config.json: not a PPO artifact's config \(KeyError"):
        train.load(folder)


def test_ppo_environments_and_rollout_over_their_limits_are_refused_before_training(
        prices, monkeypatch):
    from algotrading.rl import train

    with pytest.raises(ValueError, match=r"n_envs=1,000,000: 1,000,000 environments is over the "
                                         r"limit of 64 \(PPO's n_envs; ALGO_PPO_MAX_ENVS raises it\)"):
        train.train(prices, "2011-12-30", n_envs=1_000_000)
    with pytest.raises(ValueError, match=r"n_envs=64 x n_steps=100,000: 6,400,000 steps is over the "
                                         r"limit of 262,144 .*ALGO_PPO_MAX_ROLLOUT raises it"):
        train.train(prices, "2011-12-30", n_envs=64, n_steps=100_000)
    monkeypatch.setenv("ALGO_PPO_MAX_ENVS", "1")
    with pytest.raises(ValueError, match="over the limit of 1 "):
        train.train(prices, "2011-12-30", n_envs=2)
