"""The research pipeline: execute the notebooks headless with papermill, in dependency order, into
a run folder with a manifest and a report; and `record`, which notebooks call to leave their key
results.

A run folder (default `runs/latest`) holds the executed notebooks, `results/<notebook>.json`,
`run.json` (one entry per notebook: status, parameters, data fingerprint, package version, git
commit) and the reports. `run(only=...)` replaces only its notebooks' entries and keeps the rest;
results are written only where a run folder was asked for (`ALGO_RUN_DIR`, which `run` sets), so an
ad-hoc papermill run never touches `runs/latest`.

Notebooks run on the project's Jupyter kernel ("algotrading", which carries the numeric pins of
`algotrading.numerics`). `NEEDS` declares what each notebook reads that another one leaves (a
model in the run folder, a symbol in the lake): `run(only=...)` refuses up front, in one line
naming the notebook to run first, when that is missing, and notebooks call `require` for the same
line. `run(update_notebooks=True)` also copies each notebook's results into `results/` at the
project root: the committed run that tests/test_recorded.py compares a new run against.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import os
import shutil
import string
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from algotrading.config import project_root, settings
from algotrading.errors import AlgotradingError, ParameterError
from algotrading.runs import MANIFEST, RESULTS, load_manifest, write_atomic
from algotrading.runs import record as record  # notebooks call pipeline.record

LOCK = ".run.lock"  # serialises manifest updates of concurrent runs into one folder
STAGES = ("1_Data", "3_Models", "2_Strategies")  # the workshop's folder numbers, run in data order
# Within a stage, notebooks that feed others come first; the rest follow alphabetically.
FIRST = {
    "1_Data": ("Load_Hist_Data_Daily.ipynb",),
    "3_Models": ("Train_Model_Forecast.ipynb",),
    "2_Strategies": ("Strategy_SMA.ipynb", "Strategy_Breakout.ipynb", "Strategy_ML_Forecast.ipynb"),
}
LAST = {"2_Strategies": ("Run_Strategy_Paper.ipynb",)}  # runs forward what the others tested
COMMITTED = "results"  # at the project root: each notebook's results from the committed default run
KERNEL = "algotrading"  # the notebooks' Jupyter kernel (python -m algotrading.numerics --install-kernel)
KERNELSPEC = {"name": KERNEL, "display_name": "Python (algotrading)", "language": "python"}
DIGITS = 6  # significant digits a notebook shows of its recorded results (`rounded`)


class NotebookFailed(AlgotradingError, RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error's last line."""


class KernelMissing(AlgotradingError, RuntimeError):
    """The project's Jupyter kernel is not installed."""


class MissingArtifact(AlgotradingError, FileNotFoundError):
    """A notebook needs what another notebook leaves and it is not there; the message (one line)
    names the notebook to run first."""


@dataclass(frozen=True)
class Need:
    """Something a notebook reads that `notebook` (its path under the project root) leaves behind:
    `files` under the run folder, or the symbol `lake` in the lake. Both are templates filled from
    the reading notebook's parameters; a list-valued parameter gives one path per element
    (`{seeds}`: one per seed). `unless`: a parameter that, when set, points the notebook
    elsewhere (the ML strategy's `model`). `optional`: the notebook runs without it (and says so),
    but its default outputs include what it adds."""

    notebook: str
    files: tuple[str, ...] = ()
    lake: str | None = None
    unless: str | None = None
    optional: bool = False

    def wanted(self, parameters: Mapping[str, object]) -> list[str]:
        """The files (or lake symbols) this need stands for under `parameters`."""
        if self.unless and parameters.get(self.unless):
            return []
        templates = (self.lake,) if self.lake else self.files
        return [p for t in templates for p in _expand(t, parameters)]

    def missing(self, parameters: Mapping[str, object], out: Path) -> list[str]:
        """What of `wanted` is not there: paths under `out`, or symbols not in the lake."""
        wanted = self.wanted(parameters)
        if self.lake and wanted:
            from algotrading import lake

            held = set(lake.symbols())
            return [sym for sym in wanted if sym not in held]
        return [p for p in wanted if not (out / p).exists()]


def _expand(template: str, parameters: Mapping[str, object]) -> list[str]:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    values = [v if isinstance(v := parameters[f], list | tuple) else [v] for f in fields]
    return [template.format(**dict(zip(fields, combo, strict=True)))
            for combo in itertools.product(*values)]


