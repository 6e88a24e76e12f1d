"""Benchmark our backtest engine against vectorbt, backtesting.py and backtrader (`make bench`).

Same bars, same rules, same runs for every engine (see peers/__init__.py for the rules and each
peer module for how its conventions were aligned with ours). Cases:

1. single: one SMA 10/30 long-only backtest, 10 shares, on the last 2,000 GSPC daily bars;
2. sweeps: fast 5..50 x slow 20..200 step 5 with fast < slow (1,590 combinations) on INTC
   (1,258 public bars) and on all 5,031 GSPC bars, each three ways: 10 shares (fixed), all-in
   (our default; vectorbt size=inf), all-in with a 5 % stop loss and 10 % take profit;
2b. the other fused sweeps on the same bars, ours alone: EMA crossover on the same grid
   (long-only, all-in), breakout over periods 5..254 (all-in);
3. universe: 500 seeded synthetic symbols x 5,000 bars, one SMA 10/30 backtest per symbol;
4. cold start: fresh processes (numba cache warm, as after `make run`): the `backtest --json`
   CLI on INTC, and the first sweep call.

Our sweeps and run_many are timed at all cores and again at one core (this thread pinned to one
CPU with os.sched_setaffinity, numba's threads set to 1); vectorbt (whose numba functions are not
parallel) is timed at one core in those cases. Beside each sweep, the fused lower bound (bench/bound.py: the
least work an all-in SMA sweep needs, final values only) at both, and the gap to it.

Each engine's first call is timed apart from its warm calls (best of N, time.perf_counter).
vectorbt compiles its numba kernels on first use; numba's on-disk cache is pointed at a fresh
temporary folder, so that compile is measured on every run (with a warm cache it is shorter).
Engines too slow for the full case run a subset, and the table says so and extrapolates linearly.
Every engine's final value and closed/open trade counts are checked against ours; the exit status
is 1 if any disagree. Speed targets print PASS/FAIL but never fail the run (timings are noisy).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import bound
import inputs
import numpy as np
import pandas as pd
from peers import CASH, COLUMNS, Outcome

FAST, SLOW = 10, 30
SIZE = 10
SWEEP_FAST = range(5, 51)
SWEEP_SLOW = range(20, 201, 5)
SYMBOLS, BARS = 500, 5000
SUBSET_COMBOS = 20  # backtrader's sweep: this many combinations, extrapolated to the grid
SUBSET_SYMBOLS = 10  # backtesting.py and backtrader in the universe case
TOLERANCE = 1e-6  # money, on final values of ~100,000

T = TypeVar("T")

# How each peer was aligned with our rules (details in peers/*.py); none is a tolerated difference.
CONVENTIONS = (
    "fills: next bar's open everywhere (vectorbt: signals shifted one bar, price=open; "
    "backtesting.py: trade_on_close=False; backtrader: plain Market orders)",
    "size: 10 shares (vectorbt size_type='amount'; backtesting.py integer size = units); "
    "costs 0; cash 100,000",
    "warm-up: first decision on the first bar with SMA(slow); backtesting.py would start one bar "
    "later, so its strategy's only self.I indicator is a NaN-free sign(SMA fast - SMA slow)",
    "end: an open position is marked to the last close and counted as 1 open trade "
    "(backtesting.py finalize_trades=False: '# Trades' = closed, strategy.trades = open)",
    "backtesting.py's optimize returns one number per combination: its sweep is checked on final "
    "value only (its trade counts are checked in cases 1 and 3)",
)


@dataclass
class Row:
    case: str
    engine: str
    first: float | None  # seconds; None where only one timed call was made
    warm: float  # seconds for the whole case (extrapolated when `runs` says so)
    runs: str
    check: str
    agree: bool = True
    cores: str = "all"  # "all", or "1": pinned to one CPU with one numba thread (`one_core`)


@dataclass
class Engines:
    ours: ModuleType  # algotrading.backtest
    vectorbt: ModuleType | None  # peers.with_* modules, None when not importable
    backtesting: ModuleType | None
    backtrader: ModuleType | None


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """This thread (and the threads it starts) on one CPU, numba's parallel loops on one thread."""
    import numba

    cpus, threads = os.sched_getaffinity(0), numba.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)
        os.sched_setaffinity(0, cpus)


