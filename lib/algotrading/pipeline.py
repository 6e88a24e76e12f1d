"""The research pipeline: execute every notebook headless with papermill, in dependency order,
into a run folder with a report; and `record`, which notebooks call to leave their key results."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat

from algotrading.config import project_root, settings
from algotrading.metrics import to_json

STAGES = ("1_Data", "3_Models", "2_Strategies")  # the workshop's folder numbers, run in data order
# Within a stage, notebooks that feed others come first; the rest follow alphabetically.
FIRST = {
    "1_Data": ("Load_Hist_Data_Daily.ipynb",),
    "3_Models": ("Train_Model_Forecast.ipynb",),
    "2_Strategies": ("Strategy_SMA.ipynb", "Strategy_Breakout.ipynb"),
}
RESULTS = "results"


def notebooks(root: Path | None = None) -> list[Path]:
    """Every notebook of the pipeline, relative to the project root, in execution order."""
    root = root or project_root()
    order: list[Path] = []
    for stage in STAGES:
        found = sorted(p.name for p in (root / stage).glob("*.ipynb"))
        first = [n for n in FIRST.get(stage, ()) if n in found]
        order += [Path(stage) / n for n in first + [n for n in found if n not in first]]
    return order


def record(name: str, results: Mapping[str, object]) -> dict:
    """Save a notebook's key results as `<run dir>/results/<name>.json` for the report and tests,
    and return them (so the notebook shows what it recorded)."""
    clean = to_json(results)
    folder = settings().run_path() / RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    return clean


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what varies between runs (papermill timings) so committed notebooks stay stable."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def write_report(out: Path, ran: Sequence[tuple[Path, float, str]]) -> Path:
    """`report.md`: a link to each executed notebook, its status and its recorded results."""
    lines = ["# algotrading run", "", "| notebook | status | seconds |", "|---|---|---|"]
    lines += [f"| [{nb}]({nb.as_posix()}) | {status} | {secs:.1f} |" for nb, secs, status in ran]
    for nb, _, _ in ran:
        result = out / RESULTS / f"{nb.stem}.json"
        if not result.is_file():
            continue
        flat: dict[str, object] = {}
        _flatten("", json.loads(result.read_text()), flat)
        lines += ["", f"## {nb.stem}", "", "| result | value |", "|---|---|"]
        lines += [f"| {k} | {v if not isinstance(v, float) else f'{v:.6g}'} |"
                  for k, v in flat.items()]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def run(only: Sequence[str] | None = None, parameters: Mapping[str, object] | None = None,
        out: Path | None = None, update_notebooks: bool = False, root: Path | None = None) -> Path:
    """Execute the pipeline's notebooks into `out` (default: the run dir, runs/latest) and write
    report.md. `only` keeps notebooks whose path contains one of the strings; `parameters` go to
    every notebook that declares them. `update_notebooks` copies the executed notebooks back over
    the committed ones (the outputs nbval compares against); it needs default parameters."""
    import papermill as pm

    root = root or project_root()
    out = (out or settings().run_path()).resolve()
    if update_notebooks and parameters:
        raise ValueError("--update-notebooks records the default run; drop the parameters")
    todo = [nb for nb in notebooks(root) if not only or any(s in str(nb) for s in only)]
    if not todo:
        raise ValueError(f"no notebook matches {list(only or [])}")
    if (out / RESULTS).is_dir():
        shutil.rmtree(out / RESULTS)
    previous = os.environ.get("ALGO_RUN_DIR")
    os.environ["ALGO_RUN_DIR"] = str(out)  # kernels inherit it, so record() writes here
    ran: list[tuple[Path, float, str]] = []
    try:
        for i, nb in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {nb} ...", end=" ", flush=True)
            target = out / nb
            target.parent.mkdir(parents=True, exist_ok=True)
            declared = pm.inspect_notebook(str(root / nb))
            params = {k: v for k, v in (parameters or {}).items() if k in declared}
            start = time.perf_counter()
            try:
                pm.execute_notebook(str(root / nb), str(target), parameters=params,
                                    cwd=str((root / nb).parent), kernel_name="python3",
                                    progress_bar=False, log_output=False)
            except Exception:
                print("FAILED")
                ran.append((nb, time.perf_counter() - start, "failed"))
                write_report(out, ran)
                raise
            secs = time.perf_counter() - start
            print(f"ok ({secs:.1f} s)")
            ran.append((nb, secs, "ok"))
            if update_notebooks:
                nbformat.write(_strip(nbformat.read(target, as_version=4)), root / nb)
    finally:  # leave the caller's environment as it was
        if previous is None:
            os.environ.pop("ALGO_RUN_DIR", None)
        else:
            os.environ["ALGO_RUN_DIR"] = previous
    report = write_report(out, ran)
    print(f"report: {report}")
    return report
