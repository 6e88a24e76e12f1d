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


def _fake_project(tmp_path, monkeypatch, execute):
    """A checkout with two parameterless notebooks and `execute` in place of papermill (it gets
    the notebook's stem and the run folder), so the run folder's handling runs in-process."""
    import nbformat
    import pytest

    from algotrading import pipeline

    root = tmp_path / "project"
    for stem in ("Fake_A", "Fake_B"):
        (root / "1_Data").mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(), root / "1_Data" / f"{stem}.ipynb")
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setattr(pipeline, "check_kernel", lambda: None)

    def fake(source, target, parameters=None):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("{}")
        execute(source.stem, target.parents[1])

    monkeypatch.setattr(pipeline, "execute", fake)
    return root, pipeline, pytest


def test_a_run_never_deletes_what_it_did_not_write(tmp_path, monkeypatch):
    root, pipeline, pytest = _fake_project(
        tmp_path, monkeypatch, lambda stem, out: runs.record(stem, {"v": 1}))
    out = tmp_path / "thesis"
    (out / "results").mkdir(parents=True)
    (out / "results" / "thesis.xlsx").write_bytes(b"PK")
    (out / "results" / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match=r"thesis \(ALGO_RUN_DIR\) exists, is not empty and is not "
                                         r"a run folder \(no run.json\)"):
        pipeline.run(out=out, root=root)
    assert sorted(p.name for p in (out / "results").iterdir()) == ["notes.md", "thesis.xlsx"]
    (out / "run.json").write_text('{"notebooks": {}}')  # a run folder the user also keeps files in
    (out / "results" / "Fake_A.old.csv").write_text("stale")
    pipeline.run(out=out, root=root)
    assert sorted(p.name for p in (out / "results").iterdir()) == [
        "Fake_A.json", "Fake_B.json", "notes.md", "thesis.xlsx"]


def test_concurrent_only_runs_keep_both_entries_and_ctrl_c_keeps_the_previous_state(
        tmp_path, monkeypatch):
    out = tmp_path / "run"
    state = {"version": 1, "nested": False, "interrupt": False}

    def execute(stem, folder):
        runs.record(stem, {"v": state["version"]})
        if stem == "Fake_A" and state["nested"]:  # B's run starts and ends while A runs
            state["nested"] = False
            pipeline.run(only=["Fake_B"], out=out, root=root)
        if state["interrupt"]:
            raise KeyboardInterrupt

    root, pipeline, pytest = _fake_project(tmp_path, monkeypatch, execute)
    state.update(version=2, nested=True)
    pipeline.run(only=["Fake_A"], out=out, root=root)  # into a new folder, B's run inside A's
    entries = runs.load_manifest(out)
    assert set(entries) == {"1_Data/Fake_A.ipynb", "1_Data/Fake_B.ipynb"}
    assert all(e["status"] == "ok" for e in entries.values())
    assert json.loads((out / "results" / "Fake_B.json").read_text()) == {"v": 2}
    state.update(version=3, interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(only=["Fake_A"], out=out, root=root)
    assert runs.load_manifest(out) == entries  # not "running": the previous entry stays
    assert json.loads((out / "results" / "Fake_A.json").read_text()) == {"v": 2}
    assert sorted(p.name for p in (out / "results").iterdir()) == ["Fake_A.json", "Fake_B.json"]