def measure(fn: Callable[[], T], repeats: int) -> tuple[T, float, float]:
    """(result, first call seconds, best of `repeats` warm calls)."""
    out, first = timed(fn)
    return out, first, min(timed(fn)[1] for _ in range(repeats))


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, what: str,
            columns: list[str] = COLUMNS) -> tuple[str, bool]:
    """Final values within TOLERANCE and equal trade counts, row by row on ours' index."""
    theirs = theirs.reindex(ours.index)
    gap = np.abs(ours["final_value"].to_numpy() - theirs["final_value"].to_numpy())
    bad = ~(gap <= TOLERANCE)  # a missing row (NaN) is a disagreement too
    for col in columns[1:]:
        bad = bad | (ours[col].to_numpy() != theirs[col].to_numpy())
    checked = "final value" + (", closed and open trades" if len(columns) > 1 else "")
    if not bad.any():
        return f"agree: {len(ours)}/{len(ours)} {what} ({checked})", True
    i = int(np.flatnonzero(bad)[0])
    first = (f"{ours.index[i]}: ours {tuple(ours.iloc[i][columns])}, "
             f"peer {tuple(theirs.iloc[i][columns])}")
    return f"DISAGREE: {int(bad.sum())}/{len(ours)} {what} differ, first {first}", False


