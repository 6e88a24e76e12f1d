"""The committed run: what each notebook records (`pipeline.record`) against `results/<notebook>.json`
(written by `make notebooks` from one default run), with stated tolerances, so a drift in the last
digits is not a failure and a wrong result is. Also what a notebook needs from others
(`pipeline.NEEDS`), and the bootstrap interval the PPO strategy's conclusion rests on.

The per-notebook comparison runs right after nbval's re-execution of that notebook (conftest.py
orders them; nbval's kernels record into the session's scratch run folder). When nbval did not run
the notebook in this session, the test executes it with its defaults itself, after whatever it
needs from other notebooks.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from algotrading import metrics, pipeline

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / pipeline.COMMITTED
NOTEBOOKS = [nb.as_posix() for nb in pipeline.notebooks(ROOT)]
# Tolerances. Floats: relative 1e-6, or 1e-9 absolute for values near zero (a parity difference of
# 1e-11): with the numeric kernels pinned (algotrading.numerics) the same locked versions give the
# same bits on any x86-64 CPU, so this only forgives summation-order noise; a changed trade moves a
# metric by far more. Exact: integers, strings (conclusions, dates, sha256 of weights and data),
# booleans, None, the keys of every mapping and the length of every list.
REL, ABS = 1e-6, 1e-9
# Compared by their keys only: wall-clock seconds and times vary from run to run.
VOLATILE = {"train_seconds", "when"}  # when: the UTC time of a look at the test period
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def differences(got: object, want: object, path: str = "") -> list[str]:
    """Every place where `got` (a notebook's results JSON) differs from `want` (the committed
    run's) beyond the tolerances above, one line each; empty when they agree."""
    where = path or "<results>"
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}: key {k!r} {'missing' if k in want else 'not in the committed run'}"
               for k in sorted(set(want) ^ set(got))]
        for k in sorted(set(want) & set(got)):
            if k not in VOLATILE:
                out += differences(got[k], want[k], f"{path}.{k}" if path else k)
            elif isinstance(want[k], dict) and isinstance(got[k], dict) and set(want[k]) != set(got[k]):
                out.append(f"{path}.{k}: keys {sorted(got[k])} != {sorted(want[k])}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, the committed run has {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in differences(g, w, f"{where}[{i}]")]
    if (isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool)
            and not isinstance(want, bool)):
        if math.isclose(got, want, rel_tol=REL, abs_tol=ABS):
            return []
        return [f"{where}: {got!r} != {want!r} (rel {REL}, abs {ABS})"]
    if type(got) is not type(want) or got != want:
        return [f"{where}: {got!r} != {want!r} (exact)"]
    return []


def _ran_under_nbval(session: pytest.Session, notebook: str) -> bool:
    """Whether this session holds nbval's cells of `notebook` (conftest.py runs them first)."""
    return any(Path(str(item.fspath)) == ROOT / notebook for item in session.items)


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda nb: Path(nb).stem)
def test_recorded_results_match_the_committed_run(notebook, request):
    committed = COMMITTED / f"{Path(notebook).stem}.json"
    assert committed.is_file(), f"no committed results for {notebook}: run `make notebooks`"
    run = Path(os.environ["ALGO_RUN_DIR"])  # the session's scratch run folder (conftest.py)
    if not _ran_under_nbval(request.session, notebook):
        pipeline.prepare(notebook, run, ROOT)  # what it needs from other notebooks, with defaults
        pipeline.execute(ROOT / notebook, run / notebook)  # with its defaults, as nbval runs it
    got = run / pipeline.RESULTS / committed.name
    assert got.is_file(), f"{notebook} recorded nothing in {got.parent}"
    problems = differences(json.loads(got.read_text()), json.loads(committed.read_text()))
    assert not problems, f"{notebook} differs from the committed run:\n" + "\n".join(problems)


