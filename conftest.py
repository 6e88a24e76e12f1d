"""Test isolation for every tier: tests (and the notebooks nbval executes) use a throwaway lake
and run folder, never the user's data/lake; the public dataset comes from ../shared when present."""

import os
import tempfile
from pathlib import Path

SHARED_PUBLIC = Path(__file__).resolve().parent.parent / "shared" / "data" / "stocks_history_target.h5"


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


def pytest_collection_modifyitems(session, config, items):
    """Committed notebooks are re-executed against a lake holding the default (sample) data."""
    if any(str(item.fspath).endswith(".ipynb") for item in items):
        from algotrading import lake, sources

        lake.write(sources.read("sample").frame)