LOAD = "1_Data/Load_Hist_Data_Daily.ipynb"
PRICES = Need(LOAD, lake="{symbol}")  # every notebook after the load reads its symbol's bars
# What each notebook reads that another leaves behind (checked by `run` and by `require`;
# tests/test_recorded.py checks each producer comes first in the pipeline).
NEEDS: dict[str, tuple[Need, ...]] = {
    "1_Data/Explore_Hist_Data.ipynb": (PRICES,),
    "3_Models/Train_Model_Forecast.ipynb": (PRICES,),
    "3_Models/Train_Model_PPO.ipynb": (PRICES,),
    "2_Strategies/Strategy_SMA.ipynb": (PRICES,),
    "2_Strategies/Strategy_Breakout.ipynb": (PRICES,),
    "2_Strategies/Strategy_ML_Forecast.ipynb": (
        PRICES,
        Need("3_Models/Train_Model_Forecast.ipynb", unless="model",
             files=("models/forecast-{symbol}/model.pt", "models/forecast-{symbol}/model.json")),
    ),
    "2_Strategies/Strategy_PPO.ipynb": (
        PRICES,
        Need("3_Models/Train_Model_PPO.ipynb", files=("models/ppo/{symbol}-seed{seeds}/policy.pt",
                                                      "models/ppo/{symbol}-seed{seeds}/config.json")),
        # the ML strategy's choice, traded beside PPO with the same costs
        Need("2_Strategies/Strategy_ML_Forecast.ipynb", optional=True,
             files=("results/Strategy_ML_Forecast.json", "models/forecast-{symbol}/model.pt")),
    ),
    "2_Strategies/Strategy_WhatIfScenarios.ipynb": (PRICES,),
    "2_Strategies/Run_Strategy_Paper.ipynb": (PRICES,),
}


def _key(notebook: str | Path) -> str:
    """'Strategy_PPO', 'Strategy_PPO.ipynb' or '2_Strategies/Strategy_PPO.ipynb' -> the NEEDS key."""
    name = Path(notebook).name
    name = name if name.endswith(".ipynb") else f"{name}.ipynb"
    return next((k for k in NEEDS if Path(k).name == name), Path(notebook).as_posix())


def unmet(notebook: str | Path, parameters: Mapping[str, object], out: Path | None = None,
          earlier: Sequence[str | Path] = (), optional: bool = False) -> list[tuple[Need, list[str]]]:
    """`notebook`'s needs that are missing from the run folder `out` (default: the run dir) or
    the lake, with what is missing; needs whose producer is in `earlier` (notebooks that run
    before it) count as met. Optional needs only with `optional`."""
    out = out or settings().run_path()
    done = {_key(nb) for nb in earlier}
    found = []
    for need in NEEDS.get(_key(notebook), ()):
        if (need.optional and not optional) or need.notebook in done:
            continue
        if gone := need.missing(parameters, out):
            found.append((need, gone))
    return found


def _first(notebook: str, unmet_needs: Sequence[tuple[Need, list[str]]]) -> str:
    """One line: what `notebook` lacks and which notebook(s) to run first."""
    parts = []
    for need, gone in unmet_needs:
        what = (f"symbol {gone[0]} in the lake" if need.lake else f"<run dir>/{gone[0]}")
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        parts.append(f"{what}{more} (from {need.notebook})")
    producers = list(dict.fromkeys(Path(n.notebook).stem for n, _ in unmet_needs))
    return (f"{Path(notebook).stem} needs {'; '.join(parts)}: run "
            f"{' and '.join(dict.fromkeys(n.notebook for n, _ in unmet_needs))} first "
            f"(`algotrading run --only {' '.join(producers)}`)")


def require(notebook: str, **parameters: object) -> None:
    """Raise MissingArtifact, in one line naming the notebook to run first, when what `notebook`
    (its name) reads from another notebook is missing for these parameters (a notebook calls
    this before loading a model another notebook trained)."""
    if needs := unmet(notebook, parameters):
        raise MissingArtifact(_first(notebook, needs))


def prerequisites(notebook: str | Path, out: Path, root: Path | None = None) -> list[Path]:
    """The notebooks to execute, with their defaults, before `notebook` (with its defaults) can
    run in `out` and show its default outputs: the producers of every missing need, optional
    ones included, and theirs in turn, in pipeline order."""
    root = root or project_root()
    todo: set[str] = set()
    stack = [_key(notebook)]
    while stack:
        nb = stack.pop()
        for need, _ in unmet(nb, declared(root / nb), out, optional=True):
            if need.notebook not in todo:
                todo.add(need.notebook)
                stack.append(need.notebook)
    return [nb for nb in notebooks(root) if nb.as_posix() in todo]