def outcome_frame(rows: list[Outcome], index: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(rows, index=index, columns=COLUMNS)


def load_peer(module: str, label: str, imports: dict[str, float]) -> ModuleType | None:
    """Import peers.<module>, recording the import time; None (with a note) if unavailable."""
    try:
        peer, seconds = timed(lambda: importlib.import_module(f"peers.{module}"))
    except ImportError as err:
        print(f"skip {label}: not importable ({err}); `pip install -e '.[bench]'` adds it")
        return None
    imports[label] = seconds
    return peer


def main() -> int:
    os.environ["TQDM_DISABLE"] = "1"  # backtesting.py draws progress bars per run
    with tempfile.TemporaryDirectory(prefix="bench-numba-") as numba_cache:
        os.environ["NUMBA_CACHE_DIR"] = numba_cache  # read when numba is first imported
        imports: dict[str, float] = {}
        ours, imports["ours (algotrading.backtest)"] = timed(
            lambda: importlib.import_module("algotrading.backtest"))
        engines = Engines(ours, load_peer("with_vectorbt", "vectorbt", imports),
                          load_peer("with_backtesting", "backtesting.py", imports),
                          load_peer("with_backtrader", "backtrader", imports))
        prices = inputs.gspc()
        data = {"GSPC": inputs.gspc(None)}
        intc = inputs.intc()
        if intc is None:
            print(f"skip INTC: the public dataset is not at {inputs.PUBLIC}")
        else:
            data = {"INTC": intc, **data}
        rows = case_single(engines, prices)
        for name, bars in data.items():
            rows += case_sweep(engines, bars, name, peers=name == next(iter(data)))
            rows += case_other_sweeps(engines, bars, name)
        rows += case_universe(engines, inputs.universe(SYMBOLS, BARS))
    rows += case_cold(intc)
    report(rows, imports)
    return 0 if all(r.agree for r in rows) else 1


def case_single(e: Engines, prices: pd.DataFrame) -> list[Row]:
    """Case 1: one backtest on the GSPC bars."""
    backtest, vbt, btpy, btr = e.ours, e.vectorbt, e.backtesting, e.backtrader
    rows: list[Row] = []
    case = f"1 single: SMA {FAST}/{SLOW}, {len(prices)} GSPC bars"
    one = pd.Index(["GSPC"])

    def ours_single() -> pd.DataFrame:
        m = backtest.run("sma", prices, fast_period=FAST, slow_period=SLOW, size=SIZE,
                         long_only=True).metrics
        return outcome_frame([Outcome(m["final_value"], m["trades_closed"], m["trades_open"])],
                             one)

    mine, first, warm = measure(ours_single, 20)
    m = mine.iloc[0]
    rows.append(Row(case, "ours", first, warm, "best of 20",
                    f"final {m.final_value:,.2f}, trades {m.trades_closed:.0f} closed + "
                    f"{m.trades_open:.0f} open"))
    if vbt:
        theirs, first, warm = measure(lambda: vbt.run(prices["close"], prices["open"], FAST, SLOW,
                                                      SIZE, one), 10)
        rows.append(Row(case, "vectorbt", first, warm, "best of 10",
                        *compare(mine, theirs, "run")))
    if btpy:
        bars = btpy.bars(prices)
        theirs, first, warm = measure(
            lambda: outcome_frame([btpy.run(bars, FAST, SLOW, SIZE)], one), 5)
        rows.append(Row(case, "backtesting.py", first, warm, "best of 5",
                        *compare(mine, theirs, "run")))
    if btr:
        theirs, first, warm = measure(
            lambda: outcome_frame([btr.run(prices, FAST, SLOW, SIZE)], one), 3)
        rows.append(Row(case, "backtrader", first, warm, "best of 3",
                        *compare(mine, theirs, "run")))
    return rows


SWEEPS = {  # mode -> (our parameters, vectorbt's size and stops)
    "10 shares": ({"size": SIZE}, {"size": SIZE}),
    "all-in": ({}, {"size": np.inf}),
    "all-in, stop 5 % / target 10 %": ({"stop_loss": 0.05, "take_profit": 0.10},
                                       {"size": np.inf, "sl_stop": 0.05, "tp_stop": 0.10}),
}


def case_sweep(e: Engines, prices: pd.DataFrame, name: str, peers: bool) -> list[Row]:
    """Case 2: the SMA grid on one symbol, fixed size, all-in and with stops; backtesting.py and
    backtrader (slow) only on the fixed-size grid of the first symbol (`peers`)."""
    backtest, vbt, btpy, btr = e.ours, e.vectorbt, e.backtesting, e.backtrader
    rows: list[Row] = []
    combos = [(f, s) for f in SWEEP_FAST for s in SWEEP_SLOW if f < s]
    grid = pd.MultiIndex.from_tuples(combos, names=["fast_period", "slow_period"])
    ties: pd.Index | None = None  # combos where peers round a tie between the averages
    for mode, (params, theirs_params) in SWEEPS.items():
        case = (f"2 sweep {name} {len(prices)} bars, {len(combos)} combos, {mode}")

        def ours_sweep(params: dict = params) -> pd.DataFrame:
            return backtest.sweep("sma", prices, {"fast_period": SWEEP_FAST,
                                                  "slow_period": SWEEP_SLOW},
                                  long_only=True, **params)

        table, first, warm = measure(ours_sweep, 5)  # the sweep alone; aligned to the peers after
        mine = table.set_index(["fast_period", "slow_period"]).reindex(grid)[COLUMNS]
        rows.append(Row(case, "ours", first, warm, "best of 5", f"{len(mine)} rows"))
        with one_core():
            _, first, warm = measure(ours_sweep, 5)
        rows.append(Row(case, "ours", first, warm, "best of 5", f"{len(mine)} rows", cores="1"))
        rows += bound_rows(case, prices, combos, mine if mode == "all-in" else None)
        peer_rows: list[tuple[Row, pd.DataFrame, list[str]]] = []
        if vbt:
            with one_core():
                theirs, first, warm = measure(
                    lambda p=theirs_params: vbt.run(prices["close"], prices["open"],
                                                    [f for f, _ in combos], [s for _, s in combos],
                                                    columns=grid, high=prices["high"],
                                                    low=prices["low"], **p), 3)
            check, agree = compare(mine, theirs, "combos")
            if "sl_stop" in theirs_params and not agree:  # a documented convention difference
                check, agree = check.replace("DISAGREE", "differ (stops checked on the entry "
                                             "bar by us, from the next bar by vectorbt)"), True
            rows.append(Row(case, "vectorbt", first, warm,
                            f"best of 3, one {len(grid)}-column Portfolio", check, agree,
                            cores="1"))
            peer_rows.append((rows[-1], theirs, COLUMNS))
        if peers and "size" in params and btpy:
            heatmap, seconds = timed(lambda: btpy.sweep(btpy.bars(prices), SWEEP_FAST, SWEEP_SLOW,
                                                        SIZE))
            theirs = heatmap.rename("final_value").to_frame()
            rows.append(Row(case, "backtesting.py", None, seconds,
                            f"1 call of Backtest.optimize ({os.cpu_count()} processes)",
                            *compare(mine, theirs, "combos", ["final_value"])))
            peer_rows.append((rows[-1], theirs, ["final_value"]))
        wrong = [differing(mine, theirs, cols) for row, theirs, cols in peer_rows
                 if not row.agree]
        if peers and "size" in params and btr:
            # backtrader sums the averages exactly, as we do: it referees the combos where a
            # peer's rolling mean rounds an exact tie between the two averages to one side
            pick = grid[np.linspace(0, len(grid) - 1, SUBSET_COMBOS).round().astype(int)]
            disputed = functools.reduce(pd.Index.union, wrong, pd.Index([]))
            checked = pick.union(disputed[:30]) if len(disputed) else pick
            theirs, seconds = timed(lambda checked=checked: outcome_frame(
                [btr.run(prices, f, s, SIZE) for f, s in checked], checked))
            rows.append(Row(case, "backtrader", None, seconds * len(grid) / len(checked),
                            f"{len(checked)} combos in {seconds:.1f} s ({len(disputed)} disputed "
                            f"by the other peers), extrapolated to {len(grid)}",
                            *compare(mine.loc[checked], theirs, "combos checked")))
            if rows[-1].agree and len(disputed) and len(disputed) <= 30:
                ties = disputed
        for row, bad in zip([r for r, _, _ in peer_rows if not r.agree], wrong, strict=True):
            if ties is not None and bad.isin(ties).all():
                row.check = (f"agree on {len(mine) - len(bad)}/{len(mine)}; the other {len(bad)} "
                             "are exact ties of the two averages that the peer's rolling mean "
                             "rounds to one side (backtrader, summing exactly like us, agrees "
                             "with ours on them)")
                row.agree = True
    return rows


OTHER_SWEEPS = {  # label -> (strategy, grid, fixed parameters)
    "EMA 1,590 combos, long-only": ("ema", {"fast_period": SWEEP_FAST,
                                            "slow_period": SWEEP_SLOW}, {"long_only": True}),
    "breakout 250 periods": ("breakout", {"period": range(5, 255)}, {}),
}


def case_other_sweeps(e: Engines, prices: pd.DataFrame, name: str) -> list[Row]:
    """Case 2b: the other fused sweeps (EMA crossover, breakout) on one symbol, ours alone (the
    peers here run the SMA rules only)."""
    rows: list[Row] = []
    for label, (strategy, grid, params) in OTHER_SWEEPS.items():
        case = f"2b other sweeps: {name} {len(prices)} bars, {label}, all-in"
        for cores in ("all", "1"):
            with one_core() if cores == "1" else contextlib.nullcontext():
                table, first, warm = measure(
                    lambda s=strategy, g=grid, p=params: e.ours.sweep(s, prices, g, **p), 5)
            rows.append(Row(case, "ours", first, warm, "best of 5", f"{len(table)} rows",
                            cores=cores))
    return rows


def bound_rows(case: str, prices: pd.DataFrame, combos: list[tuple[int, int]],
               mine: pd.DataFrame | None) -> list[Row]:
    """The fused lower bound on the same grid at all cores and at one core; its final values are
    checked against ours where the rules are the same (all-in, long-only, no stops: `mine`)."""
    o, c = prices["open"].to_numpy(float), prices["close"].to_numpy(float)
    fast = np.array([f for f, _ in combos])
    slow = np.array([s for _, s in combos])
    rows = []
    for cores in ("all", "1"):
        with one_core() if cores == "1" else contextlib.nullcontext():
            values, first, warm = measure(lambda: bound.run_sweep(o, c, fast, slow, CASH), 5)
        check = "final values only (the least work; not our rules' metrics)"
        if mine is not None:
            same = np.abs(values[:, 0] - mine["final_value"].to_numpy()) <= TOLERANCE
            check = (f"final values agree with ours on {int(same.sum())}/{len(same)} (exact ties "
                     "of the averages, which it does not sum exactly, aside)")
        rows.append(Row(case, "bound", first, warm, "best of 5", check, cores=cores))
    return rows


def differing(ours: pd.DataFrame, theirs: pd.DataFrame, columns: list[str]) -> pd.Index:
    """The rows of `ours` where `theirs` has another final value or trade count."""
    theirs = theirs.reindex(ours.index)
    bad = ~(np.abs(ours["final_value"].to_numpy() - theirs["final_value"].to_numpy())
            <= TOLERANCE)
    for col in columns[1:]:
        bad |= ours[col].to_numpy() != theirs[col].to_numpy()
    return ours.index[bad]


COLD_SWEEP = """
import time
start = time.perf_counter()
from algotrading import backtest, schema, sources
prices = schema.to_prices(sources.read("sample", symbols=["GSPC"]).frame, "GSPC")
ready = time.perf_counter()
backtest.sweep("sma", prices, {"fast_period": range(5, 51), "slow_period": range(20, 201, 5)})
print(time.perf_counter() - ready, ready - start)
"""


def case_cold(intc: pd.DataFrame | None) -> list[Row]:
    """Case 4: fresh processes with the default (warm) numba cache: the CLI's `backtest --json`
    end to end (interpreter start, imports, DuckDB query, run, JSON), and the first sweep call."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    subprocess.run([sys.executable, "-c", COLD_SWEEP], env=env, check=True,
                   capture_output=True)  # warms the cache, as `make run` does
    sweeps = [subprocess.run([sys.executable, "-c", COLD_SWEEP], env=env, check=True,
                             capture_output=True, text=True).stdout.split() for _ in range(3)]
    call = min(float(s[0]) for s in sweeps)
    rows = [Row("4 cold: first sweep call in a fresh process (1,590 combos, 5,031 bars)", "ours",
                None, call, "best of 3 processes",
                f"imports and data before it: {min(float(s[1]) for s in sweeps):.2f} s")]
    if intc is None:
        return rows
    cli = Path(sys.executable).with_name("algotrading")
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as lake:
        env["ALGO_LAKE"] = lake
        subprocess.run([str(cli), "ingest", "public", str(inputs.PUBLIC), "--symbols", "INTC"],
                       env=env, check=True, capture_output=True)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            subprocess.run([str(cli), "backtest", "sma", "--symbol", "INTC", "--json"], env=env,
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    rows.append(Row("4 cold: algotrading backtest sma --symbol INTC --json", "ours", None,
                    min(times[1:]), "best of 3 processes (after one warm-up)",
                    "interpreter start to exit"))
    return rows


def case_universe(e: Engines, universe: dict[str, pd.DataFrame]) -> list[Row]:
    """Case 3: one backtest per synthetic symbol."""
    backtest, vbt, btpy, btr = e.ours, e.vectorbt, e.backtesting, e.backtrader
    rows: list[Row] = []
    names = pd.Index(list(universe))
    case = f"3 universe: {SYMBOLS} symbols x {BARS} bars, SMA {FAST}/{SLOW} each"

    def ours_universe() -> pd.DataFrame:
        out = []
        for frame in universe.values():
            m = backtest.run("sma", frame, fast_period=FAST, slow_period=SLOW, size=SIZE,
                             long_only=True).metrics
            out.append(Outcome(m["final_value"], m["trades_closed"], m["trades_open"]))
        return outcome_frame(out, names)

    mine, first, warm = measure(ours_universe, 3)
    rows.append(Row(case, "ours", first, warm, f"best of 3, {SYMBOLS} x run()",
                    f"{int(mine.trades_closed.sum())} trades closed"))
    table, first, warm = measure(lambda: backtest.run_many(
        "sma", universe, fast_period=FAST, slow_period=SLOW, size=SIZE, long_only=True), 3)
    same = np.allclose(table["final_value"].to_numpy(), mine["final_value"].to_numpy(),
                       rtol=0, atol=TOLERANCE) and (table["trades_closed"].to_numpy()
                                                    == mine["trades_closed"].to_numpy()).all()
    rows.append(Row(case, "ours run_many", first, warm, "best of 3, one call",
                    ("agree" if same else "DISAGREE") + f" with the {SYMBOLS} run() calls", same))
    with one_core():
        _, first, warm = measure(lambda: backtest.run_many(
            "sma", universe, fast_period=FAST, slow_period=SLOW, size=SIZE, long_only=True), 3)
    rows.append(Row(case, "ours run_many", first, warm, "best of 3, one call", rows[-1].check,
                    same, cores="1"))
    portfolio = names
    result, first, warm = measure(lambda: backtest.run_portfolio(
        "sma", universe, fast_period=FAST, slow_period=SLOW, size=SIZE, long_only=True), 3)
    # With a fixed size and costs 0, shared cash changes nothing (orders are never rejected), so
    # the portfolio's final value is the cash plus the PnL of each symbol's own backtest.
    expected = CASH + (mine.loc[portfolio, "final_value"] - CASH).sum()
    same = abs(result.metrics["final_value"] - expected) <= TOLERANCE * len(portfolio)
    rows.append(Row(case, "ours run_portfolio (shared cash)", first, warm,
                    "best of 3, one call (the compiled shared-cash loop)",
                    ("agree" if same else "DISAGREE") + " with the sum of the per-symbol runs",
                    same))
    if vbt:
        close = pd.DataFrame({s: f["close"] for s, f in universe.items()})
        open_ = pd.DataFrame({s: f["open"] for s, f in universe.items()})
        with one_core():
            theirs, first, warm = measure(lambda: vbt.run(close, open_, FAST, SLOW, SIZE, names),
                                          3)
        rows.append(Row(case, "vectorbt", first, warm, f"best of 3, one {SYMBOLS}-column Portfolio",
                        *compare(mine, theirs, "symbols"), cores="1"))
    subset = names[:SUBSET_SYMBOLS]
    for peer, label, run in (
            (btpy, "backtesting.py",
             lambda s: btpy.run(btpy.bars(universe[s]), FAST, SLOW, SIZE)),
            (btr, "backtrader", lambda s: btr.run(universe[s], FAST, SLOW, SIZE))):
        if peer:
            theirs, seconds = timed(lambda run=run: outcome_frame([run(s) for s in subset],
                                                                  subset))
            rows.append(Row(case, label, None, seconds * SYMBOLS / len(subset),
                            f"{len(subset)} symbols in {seconds:.1f} s, extrapolated to {SYMBOLS}",
                            *compare(mine.loc[subset], theirs, "symbols checked")))
    return rows


def report(rows: list[Row], imports: dict[str, float]) -> None:
    """The machine, the timing table (Markdown), the speed targets and the agreement verdict."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    versions = {name: _version(name) for name in
                ("numpy", "pandas", "numba", "vectorbt", "backtesting", "backtrader")}
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print("imports [s]: " + ", ".join(f"{k} {v:.2f}" for k, v in imports.items()))
    ours: dict[tuple[str, str], float] = {}  # the faster of our per-call and batch rows
    for r in rows:
        if r.engine in ("ours", "ours run_many"):
            key = (r.case, r.cores)
            ours[key] = min(r.warm, ours.get(key, r.warm))
    print(f"load average while running: {os.getloadavg()[0]:.1f} (1 min), "
          f"{os.getloadavg()[1]:.1f} (5 min)")
    print("\n| case | engine | cores | first call [s] | warm [s] | ours faster by | timed | check |")
    print("|---|---|---|---:|---:|---:|---|---|")
    for r in rows:
        first = "-" if r.first is None else f"{r.first:.3f}"
        mine = ours.get((r.case, r.cores), ours.get((r.case, "all")))
        ratio = "-" if r.engine.startswith("ours") or mine is None else \
            f"{r.warm / mine:,.2f}x"  # below 1 for the bound: ours takes 1 / that as long
        print(f"| {r.case} | {r.engine} | {r.cores} | {first} | {r.warm:.4f} | {ratio} | "
              f"{r.runs} | {r.check} |")
    print("\n| target | measured | result |")
    print("|---|---|---|")
    for name, measured, ok in targets(rows):
        print(f"| {name} | {measured} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} |")
    print("\nconventions aligned:\n" + "\n".join(f"- {c}" for c in CONVENTIONS))
    bad = [r for r in rows if not r.agree]
    print("\nagreement: " + ("all engines agree on final value and trade counts" if not bad else
                             "; ".join(f"{r.engine} ({r.case}) disagrees" for r in bad)))


