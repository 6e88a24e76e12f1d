"""The package imports one way (ARCHITECTURE.md): import-linter's contracts ([tool.importlinter] in
pyproject.toml: layers, no cycles, a pure engine) are kept, no module imports another module's
private name, and no import cycle hides in a function-local import.

The one allowed exception is ALLOWED below, by name; nothing else may be added to it.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "algotrading"
# The single known exception: report.py takes write_atomic from pipeline.py. It goes when
# pipeline.py and report.py take the run folder from runs.py; then empty this set and drop the
# matching `ignore_imports` lines of pyproject.toml (import-linter fails on an ignore that no
# longer matches, and so does test_the_contracts_allow_only_the_known_exception).
ALLOWED: set[tuple[str, str]] = set()


def modules() -> dict[str, pathlib.Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for path in LIB.rglob("*.py"):
        parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def resolve(name: str) -> str | None:
    """The package module that `name` (a module or a name inside one) lives in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every algotrading import in `module`,
    top-level or inside functions, TYPE_CHECKING blocks included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] == "algotrading":
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in MODULES:  # a submodule: `from algotrading.backtest import kernel`
                        found.append((full, "", node.lineno))
                    else:
                        found.append((resolve(source) or source, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(resolve(a.name) or a.name, "", node.lineno) for a in node.names
                      if a.name.split(".")[0] == "algotrading"]
    return found


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_checked_sources_are_this_checkout() -> None:
    spec = importlib.util.find_spec("algotrading")
    assert spec is not None and pathlib.Path(spec.origin).resolve() == LIB / "__init__.py"


def test_no_module_imports_a_private_name_of_another() -> None:
    taken = [f"{m} line {line}: {target}.{name or ''}".rstrip(".")
             for m in MODULES for target, name, line in imports(m)
             if target != m and (private(name) or any(private(p) for p in target.split(".")))]
    assert taken == [], "make the name public (and document it) or move it next to its user"


def test_no_import_cycle_even_through_function_local_imports() -> None:
    edges = {m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    for a, b in ALLOWED:
        assert b in edges[a], f"{a} no longer imports {b}: remove it from ALLOWED"
        edges[a].discard(b)
    cycles = []
    for start in sorted(MODULES):  # depth-first search for a path back to `start`
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges[node]):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                    stack.clear()
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_the_contracts_allow_only_the_known_exception() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {c["id"] for c in config["contracts"]} >= {"layers", "acyclic", "pure-packages"}
    for contract in config["contracts"]:
        ignored = {tuple(s.strip() for s in i.split("->")) for i in contract.get("ignore_imports", [])}
        assert ignored <= ALLOWED, f"contract {contract['id']} ignores {ignored - ALLOWED}"


def test_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    from importlinter import configuration
    from importlinter.application import use_cases

    configuration.configure()
    kept = use_cases.lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None,
                                  no_logo=True)
    out = capsys.readouterr().out
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    assert kept and summary and int(summary[1]) >= 3 and summary[2] == "0", out
