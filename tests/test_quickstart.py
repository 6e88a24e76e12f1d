"""docs/quickstart.md runs as written: its Python blocks execute in order in one namespace against a
throwaway lake holding the sample data, a block starting `# NAME.py` is saved as that file, every
`text` block is what the Python block before it prints, and every `algotrading` line of its bash
blocks exits 0."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import matplotlib
import pytest

from algotrading.cli import main

pytestmark = pytest.mark.slow  # runs the docs end to end (ingest, sweeps, the CLI): the full tier

matplotlib.use("Agg")

QUICKSTART = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(QUICKSTART.read_text())]


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_quickstart_has_the_promised_steps():
    kinds = [k for k, _ in blocks()]
    assert set(kinds) == {"python", "text", "bash"} and kinds.count("python") >= 6
    code = "\n".join(body for kind, body in blocks() if kind == "python")
    for step in ("query.load_prices(", "backtest.run(", ".plot()", "backtest.sweep(", "def rsi(",
                 "study.Study("):
        assert step in code, step
    strategy = next(body for kind, body in blocks() if body.startswith("# my_strategies.py"))
    assert len(strategy.strip().splitlines()) <= 16  # your own strategy in about 15 lines


def test_every_block_runs_and_shows_what_it_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ALGO_JOURNAL", str(tmp_path / "journal.db"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_strategies", raising=False)
    assert main(["ingest", "sample"]) == 0
    namespace: dict = {"__name__": "quickstart"}
    printed, shell = "", []
    try:
        for kind, body in blocks():
            if kind == "python" and re.match(r"# (\w+\.py)\n", body):
                (tmp_path / body.split()[1]).write_text(body)
            elif kind == "python":
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(body, str(QUICKSTART), "exec"), namespace)
                printed = out.getvalue()
            elif kind == "text":
                assert _words(body) in _words(printed), (body, printed)
            elif kind == "bash":
                for line in body.strip().splitlines():
                    command = shlex.split(line)
                    assert command[0].endswith("algotrading"), line
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        assert main(command[1:]) == 0, line
                    shell.append(out.getvalue())
    finally:
        sys.modules.pop("my_strategies", None)
        matplotlib.pyplot.close("all")
    # a number or two: the SMA run, the user strategy's sweep, its study, and the CLI's sweep
    assert namespace["result"].metrics["final_value"] == pytest.approx(149_453, abs=1)
    assert (tmp_path / "sma.png").stat().st_size > 10_000
    best = namespace["table"].iloc[0]
    assert (best["period"], best["low"]) == (25, 30)
    assert namespace["rsi_study"].conclusion().startswith("On the test period (2017-01-03..2018-12-31) rsi "
                                                          "with period=25, low=30 (chosen on train")
    assert len(shell) == 4 and "ingested" in shell[0] and "final_value" in shell[1]
    # the CLI's --start trades from 2010 with the earlier bars as the RSI's warm-up, as section 5
    # would with every bar loaded and `start=` (its own prices start cold in 2010)
    from algotrading import backtest, query

    warm = backtest.sweep(namespace["rsi"], query.load_prices("GSPC"),
                          {"period": range(5, 30, 5), "low": [20, 25, 30]}, sort="sharpe",
                          start="2010-01-01").iloc[0]
    top = shell[2].splitlines()[1].split()
    assert top[:2] == [str(warm["period"]), str(int(warm["low"]))]
    assert float(top[6]) == pytest.approx(warm["sharpe"], abs=1e-6)
    assert "last_bar: 2018-12-31" in shell[3]


def test_the_readme_quickstart_runs(tmp_path, monkeypatch):
    """The README's first screen after the two commands: its Python block runs as written."""
    readme = (QUICKSTART.parents[1] / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    code = [body for kind, body in (m.groups() for m in FENCE.finditer(section)) if kind == "python"]
    assert len(code) == 1
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample"]) == 0
    namespace: dict = {"__name__": "readme"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code[0], "README.md", "exec"), namespace)
    finally:
        matplotlib.pyplot.close("all")
    assert namespace["result"].metrics["final_value"] == pytest.approx(149_453, abs=1)
    assert list(namespace["table"].columns[:2]) == ["fast_period", "slow_period"]
    assert len(namespace["table"]) == 19  # 5 fast x 4 slow but fast 50 with slow 50
    mine = namespace["backtest"].run(namespace["momentum"], namespace["prices"], lookback=120)
    assert mine.metrics["trades_closed"] > 0 and "buy and hold" in out.getvalue()
