"""The lake: merges never drop history, writes never escape it, an ingest is all or nothing
across failures, kill -9 and concurrent writers (real separate processes), readers never see a
half-applied ingest."""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algotrading import lake, query, sources
from algotrading.lake import JOURNAL, STAGING, LocalStore
from algotrading.schema import DataError

from helpers import snapshot


def _sample(n=50):
    frame = sources.read("sample").frame
    return frame.groupby("sym").head(n).reset_index(drop=True)


def _bars(syms, days, version=1.0):
    """Consistent bars for each symbol and day; `version` scales every price."""
    dates = pd.bdate_range("2020-01-02", periods=days).strftime("%Y-%m-%d")
    rows = []
    for k, sym in enumerate(syms):
        base = (10.0 + k) * version
        for i, d in enumerate(dates):
            o = base + i * 0.01
            rows.append((d, sym, o, o + 1, o - 1, o + 0.5, 1000.0 + i))
    return pd.DataFrame(rows, columns=["dt", "sym", "open", "high", "low", "close", "vol"])


def _versions(folder: Path) -> set[float]:
    """Distinct `version` values seen across the lake's symbols (first open / (10 + k))."""
    frame = lake.read_all(lake=str(folder))
    first = frame.groupby("sym", sort=True)["open"].first()
    return {round(v / (10.0 + k), 6) for k, v in enumerate(first)}


def test_write_then_read_round_trips_exactly(tmp_path):
    frame = _sample()
    report = lake.write(frame, lake=str(tmp_path))
    assert report.index.tolist() == ["GSPC", "IXIC"] and set(report["action"]) == {"new"}
    assert lake.symbols(lake=str(tmp_path)) == ["GSPC", "IXIC"]
    back = lake.read_all(lake=str(tmp_path))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert (tmp_path / "hist_data_daily" / "GSPC.csv").read_text().startswith(
        "dt,sym,open,high,low,close,vol\n1999-01-04,GSPC,")


def test_ingest_merges_one_new_day_into_the_history(tmp_path):
    lake.write(_sample(5031), lake=str(tmp_path))
    gspc = _sample(5031).query("sym == 'GSPC'")
    new_day = gspc.tail(1).assign(dt="2019-01-02")
    report = lake.write(new_day, lake=str(tmp_path))
    assert report.loc["GSPC"].to_dict() == {"action": "merged", "added": 1, "changed": 0,
                                            "kept": 5031, "removed": 0, "rows": 5032}
    assert len(lake.read("GSPC", lake=str(tmp_path))) == 5032
    assert len(lake.read("IXIC", lake=str(tmp_path))) == 5031  # untouched


def test_merge_counts_changed_rows_and_is_idempotent(tmp_path):
    lake.write(_sample(50), lake=str(tmp_path))
    first = snapshot(tmp_path / "hist_data_daily")
    report = lake.write(_sample(50), lake=str(tmp_path))
    assert (report["kept"] == 50).all() and (report["added"] == 0).all()
    assert snapshot(tmp_path / "hist_data_daily") == first  # same data: same bytes
    fixed = _sample(50)
    fixed.loc[3, "close"] = fixed.loc[3, "high"]  # a corrected bar
    report = lake.write(fixed.iloc[:10], lake=str(tmp_path))
    assert report.loc["GSPC", ["changed", "kept", "rows"]].tolist() == [1, 49, 50]
    assert lake.read("GSPC", lake=str(tmp_path))["close"].iloc[3] == fixed.loc[3, "close"]


def test_replace_replaces_on_purpose(tmp_path):
    lake.write(_sample(50), lake=str(tmp_path))
    report = lake.write(_sample(10), lake=str(tmp_path), replace=True)
    assert report.loc["GSPC", ["action", "kept", "removed", "rows"]].tolist() == \
        ["replaced", 10, 40, 10]
    assert len(lake.read("GSPC", lake=str(tmp_path))) == 10
    assert not list((tmp_path / "hist_data_daily").glob(".*"))