def test_a_wrong_result_fails_and_last_digit_noise_does_not():
    want = json.loads((COMMITTED / "Strategy_SMA.json").read_text())
    assert differences(json.loads(json.dumps(want)), want) == []

    noisy = json.loads(json.dumps(want))
    value = noisy["test"]["with_costs"]["sharpe"]
    noisy["test"]["with_costs"]["sharpe"] = value * (1 + 1e-12)  # summation-order noise
    assert differences(noisy, want) == []

    wrong = json.loads(json.dumps(want))
    wrong["test"]["with_costs"]["sharpe"] = value * 1.001  # a different result
    wrong["sweep"]["combinations"] += 1  # an integer: exact
    wrong["sweep"]["chosen"] = {**wrong["sweep"]["chosen"], "extra": 1}
    del wrong["conclusion"]
    found = differences(wrong, want)
    assert [line.split(":")[0] for line in found] == [
        "<results>", "sweep.chosen", "sweep.combinations", "test.with_costs.sharpe"]
    assert "key 'conclusion' missing" in found[0]
    assert "key 'extra' not in the committed run" in found[1]
    assert found[2].endswith("(exact)") and "(rel 1e-06, abs 1e-09)" in found[3]


def test_types_hashes_and_volatile_keys_are_exact_where_stated():
    want = {"weights_sha256": "a" * 64, "rows": 1604, "ok": True, "train_seconds": {"0": 15.2},
            "seeds": [0, 1]}
    assert SHA256.match(want["weights_sha256"])
    assert differences({**want, "train_seconds": {"0": 99.0}}, want) == []  # seconds: keys only
    assert differences({**want, "train_seconds": {"1": 15.2}}, want) != []
    assert differences({**want, "weights_sha256": "b" + "a" * 63}, want) != []
    assert differences({**want, "rows": 1604.0}, want) != []  # an int that became a float
    assert differences({**want, "ok": 1}, want) != []
    assert differences({**want, "seeds": [0, 1, 2]}, want) != []


def test_every_committed_result_belongs_to_a_pipeline_notebook():
    stems = {Path(nb).stem for nb in NOTEBOOKS}
    committed = {p.stem for p in COMMITTED.glob("*")}
    assert committed <= stems, f"stale files in results/: {sorted(committed - stems)}"
    assert all(p.suffix == ".json" for p in COMMITTED.glob("*")), "results/ holds only the JSON"


def test_needs_name_pipeline_notebooks_that_run_before_their_readers():
    for reader, needs in pipeline.NEEDS.items():
        assert reader in NOTEBOOKS, reader
        for need in needs:
            assert NOTEBOOKS.index(need.notebook) < NOTEBOOKS.index(reader), (reader, need)
            declared = pipeline.declared(ROOT / reader)
            assert need.wanted(declared), (reader, need)  # its templates fill from the defaults
    # every notebook after the load reads prices from the lake
    assert set(pipeline.NEEDS) == set(NOTEBOOKS) - {pipeline.LOAD}


def test_run_only_refuses_up_front_naming_the_notebook_to_run_first(tmp_path, monkeypatch):
    from algotrading import lake, sources

    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    out = tmp_path / "run"
    with pytest.raises(pipeline.MissingArtifact) as empty:
        pipeline.run(only=["Strategy_SMA"], out=out)
    assert str(empty.value) == (
        "Strategy_SMA needs symbol GSPC in the lake (from 1_Data/Load_Hist_Data_Daily.ipynb): run "
        "1_Data/Load_Hist_Data_Daily.ipynb first (`algotrading run --only Load_Hist_Data_Daily`)")
    lake.write(sources.read("sample").frame)
    with pytest.raises(pipeline.MissingArtifact) as ppo:
        pipeline.run(only=["Strategy_PPO", "Strategy_ML"], parameters={"seeds": [0, 1]}, out=out)
    message = str(ppo.value)
    assert "\n" not in message
    assert message.startswith("Strategy_ML_Forecast needs <run dir>/models/forecast-GSPC/model.pt and 1 "
                              "more (from 3_Models/Train_Model_Forecast.ipynb)")
    assert ("Strategy_PPO needs <run dir>/models/ppo/GSPC-seed0/policy.pt and 3 more (from "
            "3_Models/Train_Model_PPO.ipynb): run 3_Models/Train_Model_PPO.ipynb first "
            "(`algotrading run --only Train_Model_PPO`)") in message
    assert not out.exists()  # refused before anything ran
    # a producer that runs earlier in the same run meets the need; a given model replaces it
    assert pipeline.unmet("Strategy_ML_Forecast", {"symbol": "GSPC", "model": ""}, out,
                          earlier=["3_Models/Train_Model_Forecast.ipynb"]) == []
    assert pipeline.unmet("Strategy_ML_Forecast", {"symbol": "GSPC", "model": "s3://b/m.tar.gz"},
                          out) == []


