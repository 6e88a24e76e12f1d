"""The command line: ingest/query work, and every kind of bad input gives one clear line, a
non-zero exit and an untouched lake."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from algotrading.cli import main, parse_grid

from helpers import ADX_HEADER, adx_rows, snapshot, write_adx


@pytest.fixture
def lake_dir(tmp_path, monkeypatch):
    folder = tmp_path / "lake"
    monkeypatch.setenv("ALGO_LAKE", str(folder))
    assert main(["ingest", "sample"]) == 0
    return folder


def _bad(folder: Path, edit) -> Path:
    rows = adx_rows(6)
    lines = [ADX_HEADER] + [",".join(str(v) for v in row) for row in reversed(rows)]
    edit(lines)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "daily_adjusted_BAD.csv").write_text("\n".join(lines) + "\n")
    return folder


def _cell(lines, row, col, value):
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)


BAD_INPUTS = {
    "missing column": (lambda ls: ls.__setitem__(slice(None), [",".join(x.split(",")[:6])
                                                             for x in ls]), "missing column(s) volume"),
    "unparseable date": (lambda ls: _cell(ls, 3, 0, "2020/31/01"), "line 4: column dt: unparseable date"),
    "duplicate date": (lambda ls: ls.__setitem__(2, ls[3]), "duplicate date"),
    "NaN price": (lambda ls: _cell(ls, 2, 4, "NaN"),
                  "line 3 (2020-01-10): column close: not a finite number"),
    "high < low": (lambda ls: (_cell(ls, 4, 2, "90"), _cell(ls, 4, 3, "95")),
                   "line 5 (2020-01-08): high < low"),
    "negative volume": (lambda ls: _cell(ls, 5, 6, "-10"), "line 6 (2020-01-07): vol must be >= 0"),
    "empty file": (lambda ls: ls.clear(), "no data rows (empty file)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_adx_input_is_one_line_and_lake_is_unchanged(case, lake_dir, tmp_path, capsys):
    edit, expected = BAD_INPUTS[case]
    folder = _bad(tmp_path / "adx", edit)
    write_adx(folder, "GOOD", adx_rows(6))  # a good file beside it must not be written either
    before = snapshot(lake_dir)
    capsys.readouterr()
    assert main(["ingest", "adx", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("algotrading: error: ")
    assert "daily_adjusted_BAD.csv" in err and expected in err
    assert snapshot(lake_dir) == before


def test_wrong_file_type_is_one_line(lake_dir, tmp_path, capsys):
    blob = tmp_path / "adx" / "daily_adjusted_ZIP.csv"
    blob.parent.mkdir()
    blob.write_bytes(b"PK\x03\x04\x00\x00binary")
    before = snapshot(lake_dir)
    capsys.readouterr()
    assert main(["ingest", "adx", str(blob.parent)]) == 2
    assert "not a CSV text file" in capsys.readouterr().err
    assert main(["ingest", "public", str(blob)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert snapshot(lake_dir) == before


def test_query_formats(lake_dir, capsys):
    capsys.readouterr()
    sql = "SELECT sym, count(*) AS n FROM algo_data.hist_data_daily GROUP BY sym ORDER BY sym"
    assert main(["query", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"sym": "GSPC", "n": 5031}, {"sym": "IXIC", "n": 5031}]
    assert main(["query", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "sym,n\nGSPC,5031\nIXIC,5031\n"
    assert main(["query", "SELECT nope FROM algo_data.hist_data_daily"]) == 2
    assert "nope" in capsys.readouterr().err


def test_ingest_merges_reports_and_replaces_on_request(lake_dir, tmp_path, capsys):
    day = tmp_path / "one_new_day.csv"
    day.write_text("dt,sym,open,high,low,close,vol\n2019-01-02,GSPC,2476.96,2519.49,2467.47,"
                   "2510.03,3733160000\n")
    capsys.readouterr()
    assert main(["ingest", "csv", str(day)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"GSPC .* merged +1 +0 +5031 +0 +5032", out)
    assert "1 added, 0 changed, 5031 kept, 0 removed" in out
    assert main(["ingest", "csv", str(day), "--replace"]) == 0
    assert re.search(r"GSPC .* replaced +0 +0 +1 +5031 +1\n", capsys.readouterr().out)


def test_ingest_adx_redelivery_replaces_re_adjusted_history(lake_dir, tmp_path, capsys):
    write_adx(tmp_path / "v1", "ABC", adx_rows(6))
    assert main(["ingest", "adx", str(tmp_path / "v1")]) == 0
    rows = adx_rows(8)
    for row in rows:
        row[5] = row[4] * 0.25  # a new split re-adjusted every earlier bar
    write_adx(tmp_path / "v2", "ABC", rows)
    capsys.readouterr()
    assert main(["ingest", "adx", str(tmp_path / "v2")]) == 0
    out = capsys.readouterr().out
    assert "replaced (re-adjusted history)" in out
    assert "re-adjusted history replaced for: ABC" in out


def test_ingest_csv_columns_option_loads_a_yahoo_export(lake_dir, tmp_path, capsys):
    (tmp_path / "msft.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                                       "2020-01-02,158.78,160.73,158.33,160.62,155.04,22622100\n")
    capsys.readouterr()
    assert main(["ingest", "csv", str(tmp_path / "msft.csv"), "--columns",
                 "Date=dt,Open=open,High=high,Low=low,Close=close,Adj Close=adj_close,Volume=vol"]) == 0
    assert "MSFT" in capsys.readouterr().out
    assert (lake_dir / "hist_data_daily" / "MSFT.csv").is_file()


@pytest.mark.parametrize("body, message", [
    ("2020-01-02,../../../victim,10,11,9,10.5,100\n", "bad symbol '../../../victim'"),
    ("2020-01-02,GSPC,10,11,9,10.5,100\n2020-01-02,../hist_data_daily/GSPC,10,11,9,10.5,100\n",
     "line 3: column sym: bad symbol '../hist_data_daily/GSPC'"),
    ("2020-01-02," + "X" * 300 + ",10,11,9,10.5,100\n", "bad symbol 'XXXXXXXX"),
    ("2020-01-02,GOOD,10,11,9,10.5,100\n2020-01-03,,10,11,9,10.5,100\n", "bad symbol (empty)"),
])
def test_hostile_symbols_write_nothing_anywhere(lake_dir, tmp_path, capsys, body, message):
    (tmp_path / "victim.csv").write_text("precious\n")
    src = tmp_path / "in" / "x.csv"
    src.parent.mkdir()
    src.write_text("dt,sym,open,high,low,close,vol\n" + body)
    before, outside = snapshot(lake_dir), snapshot(tmp_path)
    capsys.readouterr()
    assert main(["ingest", "csv", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert snapshot(lake_dir) == before and snapshot(tmp_path) == outside


def test_adx_file_that_is_not_an_export_is_named(lake_dir, tmp_path, capsys):
    (tmp_path / "nomatch").mkdir()
    (tmp_path / "nomatch" / "AAA.csv").write_text("timestamp\n")
    capsys.readouterr()
    assert main(["ingest", "adx", str(tmp_path / "nomatch" / "AAA.csv")]) == 2
    assert "file name must be daily_adjusted_<SYM>.csv" in capsys.readouterr().err


@pytest.mark.parametrize("sql, message", [
    ("COPY (SELECT 1 AS dt) TO '{lake}/hist_data_daily/GSPC.csv'", "only SELECT statements"),
    ("COPY (SELECT 1) TO '{tmp}/out.csv'", "only SELECT statements"),
    ("ATTACH '{tmp}/new.db'", "only SELECT statements"),
    ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
    ("SELECT * FROM read_csv('{tmp}/secret.csv')", "Permission Error"),
    ("INSTALL httpfs", "only SELECT statements"),
    ("SET enable_external_access = true", "only SELECT statements"),
    ("SELECT 1; SELECT 2", "2 statements; give exactly one SELECT"),
    ("", "empty SQL"),
    ("   ", "empty SQL"),
])
def test_query_cannot_write_or_leave_the_lake(lake_dir, tmp_path, capsys, sql, message):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    before, outside = snapshot(lake_dir), snapshot(tmp_path)
    capsys.readouterr()
    assert main(["query", sql.format(lake=lake_dir, tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert snapshot(lake_dir) == before and snapshot(tmp_path) == outside
    assert main(["query", "SELECT count(*) AS n FROM algo_data.hist_data_daily", "--format",
                 "csv"]) == 0
    assert capsys.readouterr().out == "n\n10062\n"


def test_lake_option_and_missing_symbol_lists_the_lake(lake_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "elsewhere"))
    capsys.readouterr()
    sql = "SELECT count(*) AS n FROM algo_data.hist_data_daily"
    assert main(["query", sql, "--lake", str(lake_dir), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n10062\n"
    assert main(["backtest", "sma", "--symbol", "IXIC", "--lake", str(lake_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["symbol"] == "IXIC"
    assert main(["backtest", "sma", "--symbol", "INTC", "--lake", str(lake_dir)]) == 2
    assert "symbol INTC is not in the lake; it has: GSPC IXIC" in capsys.readouterr().err
    assert main(["sweep", "sma", "--symbol", "GSPC", "--lake", str(lake_dir), "--grid",
                 "fast_period=5,10", "--grid", "slow_period=30", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    env = {**os.environ, "ALGO_LAKE": str(tmp_path / "empty")}
    command = [sys.executable, "-m", "algotrading", "query", "SELECT 1 FROM algo_data.hist_data_daily"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "the lake is empty" in done.stderr


@pytest.mark.slow
def test_cold_backtest_imports_no_compiler_or_scientific_stack(lake_dir):
    """A cold `backtest --json` is its imports (pandas and DuckDB are its floor): it runs the
    Broker in Python, so numba, scipy, arch, matplotlib and torch stay unloaded."""
    script = ("import sys; from algotrading.cli import main\n"
              "assert main(['backtest', 'sma', '--symbol', 'GSPC', '--json']) == 0\n"
              "heavy = ('numba', 'llvmlite', 'scipy', 'arch', 'matplotlib', 'torch', 'sklearn')\n"
              "print(sorted({k.split('.')[0] for k in sys.modules} & set(heavy)))")
    env = {**os.environ, "ALGO_LAKE": str(lake_dir)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert json.loads(first)["metrics"]["final_value"] > 0  # the backtest ran
    assert last == "[]"


def test_parse_grid():
    assert parse_grid(["fast_period=5:15:5", "long_only=true,false"]) == {
        "fast_period": [5, 10, 15], "long_only": [True, False]}
    assert parse_grid(["stop_loss=0.01:0.03:0.01"])["stop_loss"] == pytest.approx([0.01, 0.02, 0.03])
    with pytest.raises(ValueError):
        parse_grid(["fast_period=10:5"])


def test_backtest_json_has_the_contract_keys(lake_dir, capsys):
    capsys.readouterr()
    assert main(["backtest", "sma", "--symbol", "GSPC", "--start", "2010-01-01", "--param", "size=10",
                 "--param", "fast_period=50", "--param", "slow_period=200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {"final_value", "pnl", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar",
            "trades_closed", "trades_open", "win_rate", "profit_factor", "sqn", "exposure"}
    assert keys <= set(out["metrics"]) and {"final_value", "sharpe", "max_drawdown"} <= set(out["benchmark"])
    assert out["params"] == {"fast_period": 50, "slow_period": 200, "size": 10, "start": "2010-01-01"}
    assert out["metrics"]["start"] == "2010-01-04"


def test_backtest_report_block_and_sweep(lake_dir, capsys):
    capsys.readouterr()
    args = ["backtest", "breakout", "--symbol", "IXIC", "--param", "period=50", "--param", "size=5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Trade Analysis Results" in out and "buy and hold" in out
    assert re.search(r"Total PnL:(.*?)]", out) and re.search(r"Sharpe Ratio:(.*?),", out)
    assert main(["sweep", "sma", "--symbol", "GSPC", "--grid", "fast_period=5:15:5", "--grid",
                 "slow_period=20:30:10", "--param", "size=10", "--format", "csv", "--sort", "sharpe"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("fast_period,slow_period,final_value") and len(table) == 1 + 6
    assert main(["backtest", "sma", "--symbol", "GSPC", "--param", "bogus=1"]) == 2
    assert "strategy 'sma' has no parameter 'bogus'; it takes fast_period" in capsys.readouterr().err


BAD_RUNS = [
    (["backtest", "sma", "--param", "fast_period=200", "--param", "slow_period=50"],
     "fast_period (200) must be below slow_period (50)"),
    (["sweep", "sma", "--grid", "fast_period=200:210", "--grid", "slow_period=50:60"],
     "no combination of the grid is valid"),
    (["backtest", "sma", "--param", "fast_period=0"], "fast_period=0 must be >= 1"),
    (["backtest", "sma", "--param", "fast_period=5.7"], "fast_period=5.7 must be a whole number"),
    (["backtest", "sma", "--param", "size=-10"], "size=-10 must be > 0"),
    (["backtest", "sma", "--param", "cash=0"], "cash=0 must be > 0"),
    (["backtest", "sma", "--param", "long_only=no"], "long_only='no' must be true or false"),
    (["backtest", "sma", "--param", "slow_period=100000"], "needs more bars"),
    (["backtest", "sma", "--param", "fraction=-1"], "fraction=-1 must be > 0"),
    (["backtest", "sma", "--param", "stop_loss=-0.5"], "stop_loss=-0.5 must be > 0"),
    (["backtest", "sma", "--param", "max_bars=0"], "max_bars=0 must be >= 1"),
    (["sweep", "sma", "--grid", "nope=1:3"], "strategy 'sma' has no parameter 'nope'; it takes "
     "fast_period, slow_period, long_only (or an engine setting: cash, size"),
    (["sweep", "sma", "--grid", "fast_period=5:6:0.25"], "fast_period=5.25 must be a whole number"),
    (["sweep", "sma", "--grid", "fast_period=5:10", "--top", "-2"], "top=-2"),
    (["sweep", "sma", "--grid", "fast_period=1:1e6", "--grid", "slow_period=1:1e6"],
     "1,000,000 values; the limit is 100,000"),
    (["sweep", "sma", "--grid", "fast_period=1:1000", "--grid", "slow_period=2:2000"],
     "combinations over"),
]


def test_bad_backtest_and_sweep_input_is_one_line_exit_2(lake_dir, capsys):
    capsys.readouterr()
    for args, message in BAD_RUNS:  # one lake for all cases: ingest is the slow part
        assert main([*args[:2], "--symbol", "GSPC", *args[2:]]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err, (args, captured.err)
        assert captured.err.count("\n") == 1 and captured.out == ""


def test_backtest_exports_trades_and_equity(lake_dir, tmp_path, capsys):
    trades, equity = tmp_path / "trades.csv", tmp_path / "equity.csv"
    assert main(["backtest", "sma", "--symbol", "GSPC", "--param", "fast_period=50", "--param",
                 "slow_period=200", "--trades", str(trades), "--equity", str(equity), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    table = pd.read_csv(trades, parse_dates=["entry_date", "exit_date"])
    assert len(table) == out["metrics"]["trades_closed"] + out["metrics"]["trades_open"]
    assert table["pnl"].sum() == pytest.approx(out["metrics"]["pnl"], rel=1e-9)
    curve = pd.read_csv(equity, index_col="dt", parse_dates=True)
    assert list(curve.columns) == ["equity", "position"]
    assert curve["equity"].iloc[-1] == pytest.approx(out["metrics"]["final_value"])
    assert out["metrics"]["gross_exposure"] > 0.5 and out["metrics"]["orders_rejected"] == 0


def test_ingest_refuses_an_unexplained_gap_in_one_line_and_accepts_or_corrects_it(lake_dir, tmp_path,
                                                                                 capsys):
    gap = tmp_path / "gap.csv"
    gap.write_text("dt,sym,open,high,low,close,vol\n2020-01-02,GAP,50,51,49,50,100\n"
                   "2020-01-03,GAP,25,26,24,25.5,100\n")
    capsys.readouterr()
    assert main(["ingest", "csv", str(gap)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "GAP 2020-01-03: open 25.00 is -50.0% from the previous close 50.00" in err
    assert main(["ingest", "csv", str(gap), "--jump", "0.6"]) == 0
    assert main(["ingest", "csv", str(gap), "--accept-jumps"]) == 0
    assert "accepted GAP 2020-01-03: open 25.00 is -50.0%" in capsys.readouterr().out
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("sym,date,factor,note\nGAP,2020-01-03,0.5,2-for-1 split\n")
    assert main(["ingest", "csv", str(gap), "--corrections", str(fixes), "--replace"]) == 0
    assert "corrected GAP before 2020-01-03: prices x 0.5 (1 rows) - 2-for-1 split" in \
        capsys.readouterr().out
    from algotrading import lake

    assert lake.read("GAP")["close"].iloc[0] == 25.0
    assert lake.provenance("GAP")["corrections"][0]["note"] == "2-for-1 split"


def test_main_freezes_what_was_imported_before_the_command(capsys):
    """A cold command's collections (and the one at exit) skip the objects of its imports."""
    import gc

    gc.unfreeze()
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
        assert gc.get_freeze_count() > 10_000  # pandas and numpy alone hold more
    finally:
        gc.unfreeze()
    assert "backtest" in capsys.readouterr().out