def test_restated_history_replaces_the_symbol_and_says_so(tmp_path):
    old = _bars(["AAA", "BBB"], 20)
    lake.write(old, lake=str(tmp_path))
    # a re-delivery re-adjusted after a split: every earlier bar differs; fewer old days
    new = _bars(["AAA"], 25, version=0.5).iloc[5:]
    report = lake.write(new, lake=str(tmp_path), restate=True)
    assert report.loc["AAA", "action"] == "replaced (re-adjusted history)"
    assert report.loc["AAA", ["changed", "added", "removed", "rows"]].tolist() == [15, 5, 5, 20]
    assert lake.read("AAA", lake=str(tmp_path))["open"].iloc[0] == pytest.approx(5.05)
    # same prices on overlapping days: a plain merge even with restate
    report = lake.write(_bars(["AAA", "BBB"], 22).query("sym == 'BBB'"), lake=str(tmp_path),
                        restate=True)
    assert report.loc["BBB", ["action", "added", "kept"]].tolist() == ["merged", 2, 20]


def test_a_bad_merged_series_changes_nothing(tmp_path):
    lake.write(_bars(["AAA"], 5), lake=str(tmp_path))
    path = tmp_path / "hist_data_daily" / "AAA.csv"
    path.write_text(path.read_text().replace("2020-01-02", "1900-01-02"))  # edited by hand
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match=r"AAA.csv: symbol AAA: row 1 \(1900-01-02\): date before"):
        lake.write(_bars(["AAA", "BBB"], 8).query("dt > '2020-01-08'"), lake=str(tmp_path))
    assert snapshot(tmp_path) == before  # BBB was not written either


@pytest.mark.parametrize("key", ["../victim.csv", "hist_data_daily/../../victim.csv",
                                 "/etc/passwd"])
def test_local_store_refuses_paths_outside_the_lake(tmp_path, key):
    store = LocalStore(tmp_path / "lake")
    with pytest.raises(DataError, match="outside the lake"):
        store.put(key, b"x")
    assert not (tmp_path / "victim.csv").exists()


def test_a_symlink_out_of_the_lake_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "hist_data_daily").symlink_to(outside)
    with pytest.raises(DataError, match="outside the lake"):
        lake.write(_bars(["AAA"], 3), lake=str(tmp_path / "lake"))
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_leaving_the_lake_is_invisible_to_sql_and_readers(tmp_path, caplog):
    from algotrading import query

    lake.write(_bars(["AAA"], 3), lake=str(tmp_path / "lake"))
    secret = tmp_path / "secret.csv"
    secret.write_text("dt,sym,open,high,low,close,vol\n2020-01-01,EVIL,1,1,1,1,1\n")
    link = tmp_path / "lake" / "hist_data_daily" / "EVIL.csv"
    link.symlink_to(secret)
    (tmp_path / "lake" / "hist_data_daily" / "SAME.csv").symlink_to(link.with_name("AAA.csv"))
    where = str(tmp_path / "lake")
    assert lake.symbols(lake=where) == ["AAA", "SAME"]  # a link within the lake is kept
    assert "outside the lake; ignored" in caplog.text and str(link) in caplog.text
    table = query.sql("SELECT DISTINCT sym FROM algo_data.hist_data_daily ORDER BY sym", lake=where)
    assert table["sym"].tolist() == ["AAA"]  # SAME.csv holds AAA's rows; EVIL's are not read
    for text in (f"SELECT * FROM read_text('{link}')", f"SELECT * FROM read_csv('{link}')"):
        with pytest.raises(DataError, match="Permission Error"):
            query.sql(text, lake=where)
    with pytest.raises(DataError, match="outside the lake"):
        query.load_prices("EVIL", lake=where)
    with pytest.raises(DataError, match="outside the lake"):
        lake.read("EVIL", lake=where)


def test_a_journal_that_no_ingest_wrote_is_named_and_moves_nothing(tmp_path):
    where = str(tmp_path / "lake")
    lake.write(_bars(["AAA", "BBB"], 3), lake=where)
    store = LocalStore(where)
    bbb = store.get(lake.key("BBB"))
    staged = f"{STAGING}/0123456789ab/{lake.key('AAA')}"
    cases = {
        b"": "not JSON",
        b"garbage": "not JSON",
        b"[]": "want {",
        b'{"txid": "../../x", "moves": []}': "want {",
        # the crafted one: AAA's staged file onto BBB's lake file
        json.dumps({"txid": "0123456789ab", "moves": [[staged, lake.key("BBB")]]}).encode():
            "is not a staged file onto its symbol's lake file",
        json.dumps({"txid": "0123456789ab", "moves": [[staged, "../outside.csv"]]}).encode():
            "is not a staged file onto its symbol's lake file",
        json.dumps({"txid": "0123456789ab", "moves": [["a", "b", "c"]]}).encode():
            "is not a [staged, lake file] pair",
    }
    for text, why in cases.items():
        store.put(staged, store.get(lake.key("AAA")))
        store.put(JOURNAL, text)
        for call in (lambda: lake.read("BBB", lake=where),
                     lambda: lake.write(_bars(["CCC"], 3), lake=where)):
            with pytest.raises(OSError, match=rf"journal.json: not an ingest journal \(.*{re.escape(why)}"):
                call()
        assert store.get(lake.key("BBB")) == bbb
    store.delete(JOURNAL)
    assert lake.symbols(lake=where) == ["AAA", "BBB"]  # the fix the message names


