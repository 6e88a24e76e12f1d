"""The run folder (algotrading.runs): what the pipeline writes and the report reads."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from algotrading import runs


def test_record_writes_only_when_a_run_folder_is_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("ALGO_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # outside a checkout the default run dir would be ./runs/latest
    frame = pd.DataFrame({"a": [1.0]})
    assert runs.record("X", {"v": np.float64(1.5), "n": math.nan}, {"t": frame}) == {"v": 1.5, "n": None}
    assert not any(tmp_path.rglob("*"))
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path / "run"))
    runs.record("X", {"v": 1}, {"t": frame})
    assert json.loads((tmp_path / "run" / runs.RESULTS / "X.json").read_text()) == {"v": 1}
    assert (tmp_path / "run" / runs.RESULTS / "X.t.csv").read_text() == ",a\n0,1.0\n"
    from algotrading import pipeline

    assert pipeline.record is runs.record  # what the notebooks import


def test_manifest_reads_back_what_was_written_atomically(tmp_path):
    assert runs.load_manifest(tmp_path) == {}
    entries = {"1_Data/Load.ipynb": {"status": "ok"}}
    runs.write_atomic(tmp_path / runs.MANIFEST, json.dumps({"notebooks": entries}))
    assert runs.load_manifest(tmp_path) == entries
    assert [p.name for p in tmp_path.iterdir()] == [runs.MANIFEST]  # no temporary file left
