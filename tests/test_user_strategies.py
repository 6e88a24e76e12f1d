"""A plain function is a strategy like the built-ins: backtested, swept over its own keyword names,
studied and plotted from Python, and run from the command line out of a file or a module, with the
same parameter checks and errors in Python terms (no CLI flags in a Python error)."""

from __future__ import annotations

import json
import sys
import textwrap

import matplotlib
import numpy as np
import pandas as pd
import pytest

from algotrading import backtest, metrics, schema, sources, strategies, study
from algotrading.cli import main
from algotrading.strategies import REQUIRED, from_function, get

matplotlib.use("Agg")

RSI = textwrap.dedent('''
    import pandas as pd

    LOADS = []  # one entry each time this file is executed
    LOADS.append(1)


    def rsi(prices, period=14, low=30, high=70):
        """Long when the RSI is oversold, flat when it is overbought, else hold."""
        change = prices["close"].diff()
        gain = change.clip(lower=0).ewm(alpha=1 / period, min_periods=period).mean()
        loss = (-change.clip(upper=0)).ewm(alpha=1 / period, min_periods=period).mean()
        value = 100 - 100 / (1 + gain / loss)
        signal = pd.Series(float("nan"), index=prices.index)
        signal[value < low] = 1.0
        signal[value > high] = 0.0
        return signal.ffill().fillna(0.0)


    NOT_A_FUNCTION = 3
''')
NAMESPACE: dict = {}
exec(RSI, NAMESPACE)  # the same function the file tests load
rsi = NAMESPACE["rsi"]


@pytest.fixture(scope="module")
def gspc() -> pd.DataFrame:
    return schema.to_prices(sources.read("sample").frame, "GSPC").iloc[-2000:]


def _same(row: pd.Series, m: dict) -> None:
    for key in metrics.KEYS:
        if m[key] is None:
            assert np.isnan(row[key]), key
        else:
            assert row[key] == pytest.approx(m[key], rel=1e-9, abs=1e-9), key


# -- Python ------------------------------------------------------------------------------------

def test_a_function_is_run_and_swept_over_its_own_keyword_names(gspc):
    r = backtest.run(rsi, gspc, period=10)
    assert r.params == {"period": 10} and r.metrics["trades_closed"] > 0
    table = backtest.sweep(rsi, gspc, {"period": range(5, 30, 5), "low": [25, 30]}, size=10)
    assert list(table.columns[:2]) == ["period", "low"] and len(table) == 10
    assert table["period"].dtype.kind == "i"
    for row in table.iloc[[0, 3, 9]].itertuples(index=False):
        m = backtest.run(rsi, gspc, period=row.period, low=row.low, size=10).metrics
        _same(pd.Series(row._asdict()), m)
    # engine settings sweep beside the function's own names; run_many equals run
    table = backtest.sweep(rsi, gspc, {"period": [10], "stop_loss": [0.05, 0.1]})
    _same(table.iloc[1], backtest.run(rsi, gspc, period=10, stop_loss=0.1).metrics)
    many = backtest.run_many(rsi, {"A": gspc, "B": gspc.iloc[-500:]}, period=7)
    _same(many.loc["B"], backtest.run(rsi, gspc.iloc[-500:], period=7).metrics)


def test_parameters_come_from_the_signature():
    strat = from_function(rsi)
    assert strat.name == "rsi" and list(strat.params) == ["period", "low", "high"]
    assert all(p.kind is int for p in strat.params.values()) and strat.defaults["period"] == 14
    assert strat.check({"period": 10.0, "high": np.int64(80)}) == {"period": 10, "low": 30, "high": 80}

    def typed(prices, window: int, low: float = 30, flag=False, name="x", level: float | None = None,
              model=None, **more):
        return np.zeros(len(prices))

    s = from_function(typed)
    kinds = {k: (p.kind, p.optional) for k, p in s.params.items()}
    assert kinds == {"window": (int, False), "low": (float, False), "flag": (bool, False),
                     "name": (str, False), "level": (float, True), "model": (object, True)}
    assert s.params["window"].default is REQUIRED and s.extra
    assert s.check({"window": 5, "low": 31, "flag": "true", "anything": [1]}) == {
        "window": 5, "low": 31.0, "flag": True, "name": "x", "level": None, "model": None,
        "anything": [1]}
    assert get(typed).name == "typed" and get("sma") is get("sma")


def _keyword_only(prices, *, period=5):
    return np.zeros(len(prices))