def test_require_and_prerequisites_follow_the_needs(tmp_path, monkeypatch):
    from algotrading import lake, sources

    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ALGO_RUN_DIR", str(tmp_path / "run"))
    out = tmp_path / "run"
    assert [nb.as_posix() for nb in pipeline.prerequisites("Strategy_PPO", out, ROOT)] == [
        "1_Data/Load_Hist_Data_Daily.ipynb", "3_Models/Train_Model_Forecast.ipynb",
        "3_Models/Train_Model_PPO.ipynb", "2_Strategies/Strategy_ML_Forecast.ipynb"]
    lake.write(sources.read("sample").frame)
    for seed in range(5):
        for name in ("policy.pt", "config.json"):
            (out / "models" / "ppo" / f"GSPC-seed{seed}").mkdir(parents=True, exist_ok=True)
            (out / "models" / "ppo" / f"GSPC-seed{seed}" / name).touch()
    pipeline.require("Strategy_PPO", symbol="GSPC", seeds=[0, 1, 2, 3, 4])  # all there
    with pytest.raises(pipeline.MissingArtifact, match=r"GSPC-seed5/policy.pt .*Train_Model_PPO"):
        pipeline.require("Strategy_PPO", symbol="GSPC", seeds=[4, 5])
    # the optional ML forecast (a row of Strategy_PPO's default table) is still produced for nbval
    assert [nb.stem for nb in pipeline.prerequisites("Strategy_PPO", out, ROOT)] == [
        "Train_Model_Forecast", "Strategy_ML_Forecast"]


def test_rounded_shows_six_significant_digits_and_keeps_the_rest():
    shown = pipeline.rounded({"a": 0.1947602646109321, "b": [152737.3138, 8.64064e-07], "n": 1604,
                              "ok": True, "none": None, "zero": 0.0, "s": "x"})
    assert shown == {"a": 0.19476, "b": [152737.0, 8.64064e-07], "n": 1604, "ok": True,
                     "none": None, "zero": 0.0, "s": "x"}
    assert type(shown["n"]) is int and shown["ok"] is True


def test_kernel_is_checked_with_a_one_line_fix(monkeypatch):
    monkeypatch.setattr(pipeline, "KERNEL", "no-such-kernel-here")
    with pytest.raises(pipeline.KernelMissing) as missing:
        pipeline.check_kernel()
    assert str(missing.value) == ("the Jupyter kernel 'no-such-kernel-here' is not installed: run "
                                  "`python -m algotrading.numerics --install-kernel` (or `make`)")
    monkeypatch.undo()
    pipeline.check_kernel()  # `make` installed the real one


def test_bootstrap_interval_by_hand():
    # two values 1 and 3: resampled means are 1, 2, 3 with probabilities 1/4, 1/2, 1/4
    assert metrics.bootstrap_interval([1.0, 3.0], level=0.9) == (1.0, 3.0)
    assert metrics.bootstrap_interval([1.0, 3.0], level=0.4) == (2.0, 2.0)
    assert metrics.bootstrap_interval([0.25] * 5) == pytest.approx((0.25, 0.25))
    assert metrics.bootstrap_interval([-0.3]) == pytest.approx((-0.3, -0.3))
    returns = [0.80, 0.27, -0.58, 0.10, 0.44]
    low, high = metrics.bootstrap_interval(returns)
    assert min(returns) <= low < sum(returns) / 5 < high <= max(returns)
    assert metrics.bootstrap_interval(returns) == (low, high)  # seeded: the same interval again
    assert metrics.bootstrap_interval(returns, seed=1) != (low, high)
    narrower = metrics.bootstrap_interval(returns, level=0.5)
    assert low < narrower[0] < narrower[1] < high
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="at least one value"):
            metrics.bootstrap_interval(bad)
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_interval(returns, level=1.0)
