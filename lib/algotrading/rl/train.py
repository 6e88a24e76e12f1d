"""Train, save, load and evaluate the PPO trader (sb3-contrib RecurrentPPO with `LnLstmPolicy`).

Training sees only the training period: episodes start at random bars inside it and the feature
scaling is fitted on it. Evaluation replays the trained policy deterministically over a later
period in one episode, and sends the positions it chose through `backtest.run`, so its metrics,
trades and charts are every other strategy's (and equal the environment's own equity).

The artifact is a folder: `policy.pt` (the policy's state_dict, read back with torch's weights-only
loader) and `config.json` (format, hyperparameters, seed, the policy's spaces, observation config:
feature columns, window, scaling; engine settings; the training period and a sha256 fingerprint of
the bars it saw). No pickle: sb3's own `model.zip` unpickles its `data` entries on load, so a
crafted file runs code; loading refuses a folder holding one. `python -m algotrading.rl.train` is
the SageMaker entry (`algotrading.jobs` contract): prices from the `training` channel, artifact
into the model dir.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from algotrading import jobs, limits, numerics
from algotrading.errors import AlgotradingError
from algotrading.params import build, check, defaults, param
from algotrading.rl.env import TradingEnv, market_features, normaliser


@dataclass(frozen=True)
class Hyperparameters:
    """PPO's hyperparameters, each declared once (algotrading.params)."""

    total_timesteps: int = param(20_000, ge=1)
    n_envs: int = param(4, ge=1)
    n_steps: int = param(128, ge=2, help="per environment and rollout")
    batch_size: int = param(128, ge=2)
    n_epochs: int = param(4, ge=1)
    learning_rate: float = param(3e-4, gt=0)
    gamma: float = param(0.99, gt=0, le=1)
    gae_lambda: float = param(0.95, ge=0, le=1)
    clip_range: float = param(0.2, gt=0)
    ent_coef: float = param(0.01, ge=0)
    lstm_hidden_size: int = param(32, ge=1)
    layer_norm: bool = param(True)
    window: int = param(5, ge=1, help="bars of features per observation (the LSTM carries the "
                                      "longer memory)")
    episode_bars: int = param(252, ge=2)

    def __post_init__(self) -> None:
        check(self, "PPO")


HYPERPARAMETERS: dict[str, Any] = defaults(Hyperparameters)


def hyperparameters(given: Mapping[str, Any]) -> dict[str, Any]:
    """HYPERPARAMETERS overridden by `given`, converted and checked (unknown names refused)."""
    return asdict(build(Hyperparameters, given, "PPO"))


ENTRY = "algotrading.rl.train"
CHANNEL = "training"
JOB_METRICS = ("train_seconds", "episode_reward")
ARTIFACT_FORMAT = 2  # 1 was sb3's pickled model.zip, no longer read
WEIGHTS, CONFIG, LEGACY = "policy.pt", "config.json", "model.zip"
# What the job's container installs besides the PyTorch image (jobs.REQUIREMENTS + the RL stack).
REQUIREMENTS = (*jobs.REQUIREMENTS, "gymnasium>=1.0,<2", "stable-baselines3>=2.4,<3",
                "sb3-contrib>=2.4,<3")


class ArtifactError(AlgotradingError, ValueError):
    """A PPO artifact that cannot be read safely (a pickle, a missing piece, an unknown format)."""