def prepare(notebook: str | Path, out: Path, root: Path | None = None) -> list[Path]:
    """Execute `prerequisites(notebook, out)` into `out` with their defaults (record() writes
    there through ALGO_RUN_DIR, which this sets for the kernels); returns what it ran."""
    root = root or project_root()
    ran = prerequisites(notebook, out, root)
    previous = os.environ.get("ALGO_RUN_DIR")
    os.environ["ALGO_RUN_DIR"] = str(out)
    try:
        for nb in ran:
            execute(root / nb, out / nb)
    finally:
        _restore("ALGO_RUN_DIR", previous)
    return ran


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def notebooks(root: Path | None = None) -> list[Path]:
    """Every notebook of the pipeline, relative to the project root, in execution order."""
    root = root or project_root()
    order: list[Path] = []
    for stage in STAGES:
        found = sorted(p.name for p in (root / stage).glob("*.ipynb"))
        first = [n for n in FIRST.get(stage, ()) if n in found]
        last = [n for n in LAST.get(stage, ()) if n in found]
        order += [Path(stage) / n for n in first + [n for n in found if n not in first + last] + last]
    return order


def rounded(results: object, digits: int = DIGITS) -> object:
    """A copy of `results` (what `record` returned) with every float rounded to `digits`
    significant digits: what a notebook's last cell shows, and so what nbval compares. The JSON
    that `record` wrote keeps every digit (tests/test_recorded.py compares it with tolerances)."""
    if isinstance(results, Mapping):
        return {k: rounded(v, digits) for k, v in results.items()}
    if isinstance(results, list | tuple):
        return [rounded(v, digits) for v in results]
    if isinstance(results, float) and math.isfinite(results) and results:
        return float(f"{results:.{digits - 1}e}")
    return results


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what varies between runs (papermill timings) so committed notebooks stay stable."""
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def _kernel_config():
    """Encrypted kernel channels (CurveZMQ, which the kernelspec declares): no 'running over TCP
    without encryption' warning on every notebook, and nothing readable on the loopback."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}})


def check_kernel() -> None:
    """KernelMissing, in one line saying how to install it, unless Jupyter finds the project's
    kernel (the numeric pins travel with it; a plain python3 kernel would not carry them)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise KernelMissing(f"the Jupyter kernel '{KERNEL}' is not installed: run `python -m "
                            "algotrading.numerics --install-kernel` (or `make`)") from None


def execute(source: Path, target: Path, parameters: Mapping[str, object] | None = None) -> None:
    """Run one notebook with papermill on the project's kernel into `target` (its folder is the
    working directory). On failure the executed notebook stays at `target` and NotebookFailed
    names the cell."""
    import papermill as pm

    check_kernel()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(source), str(target), parameters=dict(parameters or {}),
                            cwd=str(source.parent), kernel_name=KERNEL, progress_bar=False,
                            log_output=False, config=_kernel_config())
    except pm.PapermillExecutionError as exc:
        lines = [line for line in str(exc.evalue).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else ""
        raise NotebookFailed(
            f"{source.name} failed in cell {exc.cell_index} (In [{exc.exec_count}]): "
            f"{exc.ename}: {last}; the executed notebook is kept at {target}") from None


def declared(nb: Path) -> dict[str, object]:
    """The notebook's parameters and their default values (the parameters cell holds literals)."""
    import papermill as pm

    return {name: ast.literal_eval(p["default"]) for name, p in pm.inspect_notebook(str(nb)).items()}


def check_parameters(parameters: Mapping[str, object], todo: Sequence[Path], root: Path
                     ) -> dict[Path, dict[str, object]]:
    """Each notebook's declared defaults; a parameter that no notebook to run declares is an
    error naming the ones they do (a typo must not silently run the defaults)."""
    defaults = {nb: declared(root / nb) for nb in todo}
    known = set().union(*defaults.values())
    unknown = sorted(set(parameters) - known)
    if unknown:
        names = "; ".join(f"{nb.stem}: {', '.join(d) or '-'}" for nb, d in defaults.items())
        raise ValueError(f"parameter(s) {', '.join(unknown)} not declared by the notebooks run "
                         f"({names})")
    for name, value in parameters.items():
        for nb, declared_ in defaults.items():
            if name in declared_ and not fits(value, declared_[name]):
                raise ParameterError(
                    f"parameter {name}={value!r}: {nb.stem} declares {name} = "
                    f"{declared_[name]!r}; give a {_kind(declared_[name])}")
    return defaults


