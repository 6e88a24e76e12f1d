"""A run folder: its layout, the manifest, atomic writes, and `record`, which notebooks (and
`Study.record`) call to leave their key results.

A run folder (default `runs/latest`, `ALGO_RUN_DIR`) holds the executed notebooks,
`results/<notebook>.json` (plus `<notebook>.<table>.csv`), `run.json` (the manifest: one entry
per notebook, see pipeline.run) and the reports (report.py). The pipeline writes the folder, the
report reads it; both take its layout from here, so neither imports the other for it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from algotrading.config import settings
from algotrading.metrics import to_json

RESULTS = "results"  # <run dir>/results/<notebook>.json and <notebook>.<table>.csv
MANIFEST = "run.json"  # {"notebooks": {<notebook path>: entry}}


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


def load_manifest(out: Path) -> dict[str, dict]:
    """The run folder's notebook entries (empty for a new folder)."""
    path = out / MANIFEST
    return json.loads(path.read_text())["notebooks"] if path.is_file() else {}


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
