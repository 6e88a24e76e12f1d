"""The research pipeline: execute the notebooks headless with papermill, in dependency order, into
a run folder with a manifest and a report; and `record`, which notebooks call to leave their key
results.

A run folder (default `runs/latest`) holds the executed notebooks, `results/<notebook>.json`,
`run.json` (one entry per notebook: status, parameters, data fingerprint, package version, git
commit) and the reports. `run(only=...)` replaces only its notebooks' entries and keeps the rest;
results are written only where a run folder was asked for (`ALGO_RUN_DIR`, which `run` sets), so an
ad-hoc papermill run never touches `runs/latest`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pandas as pd

from algotrading.config import project_root, settings
from algotrading.metrics import to_json

STAGES = ("1_Data", "3_Models", "2_Strategies")  # the workshop's folder numbers, run in data order
# Within a stage, notebooks that feed others come first; the rest follow alphabetically.
FIRST = {
    "1_Data": ("Load_Hist_Data_Daily.ipynb",),
    "3_Models": ("Train_Model_Forecast.ipynb",),
    "2_Strategies": ("Strategy_SMA.ipynb", "Strategy_Breakout.ipynb", "Strategy_ML_Forecast.ipynb"),
}
LAST = {"2_Strategies": ("Run_Strategy_Paper.ipynb",)}  # runs forward what the others tested
RESULTS = "results"
MANIFEST = "run.json"


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error's last line."""


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


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(name: str, results: Mapping[str, object],
           tables: Mapping[str, pd.DataFrame] | None = None) -> dict:
    """Return a notebook's key results as plain JSON values (so the notebook shows them) and, when
    a run folder was asked for (`ALGO_RUN_DIR`; `algotrading run` sets it), save them as
    `<run dir>/results/<name>.json`, and each of `tables` as `<name>.<key>.csv` (e.g. the curves
    report.html draws). An ad-hoc run writes nothing."""
    clean = to_json(results)
    if os.environ.get("ALGO_RUN_DIR"):
        folder = settings().run_path() / RESULTS
        for key, frame in (tables or {}).items():
            write_atomic(folder / f"{name}.{key}.csv", frame.to_csv())
        write_atomic(folder / f"{name}.json", json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return clean


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what varies between runs (papermill timings) so committed notebooks stay stable."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def _kernel_config():
    """Encrypted kernel channels (CurveZMQ, which the kernelspec declares): no 'running over TCP
    without encryption' warning on every notebook, and nothing readable on the loopback."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}})


def execute(source: Path, target: Path, parameters: Mapping[str, object] | None = None) -> None:
    """Run one notebook with papermill into `target` (its folder is the working directory).
    On failure the executed notebook stays at `target` and NotebookFailed names the cell."""
    import papermill as pm

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(source), str(target), parameters=dict(parameters or {}),
                            cwd=str(source.parent), kernel_name="python3", progress_bar=False,
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
    return defaults


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


def load_manifest(out: Path) -> dict[str, dict]:
    """The run folder's notebook entries (empty for a new folder)."""
    path = out / MANIFEST
    return json.loads(path.read_text())["notebooks"] if path.is_file() else {}


def _save(out: Path, entries: Mapping[str, dict], root: Path) -> None:
    order = [nb.as_posix() for nb in notebooks(root)]
    ranked = sorted(entries, key=lambda k: order.index(k) if k in order else len(order))
    write_atomic(out / MANIFEST, json.dumps({"notebooks": {k: entries[k] for k in ranked}},
                                             indent=2) + "\n")
    from algotrading import report

    report.write(out)


def run(only: Sequence[str] | None = None, parameters: Mapping[str, object] | None = None,
        out: Path | None = None, update_notebooks: bool = False, root: Path | None = None) -> Path:
    """Execute the pipeline's notebooks into `out` (default: the run dir, runs/latest) and write
    the reports; returns report.html.

    `only` keeps notebooks whose path contains one of the strings and updates just their entries
    (results, executed notebook, manifest) in `out`; a full run starts the folder's entries
    afresh. `parameters` go to the notebooks that declare them; one that none declares is an
    error. `update_notebooks` copies the executed notebooks back over the committed ones (the
    outputs nbval compares against); it needs default parameters.
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
    entries = load_manifest(out) if only else {}
    if not only:
        for stale in (out / RESULTS).glob("*"):
            stale.unlink()
    stamp = provenance(root)
    previous = os.environ.get("ALGO_RUN_DIR")
    os.environ["ALGO_RUN_DIR"] = str(out)  # kernels inherit it, so record() writes here
    try:
        for i, nb in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {nb} ...", end=" ", flush=True)
            given = {k: v for k, v in parameters.items() if k in defaults[nb]}
            for stale in (out / RESULTS).glob(f"{nb.stem}.*"):  # never show old results
                stale.unlink()
            entry = {"status": "running", "parameters": {**defaults[nb], **given},
                     "overrides": given, **stamp}
            start = time.perf_counter()
            try:
                execute(root / nb, out / nb, given)
            except NotebookFailed as exc:
                print("FAILED")
                entry.update(status="failed", error=str(exc))
                raise
            else:
                entry["status"] = "ok"
                print(f"ok ({time.perf_counter() - start:.1f} s)")
            finally:
                entry.update(seconds=round(time.perf_counter() - start, 1),
                             finished=datetime.now(UTC).isoformat(timespec="seconds"),
                             data=data_fingerprint())
                entries[nb.as_posix()] = entry
                _save(out, entries, root)
            if update_notebooks:
                nbformat.write(_strip(nbformat.read(out / nb, as_version=4)), root / nb)
    finally:  # leave the caller's environment as it was
        if previous is None:
            os.environ.pop("ALGO_RUN_DIR", None)
        else:
            os.environ["ALGO_RUN_DIR"] = previous
    html = out / "report.html"
    print(f"report: {html}")
    return html