def test_keyword_only_parameters_work(gspc):
    assert backtest.run(_keyword_only, gspc, period=3).metrics["trades_closed"] == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda g: backtest.run(rsi, g, perod=10),
     "^rsi\\(\\) has no parameter 'perod' \\(did you mean 'period'\\?\\); it takes period, low, high$"),
    (lambda g: backtest.run(rsi, g, period="ten"), "^rsi\\(\\): parameter period='ten' must be a number"),
    (lambda g: backtest.run(rsi, g, period=2.5), "^rsi\\(\\): parameter period=2.5 must be a whole number"),
    (lambda g: backtest.run(rsi, g, low=None), "^rsi\\(\\): parameter low must not be empty"),
    (lambda g: backtest.sweep(rsi, g, {"perod": [5, 10]}),
     "^rsi\\(\\) has no parameter 'perod' \\(did you mean 'period'\\?\\); it takes period, low, "
     "high \\(or an engine setting: cash, size"),
    (lambda g: backtest.sweep(rsi, g, {"period": [5, 7.5]}),
     "^rsi\\(\\): parameter period=7.5 must be a whole"),
    (lambda g: backtest.sweep(rsi, g, {"period": []}), "the grid's 'period' has no values"),
    (lambda g: backtest.run(lambda prices, window: prices["close"] * 0, g),
     "needs a value for 'window' \\(no default\\)"),
    (lambda g: backtest.run(lambda prices, cash=1: prices["close"] * 0, g),
     "parameter 'cash' is the name of an engine setting"),
    (lambda g: backtest.run(lambda prices: np.ones(3), g), "gave \\(3,\\) positions for 2000 bars"),
    (lambda g: backtest.run(lambda prices: "long", g), "returned str, not positions"),
    (lambda g: backtest.run(lambda: 1, g), "must take the prices as its first argument"),
])
def test_errors_name_the_function_and_parameter_in_python_terms(gspc, call, message):
    with pytest.raises(ValueError, match=message) as caught:
        call(gspc)
    assert "--" not in str(caught.value)


def test_specs_load_a_file_once_per_version_and_modules(tmp_path, monkeypatch):
    path = tmp_path / "mine.py"
    path.write_text(RSI)
    strat = get(f"{path}:rsi")
    assert strat.name == "rsi" and list(strat.params) == ["period", "low", "high"]
    module = sys.modules[strat.function.__module__]
    get(f"{path}:rsi")
    assert module.LOADS == [1]  # not executed again while the file is unchanged
    monkeypatch.chdir(tmp_path)
    assert get("mine.py:rsi").function is strat.function
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mine", raising=False)
    assert get("mine:rsi").params == strat.params
    sys.modules.pop("mine", None)
    # a Strategy declared in a file is used as it is
    (tmp_path / "declared.py").write_text("from algotrading.strategies import get\nMINE = get('sma')\n")
    assert get("declared.py:MINE") is get("sma")


@pytest.mark.parametrize(("spec", "message"), [
    ("missing.py:rsi", "strategy 'missing.py:rsi': no file missing.py"),
    ("mine.py:rsj", "strategy 'mine.py:rsj': mine.py defines no 'rsj' (it defines rsi)"),
    ("mine.py:NOT_A_FUNCTION", "NOT_A_FUNCTION is a int, not a function"),
    ("mine.py:", "want path/to/file.py:function or package.module:function"),
    ("no_such_module_xyz:rsi", "no module named 'no_such_module_xyz'"),
    ("broken.py:f", "running broken.py raised ZeroDivisionError"),
    ("mine.py", "unknown strategy 'mine.py'"),
])
def test_bad_specs_are_one_clear_error(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(RSI)
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ValueError) as caught:
        get(spec)
    assert message in str(caught.value)


def test_study_names_the_function_and_reads_well(gspc):
    s = study.Study(rsi, gspc, "2014-12-31", "2016-12-30", symbol="GSPC",
                    costs={"commission_bps": 5})
    assert s.name == "rsi"
    s.test_run()  # before any choice: the strategy's defaults, said to be set by hand
    assert s.conclusion().startswith("On the test period (2017-01-03..2018-12-31) rsi with its "
                                     "defaults (period=14, low=30, high=70) and costs returned ")
    choice = s.choose({"period": [5, 10, 20], "low": [25, 30]})
    assert set(choice.chosen) == {"period", "low"} and all(type(v) is int for v in choice.chosen.values())
    s.test_run()
    first = s.conclusion().splitlines()[0]
    assert first.startswith("On the test period (2017-01-03..2018-12-31) rsi with "
                            f"period={choice.chosen['period']}, low={choice.chosen['low']} "
                            "(chosen on train by sharpe) and costs returned ")
    assert "Costs took" in first and f"among {len(choice.train)} combinations" in s.conclusion()
    ruled = study.Study(rsi, gspc, "2014-12-31", "2016-12-30", rule={"period": 10})
    ruled.test_run()
    assert " rsi with period=10 (set by hand) and no costs returned " in ruled.conclusion()
    assert "Costs took" not in ruled.conclusion()
    assert study.Study(lambda p: p["close"] * 0, gspc, "2014-12-31", "2016-12-30").name == "strategy"


