"""Trained PPO policies kept between runs, so the pipeline does not retrain what it trained before.

A policy is reused only when everything that decides its weights is the same: the training bars
(their fingerprint) and the observation scaling, the seed, every hyperparameter, the engine
settings (`train.plan`), the numeric kernels in force (`numerics.state`), the versions of
Python and of the packages that compute the training, and the source of every `algotrading`
module the RL modules import (followed transitively, function-local imports included). `key`
hashes all of it; a changed input gives another key, so the old entry is never read again.

An entry is a folder `<cache>/<key>/` holding the artifact (`train.save`) and `history.json`
(episode rewards and training seconds, so a notebook shows the same tables and charts). It is
written to a temporary folder and renamed into place, and its weights are checked against the
sha256 recorded at training time when it is read: a damaged entry is trained again.
Default folder: `runs/cache/ppo` under the project (`ALGO_PPO_CACHE` overrides it).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import shutil
import tempfile
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from algotrading import numerics
from algotrading.config import project_root
from algotrading.rl import train as rl_train

VARIABLE = "ALGO_PPO_CACHE"
PACKAGES = ("torch", "stable-baselines3", "sb3-contrib", "gymnasium", "numpy", "pandas")
ROOTS = ("algotrading.rl.train", "algotrading.rl.env", "algotrading.rl.policy",
         "algotrading.rl.lstm")  # the code training runs; `code_fingerprint` follows their imports
HISTORY = "history.json"


def folder() -> Path:
    """Where entries live: `ALGO_PPO_CACHE`, else `runs/cache/ppo` under the project."""
    return Path(os.environ.get(VARIABLE) or project_root() / "runs" / "cache" / "ppo")


def _source(module: str) -> Path | None:
    """The .py file of an `algotrading` module (a package's __init__.py), None if none."""
    base = Path(__file__).resolve().parents[1].joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(module: str, path: Path) -> set[str]:
    """The `algotrading` modules `path` imports anywhere in its body (and their packages)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in found if name.startswith("algotrading") and _source(name)}


@cache
def code_fingerprint() -> str:
    """sha256 over the source of ROOTS and every `algotrading` module they import, transitively."""
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        module = todo.pop()
        path = _source(module)
        if module in seen or path is None:
            continue
        seen.add(module)
        todo.extend(_imports(module, path) - seen)
    digest = hashlib.sha256()
    for module in sorted(seen):
        digest.update(f"{module}\0".encode())
        digest.update(_source(module).read_bytes())  # type: ignore[union-attr]
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def key(prices: pd.DataFrame, train_end: str, seed: int = 0,
        engine: dict[str, Any] | None = None, **hyper: Any) -> str:
    """The entry's name: sha256 of the training plan, the numeric kernels, the package versions
    and the code fingerprint (see the module doc)."""
    import torch  # noqa: F401  (loaded, as in training, so `numerics.state` reports its kernels)

    inputs = {"plan": rl_train.plan(prices, train_end, seed, engine, **hyper),
              "numerics": numerics.state(), "versions": _versions(), "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _read(entry: Path) -> rl_train.Trained | None:
    """The entry's policy, None when it is missing or its weights are not the recorded ones."""
    if not (entry / HISTORY).is_file():
        return None
    try:
        trained = rl_train.load(entry)
        history = json.loads((entry / HISTORY).read_text())
    except (OSError, ValueError):
        return None
    weights = numerics.weights_sha256(trained.model.policy.state_dict())
    if weights != trained.config.get("weights_sha256"):
        return None
    trained.episode_rewards = [np.float32(r) for r in history["episode_rewards"]]  # as sb3 gives
    trained.seconds = float(history["seconds"])
    trained.cached = True
    return trained


def _write(trained: rl_train.Trained, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name[:12]}.", dir=entry.parent))
    try:
        rl_train.save(trained, tmp)
        rewards = [float(r) for r in trained.episode_rewards]  # float32 -> float is exact
        (tmp / HISTORY).write_text(json.dumps({"episode_rewards": rewards,
                                               "seconds": trained.seconds}) + "\n")
        shutil.rmtree(entry, ignore_errors=True)  # a damaged entry under the same key
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trained(prices: pd.DataFrame, train_end: str, seed: int = 0, progress: bool = False,
            engine: dict[str, Any] | None = None, where: str | Path | None = None,
            **hyper: Any) -> rl_train.Trained:
    """`train.train` with the same arguments, or the policy it trained before for the same
    inputs, read from the cache (`where`, default `folder()`). `Trained.cached` says which."""
    entry = Path(where or folder()) / key(prices, train_end, seed, engine, **hyper)
    hit = _read(entry)
    if hit is not None:
        return hit
    out = rl_train.train(prices, train_end, seed, progress=progress, engine=engine, **hyper)
    _write(out, entry)
    return out
