"""One base exception: every exception the package defines derives from errors.AlgotradingError
(and keeps the built-in base callers caught before), so a notebook can catch the project's errors
without catching everything."""

from __future__ import annotations

import ast
import importlib
import pathlib

import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, jobs, lake, schema
from algotrading.errors import AlgotradingError, JobError, LakeError, ParameterError, StackError
from algotrading.strategies import Param

LIB = pathlib.Path(__file__).resolve().parents[1] / "lib" / "algotrading"
# pipeline.py is being rewritten elsewhere; its NotebookFailed gets the base there. Remove this
# line then (the test below fails as soon as it derives from AlgotradingError, to say so).
NOT_YET: set[str] = set()


def defined_exceptions() -> dict[str, type]:
    """Every class in lib/algotrading whose bases name an exception, imported: name -> class."""
    found = {}
    for path in sorted(LIB.rglob("*.py")):
        module = ".".join(path.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).split(".")[-1].endswith(("Error", "Exception", "Failed"))
                    for b in node.bases):
                found[f"{module}.{node.name}"] = getattr(importlib.import_module(module), node.name)
    return found


def test_every_project_exception_derives_from_the_base() -> None:
    found = defined_exceptions()
    assert {"algotrading.schema.DataError", "algotrading.errors.ParameterError",
            "algotrading.live.journal.JournalError"} <= set(found)
    outside = {name for name, cls in found.items() if not issubclass(cls, AlgotradingError)}
    assert outside == NOT_YET, "derive these from algotrading.errors.AlgotradingError " \
        "(or drop them from NOT_YET once they do)"


@pytest.mark.parametrize("cls, builtin", [
    (schema.DataError, ValueError), (ParameterError, ValueError), (LakeError, OSError),
    (JobError, ValueError), (StackError, LookupError)])
def test_errors_keep_the_builtin_base_callers_catch(cls: type, builtin: type) -> None:
    assert issubclass(cls, AlgotradingError) and issubclass(cls, builtin)


def bars(n: int = 60) -> pd.DataFrame:
    close = 100 + np.arange(n, dtype=float)
    return pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close},
                        index=pd.date_range("2024-01-01", periods=n, freq="B", name="dt"))


def test_a_notebook_catches_parameter_and_data_errors_with_the_base() -> None:
    with pytest.raises(AlgotradingError, match="slow_period"):
        backtest.run("sma", bars(), fast_period=10, slow_period="thirty")
    with pytest.raises(ParameterError, match="leverage"):
        backtest.run("sma", bars(), fraction=2.0)
    with pytest.raises(ParameterError, match="fast"):
        Param(5, int, ge=1).check("fast", 0)
    with pytest.raises(schema.DataError):
        backtest.run("sma", bars().iloc[::-1])
    with pytest.raises(AlgotradingError, match="bad symbol"):
        schema.check_symbol("../etc")


def test_a_failed_ingest_is_a_lake_error(tmp_path: pathlib.Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    frame = bars(3).reset_index().assign(sym="ABC", vol=1.0)
    frame["dt"] = frame["dt"].dt.strftime("%Y-%m-%d")

    def disk_full(self, key, data, atomic=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lake.LocalStore, "put", disk_full)
    with pytest.raises(LakeError, match="nothing in the lake changed") as caught:
        lake.write(frame, lake=str(tmp_path))
    assert caught.value.errno == 28


def test_a_job_that_did_not_complete_is_a_job_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "describe", lambda name, region=None: {
        "TrainingJobStatus": "Failed", "FailureReason": "out of memory"})
    with pytest.raises(JobError, match="out of memory"):
        jobs.wait(["sweep-0"], poll=0)