def test_result_plot_draws_itself(gspc):
    fig = backtest.run("sma", gspc, fast_period=20, slow_period=50).plot()
    assert len(fig.axes) == 3 and fig.axes[0].get_lines()
    fig = backtest.run(rsi, gspc, period=10, start="2016-01-04").plot(title="rsi", start="2017-01-01")
    assert fig.axes[0].get_title() == "rsi"
    assert backtest.run(rsi, gspc).prices.index.equals(gspc.index)
    with pytest.raises(ValueError, match="for a portfolio"):
        backtest.run_portfolio("sma", {"A": gspc, "B": gspc}).plot()
    matplotlib.pyplot.close("all")


# -- the command line --------------------------------------------------------------------------

@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(RSI)
    assert main(["ingest", "sample"]) == 0
    return tmp_path


def test_cli_backtests_sweeps_and_replays_a_user_function(lake, capsys):
    from algotrading import query

    prices = query.load_prices("GSPC")
    capsys.readouterr()
    assert main(["backtest", "mine.py:rsi", "--symbol", "GSPC", "--param", "period=10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "mine.py:rsi" and out["params"] == {"period": 10}
    assert out["metrics"]["final_value"] == pytest.approx(
        backtest.run(rsi, prices, period=10).metrics["final_value"], rel=1e-12)

    assert main(["sweep", "mine.py:rsi", "--symbol", "GSPC", "--grid", "period=5:30:5", "--grid",
                 "low=25,30", "--format", "csv"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(table) == 12 and list(table.columns[:2]) == ["period", "low"]
    row = table[(table["period"] == 20) & (table["low"] == 25)].iloc[0]
    assert row["final_value"] == pytest.approx(
        backtest.run(rsi, prices, period=20, low=25).metrics["final_value"], rel=1e-9)

    journal = str(lake / "live.db")
    assert main(["live", "replay", f"{lake / 'mine.py'}:rsi", "--symbol", "GSPC", "--from",
                 "2018-01-02", "--journal", journal, "--param", "period=5", "--param", "size=30",
                 "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    result = backtest.run(rsi, prices, period=5, size=30, start="2018-01-02")
    assert state["equity"] == pytest.approx(result.metrics["final_value"], rel=1e-12)


BAD = [
    (["backtest", "mine.py:rsi", "--param", "perod=10"],
     "algotrading: error: rsi() has no parameter 'perod' (did you mean 'period'?); it takes period, "
     "low, high\n"),
    (["backtest", "mine.py:rsi", "--param", "period=2.5"], "parameter period=2.5 must be a whole number"),
    (["sweep", "mine.py:rsi", "--grid", "perod=5:10"], "rsi() has no parameter 'perod'"),
    (["backtest", "nope.py:rsi"], "no file nope.py"),
    (["backtest", "mine.py:rsj"], "mine.py defines no 'rsj' (it defines rsi)"),
    (["backtest", "mine.py"], "unknown strategy 'mine.py'"),
    (["sweep", "mine.py:rsi", "--grid", "period=5:10", "--backend", "aws"], "sweep it locally"),
    (["live", "replay", "mine.py:rsi", "--from", "2018-01-02", "--param", "perod=3"],
     "rsi() has no parameter 'perod'"),
]


def test_cli_user_strategy_errors_are_one_line_exit_2(lake, capsys):
    capsys.readouterr()
    for args, message in BAD:
        assert main([*args, "--symbol", "GSPC"]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err, (args, captured.err)
        assert captured.err.count("\n") == 1 and captured.out == ""


def test_cli_help_says_loading_a_file_executes_it(capsys):
    with pytest.raises(SystemExit):
        main(["backtest", "--help"])
    assert "executes that file" in " ".join(capsys.readouterr().out.split())
    assert "executes" in strategies.load.__doc__