class Policy:
    """A loaded policy with RecurrentPPO's `predict` (what `positions` calls) and its `policy`."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> Any:
        return self.policy.predict(observation, state=state, episode_start=episode_start,
                                   deterministic=deterministic)


@dataclass
class Trained:
    """A trained model with everything needed to rebuild its observations."""

    model: Any
    config: dict[str, Any]
    episode_rewards: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False  # read back by `rl.cache` instead of trained in this call


def fingerprint(prices: pd.DataFrame) -> str:
    """sha256 of the bars (dates and OHLC), so an artifact names the data it was trained on."""
    frame = prices[["open", "high", "low", "close"]]
    digest = hashlib.sha256(frame.index.asi8.tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(float)).tobytes())
    return digest.hexdigest()


def _env(prices: pd.DataFrame, config: dict[str, Any], **kwargs: Any) -> TradingEnv:
    scale = (np.array(config["scale_mean"]), np.array(config["scale_std"]))
    return TradingEnv(prices, market_features(prices), window=config["window"], scale=scale,
                      **kwargs, **config["engine"])


def plan(prices: pd.DataFrame, train_end: str, seed: int = 0,
         engine: dict[str, Any] | None = None, **hyper: Any) -> dict[str, Any]:
    """The artifact's config before training: everything `train` takes from its inputs
    (hyperparameters, seed, observation scaling, engine settings, the training bars' fingerprint).
    `rl.cache` keys trained policies on it."""
    h = hyperparameters(hyper)
    part = prices.loc[:train_end]
    mean, std = normaliser(market_features(prices), train_end)
    return {"hyperparameters": h, "seed": seed, "features": list(market_features(part).columns),
            "window": h["window"], "scale_mean": mean.tolist(), "scale_std": std.tolist(),
            "engine": dict(engine or {}), "train_start": part.index[0].date().isoformat(),
            "train_end": part.index[-1].date().isoformat(), "bars": len(part),
            "fingerprint": fingerprint(part)}


def train(prices: pd.DataFrame, train_end: str, seed: int = 0, progress: bool = False,
          engine: dict[str, Any] | None = None, **hyper: Any) -> Trained:
    """Train one seeded policy on the bars up to `train_end` (hyperparameters: HYPERPARAMETERS,
    overridden by `hyper`; `engine`: the backtest's cost and sizing settings)."""
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from algotrading.rl.policy import LnLstmPolicy

    config = plan(prices, train_end, seed, engine, **hyper)
    h = config["hyperparameters"]
    limits.check("ppo_envs", h["n_envs"], f"n_envs={h['n_envs']:,}")
    limits.check("ppo_rollout", h["n_envs"] * h["n_steps"],
                 f"n_envs={h['n_envs']:,} x n_steps={h['n_steps']:,}")
    part = prices.loc[:train_end]
    config["numerics"] = numerics.check("PPO training")
    torch.manual_seed(seed)

    def make(rank: int):
        def build() -> TradingEnv:
            env = _env(part, config, episode_bars=h["episode_bars"])
            env.reset(seed=seed * 1000 + rank)
            return env
        return build

    venv = VecMonitor(DummyVecEnv([make(i) for i in range(h["n_envs"])]))
    venv.seed(seed)
    model = RecurrentPPO(
        LnLstmPolicy, venv, n_steps=h["n_steps"], batch_size=h["batch_size"], n_epochs=h["n_epochs"],
        learning_rate=h["learning_rate"], gamma=h["gamma"], gae_lambda=h["gae_lambda"],
        clip_range=h["clip_range"], ent_coef=h["ent_coef"], seed=seed, device="cpu",
        policy_kwargs={"lstm_hidden_size": h["lstm_hidden_size"], "layer_norm": h["layer_norm"],
                       "shared_lstm": True, "enable_critic_lstm": False})  # one LSTM: half the cost
    per_rollout = h["n_envs"] * h["n_steps"]  # sb3 collects whole rollouts
    callback = _Progress(math.ceil(h["total_timesteps"] / per_rollout) * per_rollout, progress)
    start = time.perf_counter()
    with numerics.one_thread():  # small networks: threads cost more than they give; reproducible
        model.learn(total_timesteps=h["total_timesteps"], callback=callback)
    config["weights_sha256"] = numerics.weights_sha256(model.policy.state_dict())
    return Trained(model, config, callback.rewards, time.perf_counter() - start)


def _Progress(total: int, show: bool) -> Any:
    """A callback with a tqdm bar that also collects each finished episode's reward."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    class Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rewards: list[float] = []
            self.bar = tqdm(total=total, desc="PPO", unit="step", disable=not show, mininterval=5)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            self.rewards += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


POLICY_KWARGS = ("lstm_hidden_size", "layer_norm")


def save(trained: Trained, folder: str | Path) -> Path:
    """Write the artifact (policy.pt: the policy's tensors; config.json) into `folder`."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy = trained.model.policy
    space = policy.observation_space
    config = {**trained.config, "format": ARTIFACT_FORMAT,
              "policy": {"observation_low": space.low.tolist(), "observation_high": space.high.tolist(),
                         "actions": int(policy.action_space.n)}}
    (folder / LEGACY).unlink(missing_ok=True)  # an older artifact's pickle must not sit beside it
    torch.save(policy.state_dict(), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def load(folder: str | Path) -> Trained:
    """Read an artifact written by `save`: config.json and the weights through torch's
    weights-only loader (tensors and plain containers; anything else is refused, never run)."""
    import gymnasium as gym
    import torch

    from algotrading.rl.policy import LnLstmPolicy

    folder = Path(folder)
    if (folder / LEGACY).exists():
        raise ArtifactError(f"{folder / LEGACY}: an sb3 model.zip unpickles code on load, so it is "
                            f"not read; retrain (3_Models/Train_Model_PPO.ipynb) to write {WEIGHTS}")
    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"{folder}: not a PPO artifact (want {WEIGHTS} and {CONFIG})")
    try:
        config = json.loads((folder / CONFIG).read_text())
        spec = config["policy"]
        hyper = {k: config["hyperparameters"][k] for k in POLICY_KWARGS}
        low, high = (np.asarray(spec[k], np.float32) for k in ("observation_low", "observation_high"))
        actions = int(spec["actions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{folder / CONFIG}: not a PPO artifact's config ({type(exc).__name__}: "
                            f"{exc})") from None
    if config.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{folder / CONFIG}: artifact format {config.get('format')!r}, "
                            f"expected {ARTIFACT_FORMAT}")
    policy = LnLstmPolicy(gym.spaces.Box(low, high, dtype=np.float32), gym.spaces.Discrete(actions),
                          lambda _: 0.0, lstm_hidden_size=hyper["lstm_hidden_size"],
                          layer_norm=hyper["layer_norm"], shared_lstm=True, enable_critic_lstm=False)
    try:
        state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        policy.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, zip errors
        raise ArtifactError(f"{folder / WEIGHTS}: not this policy's weights, or not weights only "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    policy.set_training_mode(False)
    return Trained(Policy(policy), config)


def positions(trained: Trained, prices: pd.DataFrame, start: str, end: str | None = None
              ) -> pd.Series:
    """The policy's deterministic target (-1/0/+1) at each bar of [start, end], acting in one
    episode over that range (features and the window may use the bars before `start`)."""
    part = prices.loc[:end] if end is not None else prices
    env = _env(part, trained.config, episode_bars=None, start=start)
    obs, _ = env.reset(seed=0)
    state, first, done = None, np.ones(1), False
    while not done:
        action, state = trained.model.predict(obs[None], state=state, episode_start=first,
                                              deterministic=True)
        obs, _, terminated, truncated, _ = env.step(int(action[0]))
        first, done = np.zeros(1), terminated or truncated
    index = part.index[env.first:env.first + len(env.positions)]
    return pd.Series(env.positions, index=index, name="position").reindex(
        part.index[env.first:]).ffill()


def evaluate(trained: Trained, prices: pd.DataFrame, start: str, end: str | None = None) -> Any:
    """`backtest.run` of the policy's positions over [start, end] with the artifact's engine
    settings: a Result like every other strategy's."""
    from algotrading import backtest

    part = prices.loc[:end] if end is not None else prices
    return backtest.run(positions(trained, part, start, end), part, start=start,
                        **trained.config["engine"])


def write_channel(prices: pd.DataFrame, symbol: str, folder: str | Path) -> Path:
    """The bars as a one-symbol lake under `folder` (`hist_data_daily/<SYM>.csv`): the training
    channel's layout, read back by `main` with `lake.read`."""
    from algotrading import lake

    rows = prices.reset_index()
    rows.insert(1, "sym", symbol)
    rows["dt"] = rows["dt"].dt.strftime("%Y-%m-%d")
    lake.write(rows, lake=str(folder))
    return Path(folder) / lake.key(symbol)


def submit(prices: pd.DataFrame, symbol: str, train_end: str, output_path: str, seed: int = 0,
           engine: dict[str, Any] | None = None, hyper: dict[str, Any] | None = None,
           wait: bool = False, **options: Any) -> str:
    """Upload the bars to `<output_path>/data/<SYM>-<fingerprint>/` and start this module as a
    SageMaker training job (algotrading.jobs; `options` go to `jobs.submit`). Returns the job
    name; the artifact lands in `<output_path>/<job>/output/model.tar.gz`."""
    import tempfile

    from algotrading import aws

    if not output_path.startswith("s3://"):
        raise ValueError(f"output_path must be an s3:// URL, not {output_path!r}")
    hyperparameters(hyper or {})  # refuse a bad value here, not in the job
    prefix = f"{output_path.rstrip('/')}/data/{symbol}-{fingerprint(prices)[:12]}"
    bucket, _, key = prefix.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory(prefix="algotrading-channel-") as tmp:
        path = write_channel(prices, symbol, tmp)
        aws.client("s3").upload_file(str(path), bucket, f"{key}/{path.relative_to(tmp).as_posix()}")
    options.setdefault("base_job_name", jobs.job_prefix(f"ppo-{symbol}"))
    return jobs.submit(ENTRY, {CHANNEL: f"{prefix}/"}, output_path, wait=wait,
                       hyperparameters={"symbol": symbol, "train_end": train_end, "seed": seed,
                                        **(engine or {}), **(hyper or {})},
                       metric_definitions=jobs.metric_definitions(JOB_METRICS),
                       requirements=REQUIREMENTS, **options)


def main() -> None:
    """SageMaker entry: hyperparameters `symbol`, `train_end`, `seed`, engine settings and any of
    HYPERPARAMETERS; the bars from the `training` channel (see `write_channel`); the artifact
    into the model dir; metrics printed for the job's metric definitions."""
    from algotrading import lake, schema
    from algotrading.backtest import SETTINGS

    hp = jobs.hyperparameters()
    symbol, train_end, seed = hp.pop("symbol"), str(hp.pop("train_end")), int(hp.pop("seed", 0))
    engine = {k: hp.pop(k) for k in list(hp) if k in SETTINGS}
    prices = schema.to_prices(lake.read(symbol, lake=str(jobs.channel(CHANNEL))), symbol)
    trained = train(prices, train_end, seed, engine=engine, **hp)
    save(trained, jobs.model_dir())
    recent = trained.episode_rewards[-20:]
    jobs.print_metrics({"train_seconds": trained.seconds,
                        "episode_reward": float(np.mean(recent)) if recent else float("nan")})


if __name__ == "__main__":
    main()
