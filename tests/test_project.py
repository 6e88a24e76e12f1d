"""Project hygiene: the conda and pip environments agree, and committed notebooks are clean
(parameters cell of literals first, no absolute paths, no huge outputs, no error outputs)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from algotrading.cli import main
from algotrading.pipeline import notebooks

from live_fakes import vendor

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT)
ABSOLUTE = re.compile(r"(?<![\w.])(/(home|root|tmp|Users|work|private|var/folders)/|[A-Za-z]:\\\\)")
MAX_OUTPUT_BYTES = 2_000_000


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEV_EXTRAS = ("models", "rl", "aws", "notebooks", "live", "test")  # what `make` installs


def pins(lock: str) -> dict[str, tuple[str, str]]:
    """name -> (version, the `# via` annotation) of each package in a pip-compile lock, every one
    of which must carry hashes."""
    text = (ROOT / "requirements" / lock).read_text()
    found = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1]):
        head = block.split()[0] if block.strip() and not block.startswith("#") else None
        if head and "==" in head:
            name, version = head.split("==")
            assert "--hash=sha256:" in block, f"{lock}: {name} has no hash"
            found[canonicalize_name(name)] = (version, block)
    return found


def requirements(*extras: str) -> list[Requirement]:
    listed = PROJECT["dependencies"] + [r for e in extras for r in PROJECT["optional-dependencies"][e]]
    return [Requirement(r) for r in listed]


@pytest.mark.parametrize("lock, extras", [("dev.txt", DEV_EXTRAS), ("bench.txt", (*DEV_EXTRAS, "bench"))])
def test_the_lock_agrees_with_pyproject(lock, extras):
    """Every requirement of pyproject.toml is pinned in the lock at a version it allows, and the
    lock's direct requirements are exactly pyproject's: a changed pyproject needs `make lock`."""
    locked = pins(lock)
    wanted = requirements(*extras)
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"requirements/{lock} lacks {req}: run `make lock`"
        assert req.specifier.contains(locked[name][0], prereleases=True), \
            f"requirements/{lock} pins {name}=={locked[name][0]}, pyproject wants {req}: run `make lock`"
    direct = {n for n, (_, block) in locked.items() if "algotrading (pyproject.toml)" in block}
    assert direct == {canonicalize_name(r.name) for r in wanted}, "run `make lock`"


def test_every_lock_agrees_with_the_dev_lock():
    """bench and live are solved within dev's pins: one version of each package everywhere."""
    dev = pins("dev.txt")
    for lock in ("bench.txt", "live.txt"):
        for name, (version, _) in pins(lock).items():
            if name in dev:
                assert version == dev[name][0], f"{lock}: {name} {version} vs dev {dev[name][0]}"
    live = set(pins("live.txt"))
    assert {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["live"]} <= live
    assert not live & {"matplotlib", "torch", "jupyterlab", "numba", "sagemaker-train"}


def test_every_install_goes_through_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements/dev.txt" in makefile
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"] and "python=3.11" in env["dependencies"]
    assert ">=3.11" in PROJECT["requires-python"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["--require-hashes", "-r requirements/dev.txt"]
    docker = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements/live.txt" in docker
    assert "extra-index-url" not in docker and "index-url" not in docker
    (base,) = re.findall(r"^FROM\s+(\S+)", docker, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base)  # pinned by digest
    installs = re.findall(r"pip install ([^\n\\]+)", docker)
    assert installs == ["--require-hashes --no-deps -r requirements/live.txt", "--no-deps . "]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "pip install" not in ci
    # the dev lock pins torch's CPU build (a CUDA build is several GB)
    assert pins("dev.txt")["torch"][0].endswith("+cpu")


def test_torch_is_pinned_to_a_range_2_13_satisfies():
    for extra in ("models", "rl"):
        torch = next(r for r in requirements(extra) if r.name == "torch")
        assert "2.13.0" in torch.specifier and "2.15.0" not in torch.specifier


def test_jupyterlab_is_not_a_runtime_dependency():
    core = {canonicalize_name(r.name) for r in requirements()}
    assert not core & {"jupyterlab", "papermill", "ipykernel", "torch", "boto3", "sagemaker"}


@pytest.mark.slow
def test_the_live_image_install_runs_a_replay(tmp_path, monkeypatch):
    """What the Dockerfile installs (requirements/live.txt, no dependencies resolved) runs the
    scheduled runner end to end: nothing it imports is missing from the image."""
    venv = tmp_path / "live"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", ROOT / "requirements" / "live.txt"],
                   check=True, capture_output=True)
    lake = tmp_path / "lake"
    monkeypatch.setenv("ALGO_LAKE", str(lake))
    assert main(["ingest", "sample", "--symbols", "GSPC"]) == 0  # the research side fills the lake
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "lib"), "ALGO_LAKE": str(lake),
           "HOME": str(tmp_path)}
    with vendor(["bars_poll1.json"]) as (url, asked):
        run = subprocess.run(
            [python, "-m", "algotrading.live"], capture_output=True, text=True, timeout=300,
            env={**env, "ALGO_JOURNAL": str(tmp_path / "live.db"),
                 "ALGO_FEED_CONFIG": json.dumps({"url": url + "/v2/stocks/{symbol}/bars?start={start}"}),
                 "ALGO_LIVE_STRATEGY": "sma", "ALGO_LIVE_SYMBOL": "GSPC", "ALGO_LIVE_START": "2024-01-02",
                 "ALGO_LIVE_BROKER": "paper",
                 "ALGO_LIVE_PARAMS": json.dumps({"size": 1, "fast_period": 10, "slow_period": 30})})
    assert run.returncode == 0, run.stderr
    assert len(asked) == 1 and json.loads(run.stdout.strip().splitlines()[-1])["last_bar"] == "2024-01-03"


def test_pipeline_order_is_data_then_models_then_strategies():
    names = [nb.as_posix() for nb in NOTEBOOKS]
    assert names[:2] == ["1_Data/Load_Hist_Data_Daily.ipynb", "1_Data/Explore_Hist_Data.ipynb"]
    stages = [n.split("/")[0] for n in names]
    assert stages == sorted(stages, key=["1_Data", "3_Models", "2_Strategies"].index)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_committed_notebook_hygiene(path):
    raw = (ROOT / path).read_text()
    nb = json.loads(raw)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged"
    for stmt in ast.parse("".join(first["source"])).body:  # literals only
        assert isinstance(stmt, ast.Assign), f"parameters cell: only assignments ({path})"
        ast.literal_eval(stmt.value)
    assert not ABSOLUTE.search(raw), f"absolute path in {path}: {ABSOLUTE.search(raw)[0]}"
    assert len(raw) < MAX_OUTPUT_BYTES
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert all(c.get("execution_count") for c in code), f"{path} is not executed: run `make notebooks`"
    assert "papermill" not in nb["metadata"]
    assert nb["metadata"]["kernelspec"] == {"name": "algotrading", "display_name": "Python (algotrading)",
                                            "language": "python"}  # the project kernel: pinned numerics