PLAIN = (bool, int, float, str, type(None))


def string_parameters(only: Sequence[str] | None = None, root: Path | None = None) -> set[str]:
    """Names the notebooks `only` selects declare with a string default: the command line keeps
    their text as it is (`-p month=2014-01` is the string, not the number 2013)."""
    root = root or project_root()
    todo = [nb for nb in notebooks(root) if not only or any(s in str(nb) for s in only)]
    return {name for nb in todo for name, default in declared(root / nb).items()
            if isinstance(default, str)}


def fits(value: object, default: object) -> bool:
    """Whether `value` may replace a notebook parameter declared as `default`: the same kind of
    literal (an int where a float is declared; any plain value or list of them where None is).
    papermill writes any other type (a tuple, a set) into the notebook's code unescaped."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and (isinstance(default, bool) or default is None)
    if isinstance(default, int | float) and not isinstance(default, bool):
        return isinstance(value, int | float) and (isinstance(default, float)
                                                   or isinstance(value, int))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list) and all(
            fits(v, default[0]) if default else isinstance(v, PLAIN) for v in value)
    if default is None:
        return isinstance(value, PLAIN) or (isinstance(value, list)
                                            and all(isinstance(v, PLAIN) for v in value))
    return False  # dicts and other declared types take no override from the command line


def _kind(default: object) -> str:
    if isinstance(default, list):
        return f"list like {default!r}"
    if default is None:
        return "number, string, true/false or a list of them"
    return {bool: "true or false", int: "whole number", float: "number", str: "string"}.get(
        type(default), type(default).__name__)


def data_fingerprint() -> dict[str, object]:
    """sha256 of every file of the lake's price table, and one hash over all of them."""
    from algotrading import lake
    from algotrading.schema import TABLE

    store = lake.lake_store()
    files = {k.rsplit("/", 1)[-1]: hashlib.sha256(store.get(k) or b"").hexdigest()
             for k in store.keys(TABLE)}
    total = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"lake": store.describe(TABLE), "sha256": total, "files": files}


def provenance(root: Path) -> dict[str, object]:
    """The package version and the git commit (with `dirty` when the work tree has changes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("algotrading")
    except PackageNotFoundError:
        pkg = None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"version": pkg, "commit": commit, "dirty": bool(status) if commit else None}


def _save(out: Path, changes: Mapping[str, dict | None], root: Path, fresh: bool = False) -> None:
    """Merge `changes` (None: drop the entry) into the manifest on disk under a lock, so two
    `run --only` into one folder keep each other's entries; `fresh` starts from none."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = {} if fresh else load_manifest(out)
        for key, entry in changes.items():
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        order = [nb.as_posix() for nb in notebooks(root)]
        ranked = sorted(entries, key=lambda k: order.index(k) if k in order else len(order))
        write_atomic(out / MANIFEST, json.dumps({"notebooks": {k: entries[k] for k in ranked}},
                                                 indent=2) + "\n")
        from algotrading import report

        report.write(out)


def _ours(out: Path, stems: Sequence[str]) -> list[Path]:
    """The results files the pipeline writes for notebooks `stems` (`record`: <stem>.json and
    <stem>.<table>.csv): the only files a run deletes from a run folder."""
    folder = out / RESULTS
    return sorted(p for stem in stems for pattern in (f"{stem}.json", f"{stem}.*.csv")
                  for p in folder.glob(pattern) if p.is_file())