def test_a_reader_waiting_for_the_lock_says_what_it_waits_for(tmp_path, monkeypatch, caplog):
    import fcntl
    import os

    where = str(tmp_path / "lake")
    lake.write(_bars(["AAA"], 3), lake=where)
    monkeypatch.setattr(lake, "LOCK_NOTICE", 0.0)
    monkeypatch.setenv("ALGO_LOCK_TIMEOUT", "0.3")
    fd = os.open(tmp_path / "lake" / lake.LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an ingest holding the lake
        with pytest.raises(DataError, match=r"locked by another ingest for more than 0.3 s "
                                            r"\(ALGO_LOCK_TIMEOUT sets the wait\)"):
            lake.read("AAA", lake=where)
    finally:
        os.close(fd)
    assert "waiting for the ingest to finish (another process is ingesting into this lake) to " \
           "read, up to 0.3 s (ALGO_LOCK_TIMEOUT sets the wait)" in caplog.text
    monkeypatch.setenv("ALGO_LOCK_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ALGO_LOCK_TIMEOUT='soon': want a positive number"):
        lake.write(_bars(["AAA"], 3), lake=where)


def test_lake_keys_only_take_normal_symbols(tmp_path):
    for bad in ("../../../victim", "a/b", ".HID", "   ", "A\nB", "X" * 300, "gspc"):
        with pytest.raises(DataError):
            lake.key(bad)
    assert lake.key("BRK.B") == "hist_data_daily/BRK.B.csv"


def test_full_disk_while_staging_changes_nothing_and_says_so(tmp_path, monkeypatch):
    lake.write(_sample(30), lake=str(tmp_path))
    before = snapshot(tmp_path / "hist_data_daily")
    real_put, calls = LocalStore.put, []

    def full_disk(self, key, data, **kw):
        calls.append(key)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_put(self, key, data, **kw)

    monkeypatch.setattr(LocalStore, "put", full_disk)
    bigger = pd.concat([_sample(60), _sample(60).query("sym == 'GSPC'").assign(sym="NEW")])
    with pytest.raises(OSError, match="ingest failed, nothing in the lake changed: No space"):
        lake.write(bigger, lake=str(tmp_path))
    monkeypatch.undo()
    assert calls[0].startswith(STAGING)  # staged first, the lake files untouched
    assert snapshot(tmp_path / "hist_data_daily") == before
    assert not (tmp_path / STAGING).exists() and not (tmp_path / JOURNAL).exists()


def test_a_failure_while_applying_is_finished_by_the_next_operation(tmp_path, monkeypatch,
                                                                    caplog):
    lake.write(_bars(["AAA", "BBB", "CCC"], 5), lake=str(tmp_path))
    real_move, calls = LocalStore.move, []

    def failing_move(self, src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real_move(self, src, dst)

    monkeypatch.setattr(LocalStore, "move", failing_move)
    with pytest.raises(OSError, match="committed but not fully applied.*next ingest"):
        lake.write(_bars(["AAA", "BBB", "CCC"], 5, version=2.0), lake=str(tmp_path),
                   replace=True)
    monkeypatch.undo()
    assert (tmp_path / JOURNAL).exists()
    on_disk = _raw_versions(tmp_path, ["AAA", "BBB", "CCC"])
    assert on_disk == {1.0, 2.0}  # the lake files themselves are half new
    with caplog.at_level("WARNING", logger="algotrading.lake"):
        assert _versions(tmp_path) == {2.0}  # a read sees the commit, through its journal
        assert query.load_prices("CCC", lake=str(tmp_path))["open"].iloc[0] == 2.0 * 12
    assert caplog.text == "" and (tmp_path / JOURNAL).exists()  # ... and repairs nothing
    assert _raw_versions(tmp_path, ["AAA", "BBB", "CCC"]) == on_disk
    with caplog.at_level("WARNING", logger="algotrading.lake"):
        lake.write(_bars(["AAA"], 5, version=2.0), lake=str(tmp_path))  # the next ingest does
    assert "completed an interrupted ingest (3 file(s))" in caplog.text
    assert not (tmp_path / JOURNAL).exists() and not (tmp_path / STAGING).exists()
    assert _raw_versions(tmp_path, ["AAA", "BBB", "CCC"]) == {2.0}


def _raw_versions(folder: Path, syms: list[str]) -> set[float]:
    """The `version` of each lake file as it is on disk (no lake code involved)."""
    return {round(float((folder / "hist_data_daily" / f"{s}.csv").read_text().splitlines()[1]
                        .split(",")[2]) / (10 + k), 6) for k, s in enumerate(syms)}


def _recover(folder: Path) -> None:
    """What the next ingest does first (readers leave it to a writer)."""
    store = LocalStore(folder)
    with store.lock(exclusive=True):
        lake.recover(store)


def test_read_only_commands_create_nothing_and_need_no_write_access(tmp_path, monkeypatch):
    """read, symbols, query and the CLI's read commands on a lake no ingest ever locked: no
    `.algotrading/` appears; on a lake folder this user cannot write, reads still work, also
    while an interrupted commit waits in the journal."""
    import os
    import shutil

    from algotrading import cli

    lake.write(_bars(["AAA", "BBB"], 5), lake=str(tmp_path / "made"))
    plain = tmp_path / "plain"
    shutil.copytree(tmp_path / "made" / "hist_data_daily", plain / "hist_data_daily")
    assert lake.symbols(lake=str(plain)) == ["AAA", "BBB"]
    assert len(lake.read("AAA", lake=str(plain))) == 5
    assert len(query.load_prices("BBB", lake=str(plain))) == 5
    monkeypatch.setenv("ALGO_LAKE", str(plain))
    monkeypatch.setenv("ALGO_BACKEND", "local")
    assert cli.main(["query", "SELECT count(*) AS n FROM algo_data.hist_data_daily"]) == 0
    assert sorted(p.name for p in plain.iterdir()) == ["hist_data_daily"]

    locked = tmp_path / "locked"
    lake.write(_bars(["AAA", "BBB"], 5), lake=str(locked))
    real_move, calls = LocalStore.move, []

    def failing_move(self, src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real_move(self, src, dst)

    monkeypatch.setattr(LocalStore, "move", failing_move)
    with pytest.raises(OSError, match="committed but not fully applied"):
        lake.write(_bars(["AAA", "BBB"], 5, version=2.0), lake=str(locked), replace=True)
    monkeypatch.undo()
    before = sorted(p.relative_to(locked).as_posix() for p in locked.rglob("*"))
    modes = {p: p.stat().st_mode for p in [locked, *locked.rglob("*")] if p.is_dir()}
    try:
        for folder in modes:
            folder.chmod(0o555)
        # (as root the folders stay writable; the unchanged tree below is the check then)
        assert os.access(locked, os.W_OK) == (os.geteuid() == 0)
        assert _versions(locked) == {2.0}
        assert sorted(p.relative_to(locked).as_posix() for p in locked.rglob("*")) == before
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


# ------------------------------------------------------------------ real separate processes

HOOK = """
import os, sys, time
import pandas as pd
from algotrading import lake
mode, n, src, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
name = "move" if mode in ("kill-move", "slow-move") else "put"
real, calls = getattr(lake.LocalStore, name), []
def hook(self, *args, **kw):
    if name == "put" and not args[0].startswith(lake.STAGING):
        return real(self, *args, **kw)
    calls.append(args[0])
    if mode.startswith("kill") and len(calls) == n:
        os.kill(os.getpid(), 9)
    if mode.startswith("slow"):
        time.sleep(n / 1000)
    return real(self, *args, **kw)
setattr(lake.LocalStore, name, hook)
lake.write(pd.read_csv(src), lake=dest, replace=True)
"""


def _run_hooked(tmp_path, mode, n, frame, dest) -> subprocess.Popen:
    src = tmp_path / f"in-{mode}-{n}-{time.monotonic_ns()}.csv"
    frame.to_csv(src, index=False)
    return subprocess.Popen([sys.executable, "-c", HOOK, mode, str(n), str(src), str(dest)])


SYMS = [f"S{k:03d}" for k in range(30)]


@pytest.mark.slow
@pytest.mark.parametrize("mode, expect", [("kill-stage", 1.0), ("kill-move", 2.0)])
def test_kill_9_mid_ingest_is_rolled_back_or_completed(tmp_path, mode, expect):
    dest = tmp_path / "lake"
    lake.write(_bars(SYMS, 10), lake=str(dest))
    proc = _run_hooked(tmp_path, mode, 12, _bars(SYMS, 10, version=2.0), dest)
    assert proc.wait(60) == -signal.SIGKILL
    if mode == "kill-move":  # killed after 11 of 30 renames: the files on disk are half new
        raw = [float((dest / "hist_data_daily" / f"{s}.csv").read_text().splitlines()[1]
                     .split(",")[2]) / (10 + k) for k, s in enumerate(SYMS)]
        assert {round(v, 6) for v in raw} == {1.0, 2.0}
    assert _versions(dest) == {expect}  # readers see all old or all new ...
    _recover(dest)  # ... and the next ingest repairs the files
    assert _raw_versions(dest, SYMS) == {expect}
    assert not (dest / JOURNAL).exists() and not (dest / STAGING).exists()
    assert not [p for p in (dest / "hist_data_daily").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_cli_ingest_killed_at_any_moment_is_all_or_nothing(tmp_path):
    """`algotrading ingest` of 120 symbols killed (SIGKILL, SIGTERM) at several moments: every
    time, the next operation sees either the whole old lake or the whole new one."""
    syms = [f"T{k:03d}" for k in range(120)]
    dest = tmp_path / "lake"
    src = tmp_path / "new.csv"
    _bars(syms, 20, version=2.0).to_csv(src, index=False)
    cli = [sys.executable, "-m", "algotrading", "ingest", "csv", str(src), "--lake", str(dest),
           "--replace"]
    lake.write(_bars(syms, 20), lake=str(dest))
    start = time.monotonic()
    subprocess.run(cli, check=True, capture_output=True)
    full = time.monotonic() - start
    seen = set()
    for frac, sig in ((0.6, signal.SIGKILL), (0.8, signal.SIGTERM), (0.95, signal.SIGKILL)):
        lake.write(_bars(syms, 20), lake=str(dest), replace=True)
        proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * frac)
        proc.send_signal(sig)
        proc.wait(60)
        versions = _versions(dest)
        assert versions in ({1.0}, {2.0}), versions
        seen |= versions
        _recover(dest)
        assert _raw_versions(dest, syms) == versions
        assert not (dest / STAGING).exists() and not (dest / JOURNAL).exists()
    assert seen  # and the lake is readable after every kill


@pytest.mark.slow
def test_concurrent_ingests_serialise_and_lose_no_rows(tmp_path):
    dest = tmp_path / "lake"
    lake.write(_bars(SYMS, 2), lake=str(dest))
    early = _bars(SYMS, 40).query("dt < '2020-01-30'")
    late = _bars(SYMS, 40).query("dt >= '2020-01-30'")
    script = HOOK.replace("replace=True", "replace=False")
    procs = []
    for frame in (early, late):
        src = tmp_path / f"part{len(procs)}.csv"
        frame.to_csv(src, index=False)
        procs.append(subprocess.Popen([sys.executable, "-c", script, "slow-stage", "20",
                                       str(src), str(dest)]))
    assert [p.wait(120) for p in procs] == [0, 0]
    merged = lake.read_all(lake=str(dest))
    assert merged.groupby("sym").size().eq(40).all()  # both writers' rows, none lost
    pd.testing.assert_frame_equal(merged, lake.read_all(lake=str(dest)))


@pytest.mark.slow
def test_readers_never_see_a_half_applied_ingest(tmp_path):
    dest = tmp_path / "lake"
    syms = SYMS[:10]
    lake.write(_bars(syms, 5), lake=str(dest))
    writer = _run_hooked(tmp_path, "slow-move", 100, _bars(syms, 5, version=2.0), dest)
    states = []
    while writer.poll() is None:
        states.append(frozenset(_versions(dest)))
    assert writer.returncode == 0
    assert set(states) <= {frozenset({1.0}), frozenset({2.0})}
    assert _versions(dest) == {2.0}


def test_reading_a_missing_symbol_lists_the_lake(tmp_path):
    lake.write(_bars(["AAA", "BBB"], 3), lake=str(tmp_path))
    with pytest.raises(ValueError, match="NOPE is not in the lake; it has: AAA BBB"):
        lake.read("NOPE", lake=str(tmp_path))
    assert np.isfinite(lake.read("aaa", lake=str(tmp_path))["close"]).all()  # normalised
