"""The fast notebook tier: each notebook runs through papermill with small parameters, the same
way `make run` runs it, and its recorded results are checked. (nbval separately re-runs the
committed notebooks with their defaults and compares every text output.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = os.environ.get("ALGO_PUBLIC_DATA")
pytestmark = pytest.mark.notebooks


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fresh lake and run folder; kernels inherit the environment."""
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def execute(notebook: str, run_dir: Path, **parameters) -> dict:
    source = ROOT / notebook
    (run_dir / notebook).parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(source), str(run_dir / notebook), parameters=parameters,
                        cwd=str(source.parent), kernel_name="python3", progress_bar=False)
    return json.loads((run_dir / "results" / f"{source.stem}.json").read_text())


@pytest.mark.skipif(not PUBLIC or not Path(PUBLIC).is_file(), reason="public dataset not present")
def test_data_notebooks_on_the_public_set(run_dir):
    loaded = execute("1_Data/Load_Hist_Data_Daily.ipynb", run_dir, source="public",
                     symbols=["INTC", "AAPL"])
    assert loaded["symbols"] == ["AAPL", "INTC"]
    assert loaded["rows"] == {"AAPL": 1258, "INTC": 1258}
    assert loaded["dropped"] == {"AAPL": 567, "INTC": 567}
    assert loaded["repaired"] == {"AAPL": 1, "INTC": 2}
    explored = execute("1_Data/Explore_Hist_Data.ipynb", run_dir, symbol="INTC", month="2014-01",
                       ma_windows=[10, 30])
    assert explored["days"] == {"AAPL": 1258, "INTC": 1258}
    assert explored["month"]["days"] == 21  # January 2014 had 21 NYSE trading days
    assert 0 < explored["mean_pair_corr"] < 1
