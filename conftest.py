"""Test isolation for every tier: tests (and the notebooks nbval executes) use a throwaway lake
and run folder, never the user's data/lake; the public dataset comes from ../shared when present.

The notebook regression: nbval re-executes the committed notebooks in pipeline order, each one
followed by tests/test_recorded.py's check of what it recorded against the committed run. A
notebook that needs another's artifacts (`pipeline.NEEDS`) that this session has not produced
(`pytest 2_Strategies/Strategy_PPO.ipynb` alone) gets them first: the notebooks that leave them
are executed with their defaults into the scratch run folder. Under pytest-xdist
(`-n 2 --dist loadgroup`, as `make test` runs) all of that is one unit of work, so it keeps its
order on one worker while the other tests run on the other.
"""

import os
import tempfile
from pathlib import Path

import pytest

import algotrading  # noqa: F401  (first: pins the numeric kernels before numpy, scipy or torch load)

ROOT = Path(__file__).resolve().parent
SHARED_PUBLIC = ROOT.parent / "shared" / "data" / "stocks_history_target.h5"
GROUP = "notebooks"  # the xdist unit of nbval's cells and the recorded-results checks
RECORDED = "test_recorded_results_match_the_committed_run"  # tests/test_recorded.py, per notebook
_prepared: set[str] = set()  # notebooks whose prerequisites this session has seen to


def pytest_configure(config):
    scratch = Path(tempfile.mkdtemp(prefix="algotrading-tests-"))
    os.environ["ALGO_BACKEND"] = "local"
    os.environ["ALGO_LAKE"] = str(scratch / "lake")
    os.environ["ALGO_RUN_DIR"] = str(scratch / "run")
    os.environ.pop("ALGO_STACK", None)
    if "ALGO_PUBLIC_DATA" not in os.environ and SHARED_PUBLIC.is_file():
        os.environ["ALGO_PUBLIC_DATA"] = str(SHARED_PUBLIC)


def pytest_collectstart(collector):
    """nbval: compare text, not the HTML twin of each table (images are never compared)."""
    if getattr(collector, "skip_compare", None) is not None:
        collector.skip_compare += ("text/html",)


def notebook_of(item) -> str | None:
    """The notebook (its path under the project root) an nbval cell belongs to; None otherwise."""
    path = Path(str(item.fspath))
    if path.suffix != ".ipynb":
        return None
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return None


def pytest_itemcollected(item):
    """nbval's cells are marked `notebooks` too, so `-m "not notebooks"` leaves them out."""
    if notebook_of(item):
        item.add_marker(pytest.mark.notebooks)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """nbval's cells in pipeline order, each notebook followed by its recorded-results check, after
    every other test."""
    cells: dict[str, list] = {}
    for item in items:
        if nb := notebook_of(item):
            cells.setdefault(nb, []).append(item)
    if not cells:
        return
    recorded = {item.callspec.params["notebook"]: item for item in items
                if getattr(item, "originalname", None) == RECORDED}
    from algotrading import pipeline

    order = [nb.as_posix() for nb in pipeline.notebooks(ROOT)]
    tail = []
    for nb in sorted(cells, key=lambda n: order.index(n) if n in order else len(order)):
        tail += cells[nb] + ([recorded[nb]] if nb in recorded else [])
    moved = set(map(id, tail))
    items[:] = [i for i in items if id(i) not in moved] + tail


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: ignored when xdist is not loaded
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` that keeps the notebook group together: xdist 3.8 groups by renaming each
    marked item (`item._nodeid`), which pytest 9.2's nodes no longer read, so its groups fall
    apart. This scheduler groups by the node ids themselves: nbval's cells and the
    recorded-results checks are one unit of work (in collection order, on one worker); every
    other test is a unit of its own, as in loadgroup."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class NotebookGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if ".ipynb::" in nodeid or f"::{RECORDED}[" in nodeid:
                return GROUP
            return super()._split_scope(nodeid)

    return NotebookGroupScheduling(config, log)


@pytest.hookimpl(tryfirst=True)  # before nbval starts the notebook's kernel
def pytest_runtest_setup(item):
    """Before a notebook's first cell: the lake holds the default (sample) data, and whatever the
    notebook needs from notebooks this session has not run is produced with their defaults."""
    nb = notebook_of(item)
    if nb is None or nb in _prepared:
        return
    _prepared.add(nb)
    from algotrading import lake, pipeline, sources

    if not _prepared - {nb}:  # the session's first notebook: what Load_Hist_Data_Daily writes by default
        lake.write(sources.read("sample").frame)
    pipeline.prepare(nb, Path(os.environ["ALGO_RUN_DIR"]), ROOT)
