"""Project hygiene: the conda and pip environments agree, and committed notebooks are clean
(parameters cell of literals first, no absolute paths, no huge outputs, no error outputs)."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from algotrading.pipeline import notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT)
ABSOLUTE = re.compile(r"(?<![\w.])(/(home|root|tmp|Users|work|private|var/folders)/|[A-Za-z]:\\\\)")
MAX_OUTPUT_BYTES = 2_000_000


def test_environment_yml_installs_this_package_with_the_test_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    requires = project["requires-python"]
    assert ">=3.11" in requires
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip_section == ["-e .[aws,test]"]
    extras = re.search(r"\[(.*)\]", pip_section[0])[1].split(",")
    assert set(extras) <= set(project["optional-dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[aws,test]"' in makefile  # make test installs what conda users get


def test_torch_is_pinned_to_a_range_2_13_satisfies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in deps if d.startswith("torch"))
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(torch.removeprefix("torch"))
    assert "2.13.0" in spec and "2.15.0" not in spec


def test_pipeline_order_is_data_then_models_then_strategies():
    names = [nb.as_posix() for nb in NOTEBOOKS]
    assert names[:2] == ["1_Data/Load_Hist_Data_Daily.ipynb", "1_Data/Explore_Hist_Data.ipynb"]
    stages = [n.split("/")[0] for n in names]
    assert stages == sorted(stages, key=["1_Data", "3_Models", "2_Strategies"].index)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_committed_notebook_hygiene(path):
    raw = (ROOT / path).read_text()
    nb = json.loads(raw)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), "first code cell must be tagged"
    for stmt in ast.parse("".join(first["source"])).body:  # literals only
        assert isinstance(stmt, ast.Assign), f"parameters cell: only assignments ({path})"
        ast.literal_eval(stmt.value)
    assert not ABSOLUTE.search(raw), f"absolute path in {path}: {ABSOLUTE.search(raw)[0]}"
    assert len(raw) < MAX_OUTPUT_BYTES
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    assert all(c.get("execution_count") for c in code), f"{path} is not executed: run `make notebooks`"
    assert "papermill" not in nb["metadata"]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