def check_run_folder(out: Path) -> None:
    """`out` is new, empty or a run folder (it has run.json): `algotrading run` writes and
    replaces files there, so a user's own folder is refused."""
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ValueError(f"run folder {out} (ALGO_RUN_DIR) exists, is not empty and is not a run "
                         f"folder (no {MANIFEST}); point ALGO_RUN_DIR at a new or empty folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"run folder {out} (ALGO_RUN_DIR) is a file, not a folder")


def run(only: Sequence[str] | None = None, parameters: Mapping[str, object] | None = None,
        out: Path | None = None, update_notebooks: bool = False, root: Path | None = None) -> Path:
    """Execute the pipeline's notebooks into `out` (default: the run dir, runs/latest) and write
    the reports; returns report.html.

    `only` keeps notebooks whose path contains one of the strings and updates just their entries
    (results, executed notebook, manifest) in `out`; a full run starts the folder's entries
    afresh. `out` must be new, empty or a run folder (run.json), and a run deletes only the
    results files it writes (`<notebook>.json`, `<notebook>.<table>.csv`); concurrent runs into
    one folder merge their manifest entries; an interrupted notebook (Ctrl-C) leaves its previous
    entry and results in place. `parameters` go to the notebooks that declare them; one that none
    declares is an error. A notebook whose needs (`NEEDS`: another notebook's model, a symbol in
    the lake) are neither in `out` nor made by a notebook that runs before it stops the run before
    anything executes, with one line naming the notebook to run first. `update_notebooks` copies
    the executed notebooks back over the committed ones (the outputs nbval compares against) and
    their results into `results/` at the project root (the committed run tests/test_recorded.py
    compares against); it needs default parameters.
    """
    root = root or project_root()
    out = (out or settings().run_path()).resolve()
    parameters = dict(parameters or {})
    if update_notebooks and parameters:
        raise ValueError("--update-notebooks records the default run; drop the parameters")
    every = notebooks(root)
    if not every:
        raise ValueError(f"no notebooks under {root} ({', '.join(STAGES)}): run `algotrading run` "
                         "inside the project checkout (the folder with pyproject.toml) or below it")
    todo = [nb for nb in every if not only or any(s in str(nb) for s in only)]
    if not todo:
        raise ValueError(f"no notebook matches {list(only or [])}; the pipeline has "
                         f"{', '.join(nb.stem for nb in every)}")
    defaults = check_parameters(parameters, todo, root)
    check_kernel()
    given = {nb: {k: v for k, v in parameters.items() if k in defaults[nb]} for nb in todo}
    blocked = [_first(str(nb), needs) for i, nb in enumerate(todo)
               if (needs := unmet(nb, {**defaults[nb], **given[nb]}, out, earlier=todo[:i]))]
    if blocked:
        raise MissingArtifact("; ".join(blocked))
    check_run_folder(out)
    _save(out, {}, root, fresh=not only)  # run.json from the start marks the run folder
    if not only:  # a full run starts the folder afresh: only what earlier runs wrote goes
        for stale in _ours(out, [nb.stem for nb in every]):
            stale.unlink()
    stamp = provenance(root)
    previous = os.environ.get("ALGO_RUN_DIR")
    os.environ["ALGO_RUN_DIR"] = str(out)  # kernels inherit it, so record() writes here
    try:
        for i, nb in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {nb} ...", end=" ", flush=True)
            before = load_manifest(out).get(nb.as_posix())
            aside = out / RESULTS / f".previous-{nb.stem}"  # back if the run is interrupted
            shutil.rmtree(aside, ignore_errors=True)
            for stale in _ours(out, [nb.stem]):  # never show old results as this run's
                aside.mkdir(parents=True, exist_ok=True)
                stale.replace(aside / stale.name)
            entry = {"status": "running", "parameters": {**defaults[nb], **given[nb]},
                     "overrides": given[nb], **stamp}
            start = time.perf_counter()
            try:
                execute(root / nb, out / nb, given[nb])
            except NotebookFailed as exc:
                print("FAILED")
                entry.update(status="failed", error=str(exc))
                raise
            except BaseException:  # Ctrl-C, a kill: the folder keeps the previous state
                print("INTERRUPTED")
                for partial in _ours(out, [nb.stem]):
                    partial.unlink()
                for kept in aside.glob("*") if aside.is_dir() else ():
                    kept.replace(out / RESULTS / kept.name)
                entry = before
                raise
            else:
                entry["status"] = "ok"
                print(f"ok ({time.perf_counter() - start:.1f} s)")
            finally:
                shutil.rmtree(aside, ignore_errors=True)
                if entry is not before:  # this run's outcome, ok or failed
                    entry.update(seconds=round(time.perf_counter() - start, 1),
                                 finished=datetime.now(UTC).isoformat(timespec="seconds"),
                                 data=data_fingerprint())
                _save(out, {nb.as_posix(): entry}, root)  # interrupted: the previous entry
            if update_notebooks:
                nbformat.write(_strip(nbformat.read(out / nb, as_version=4)), root / nb)
                recorded = out / RESULTS / f"{nb.stem}.json"
                if recorded.is_file():  # only the JSON: the curves and trades stay in the run
                    write_atomic(root / COMMITTED / recorded.name, recorded.read_text())
    finally:  # leave the caller's environment as it was
        _restore("ALGO_RUN_DIR", previous)
    html = out / "report.html"
    print(f"report: {html}")
    return html