def versus(label: str, ours: Row | None, peer: Row | None, factor: float
           ) -> tuple[str, str, bool | None]:
    """A target "ours at least `factor` times faster than the peer": (label, measured, verdict)."""
    if ours is None or peer is None:
        return label, "not measured (peer or data missing)", None
    ratio = peer.warm / ours.warm
    return label, f"{ratio:,.2f}x ({ours.warm:.4f} s vs {peer.warm:.4f} s)", ratio >= factor


def targets(rows: list[Row]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, PASS/FAIL/None when the peer or case is missing)."""
    def find(case: str, engine: str) -> Row | None:
        return next((r for r in rows if r.case.startswith(case) and r.engine == engine), None)

    out = []
    for name in ("INTC", "GSPC"):
        fixed = f"2 sweep {name}"
        sweeps = [r for r in rows if r.case.startswith(fixed) and r.engine == "ours"
                  and r.cores == "all"]
        if not sweeps:
            out.append((f"sweeps on {name}", "not measured (data missing)", None))
            continue
        for ours in sweeps:
            mode = ours.case.split("combos, ")[1]
            factor = 10 if mode == "10 shares" else 5
            out.append(versus(f"{name} sweep, {mode}: >= {factor}x vectorbt", ours,
                              find(ours.case, "vectorbt"), factor))
            if mode != "10 shares":
                base = sweeps[0]
                out.append((f"{name} sweep, {mode}: within 3x of our 10-share sweep",
                            f"{ours.warm / base.warm:.2f}x ({ours.warm:.4f} s vs "
                            f"{base.warm:.4f} s)", ours.warm <= 3 * base.warm))
    bt = next((r for r in rows if r.case.startswith("2 ") and r.engine == "backtrader"), None)
    out.append(versus("fixed sweep >= 1000x backtrader (extrapolated)",
                      find(bt.case, "ours") if bt else None, bt, 1000))
    out.append(versus("single >= 10x vectorbt", find("1 ", "ours"), find("1 ", "vectorbt"), 10))
    many = [r for r in (find("3 ", "ours"), find("3 ", "ours run_many")) if r]
    out.append(versus(f"{SYMBOLS} symbols >= 3x vectorbt (faster of run() and run_many)",
                      min(many, key=lambda r: r.warm) if many else None,
                      find("3 ", "vectorbt"), 3))
    for case, label, limit in (("4 cold: algotrading", "cold `backtest --json` < 1.5 s", 1.5),
                               ("4 cold: first sweep", "first sweep call in a fresh process < 1 s",
                                1.0)):
        r = find(case, "ours")
        out.append((label, "not measured" if r is None else f"{r.warm:.2f} s",
                    None if r is None else r.warm < limit))
    return out + machine_limit(rows)


SWEEP_LIMIT = {"INTC": 0.010, "GSPC": 0.030}  # seconds, issue 21 ("on this kind of machine")


def machine_limit(rows: list[Row]) -> list[tuple[str, str, bool | None]]:
    """Issue 21's targets: sweeps within 2x of the fused bound and under SWEEP_LIMIT, 25x vectorbt
    on one core; run_many 500 x 5,000 <= 40 ms and 10x vectorbt; one run <= 3 ms per 1,000 bars;
    cold `backtest --json` <= 0.4 s, first sweep in a fresh process <= 0.3 s."""
    def pick(case: str, engine: str, cores: str) -> Row | None:
        return next((r for r in rows if r.case.startswith(case) and r.engine == engine
                     and r.cores == cores), None)

    def at_most(label: str, row: Row | None, limit: float, unit: float = 1.0, what: str = "s"
                ) -> tuple[str, str, bool | None]:
        if row is None:
            return label, "not measured", None
        return label, f"{row.warm * unit:.4g} {what}", row.warm * unit <= limit

    out = []
    for r in rows:
        if not (r.case.startswith("2 sweep") and r.engine == "ours"):
            continue
        name, mode = r.case.split()[2], r.case.split("combos, ")[1]
        label = f"{name} sweep, {mode}, {r.cores} core{'s' if r.cores == 'all' else ''}"
        if r.cores == "all":
            out.append(at_most(f"{label}: <= {SWEEP_LIMIT[name] * 1e3:.0f} ms", r,
                               SWEEP_LIMIT[name] * 1e3, 1e3, "ms"))
        gap = pick(r.case, "bound", r.cores)
        if gap is not None:
            out.append((f"{label}: within 2x of the fused bound", f"{r.warm / gap.warm:.1f}x "
                        f"({r.warm:.4f} s vs {gap.warm:.4f} s)", r.warm <= 2 * gap.warm))
        if r.cores == "1":
            out.append(versus(f"{label}: >= 25x vectorbt on one core", r,
                              pick(r.case, "vectorbt", "1"), 25))
    for cores in ("all", "1"):
        many = pick("3 ", "ours run_many", cores)
        out.append(at_most(f"run_many {SYMBOLS} x {BARS:,}, {cores} core(s): <= 40 ms", many, 40,
                           1e3, "ms"))
        if cores == "1":
            out.append(versus(f"run_many {SYMBOLS} x {BARS:,}: >= 10x vectorbt on one core", many,
                              pick("3 ", "vectorbt", "1"), 10))
    single = pick("1 ", "ours", "all")
    bars = int(single.case.split(", ")[1].split()[0]) if single else 1
    out.append(at_most("one run: <= 3 ms per 1,000 bars", single, 3.0, 1e6 / bars, "ms"))
    out.append(at_most("cold `backtest --json` <= 0.4 s", pick("4 cold: algotrading", "ours",
                                                                "all"), 0.4))
    out.append(at_most("first sweep call in a fresh process <= 0.3 s",
                       pick("4 cold: first sweep", "ours", "all"), 0.3))
    return out


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
