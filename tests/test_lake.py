"""The lake: atomic, idempotent, all-or-nothing writes; reads give back exactly what was written."""

from __future__ import annotations

import pandas as pd
import pytest

from algotrading import lake, sources
from algotrading.lake import LocalStore

from helpers import snapshot


def _sample(n=50):
    frame = sources.read("sample").frame
    return frame.groupby("sym").head(n).reset_index(drop=True)


def test_write_then_read_round_trips_exactly(tmp_path):
    frame = _sample()
    assert lake.write(frame, lake=str(tmp_path)) == ["GSPC", "IXIC"]
    assert lake.symbols(lake=str(tmp_path)) == ["GSPC", "IXIC"]
    back = lake.read_all(lake=str(tmp_path))
    pd.testing.assert_frame_equal(back, frame)
    assert (tmp_path / "hist_data_daily" / "GSPC.csv").read_text().startswith(
        "dt,sym,open,high,low,close,vol\n1999-01-04,GSPC,")


def test_reingest_replaces_and_is_idempotent(tmp_path):
    lake.write(_sample(50), lake=str(tmp_path))
    first = snapshot(tmp_path)
    lake.write(_sample(50), lake=str(tmp_path))
    assert snapshot(tmp_path) == first
    lake.write(_sample(10), lake=str(tmp_path))
    assert len(lake.read("GSPC", lake=str(tmp_path))) == 10
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_failure_in_the_middle_of_an_ingest_changes_nothing(tmp_path, monkeypatch):
    lake.write(_sample(30), lake=str(tmp_path))
    before = snapshot(tmp_path)
    bigger = pd.concat([_sample(60), _sample(60).query("sym == 'GSPC'").assign(sym="NEW")])
    real_put, calls = LocalStore.put, []

    def failing_put(self, key, data):
        calls.append(key)
        if len(calls) == 2:
            raise OSError("disk full")
        real_put(self, key, data)

    monkeypatch.setattr(LocalStore, "put", failing_put)
    with pytest.raises(OSError, match="disk full"):
        lake.write(bigger, lake=str(tmp_path))
    monkeypatch.undo()
    assert calls[0] == "hist_data_daily/GSPC.csv"  # GSPC had been replaced before the failure
    assert snapshot(tmp_path) == before


def test_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
    lake.write(_sample(30), lake=str(tmp_path))
    before = snapshot(tmp_path)

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError):
        lake.write(_sample(40), lake=str(tmp_path))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_reading_a_missing_symbol_says_so(tmp_path):
    with pytest.raises(ValueError, match="NOPE is not in the lake"):
        lake.read("NOPE", lake=str(tmp_path))
