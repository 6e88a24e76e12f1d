"""A portfolio sweep with shared cash: ours against vectorbt's grouped, cash-sharing Portfolio.

Every (fast, slow) SMA pair of a small grid trades the same `--symbols` synthetic symbols from one
account (cash 100,000, raised to 1.1 x the cost of 10 shares of every symbol at its highest price
when that is more, so cash always covers every position: `cash_for`; 10 shares per symbol, long
only; fills at the next open; no costs). Ours:
`backtest.sweep_portfolio` (one compiled call, combinations in parallel on numba's threads; the
Broker's shared-cash rules, backtest/shared.py), and beside it `backtest.run_portfolio` once per
combination (the same compiled loop, one call each). vectorbt: one `Portfolio.from_signals` over
combinations x symbols columns with `group_by` the combination and `cash_sharing=True`. With a
fixed size that cash always covers, shared cash rejects nothing, so both must end at the same
value per combination (checked to 1e-6 per symbol).

Each setting runs in its own process, ours and vectorbt back to back: at one core
(os.sched_setaffinity to one CPU and NUMBA_NUM_THREADS=1, as bench/scaling.py) and at all cores.
Times: a first call apart (compiles; vectorbt's first call compiles too), then the best of
`--repeats`. Target (issue 21, set from the first measurement: run_portfolio per combination was
4.3-6.6x slower than vectorbt): the shared-cash sweep no slower than vectorbt's, at one core and at
all cores; PASS/FAIL is printed with the machine and the load average, and the exit status is 1 if
a final value disagrees. `python bench/portfolio.py` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SIZE = 10
CASH = 100_000.0
FAST = (5, 10, 20, 30, 50)
SLOW = (60, 100, 150, 200)


def cash_for(universe: dict[str, pd.DataFrame]) -> float:
    """CASH, or more if holding SIZE shares of every symbol at once could need more: then no
    engine's cash check binds and every engine must end at the same value (vectorbt's shared cash
    refuses what the cash cannot pay; ours checks each order against the account's equity)."""
    need = 1.1 * SIZE * sum(float(f["high"].max()) for f in universe.values())
    return max(CASH, float(np.ceil(need / 1e5) * 1e5))


def ours(universe: dict[str, pd.DataFrame]) -> np.ndarray:
    from algotrading import backtest

    table = backtest.sweep_portfolio("sma", universe, {"fast_period": FAST, "slow_period": SLOW},
                                     size=SIZE, long_only=True, cash=cash_for(universe))
    return table["final_value"].to_numpy()


def ours_one_by_one(universe: dict[str, pd.DataFrame]) -> np.ndarray:
    from algotrading import backtest

    cash = cash_for(universe)
    return np.array([backtest.run_portfolio("sma", universe, fast_period=f, slow_period=s,
                                            size=SIZE, long_only=True, cash=cash
                                            ).metrics["final_value"]
                     for f in FAST for s in SLOW])


def vectorbt(universe: dict[str, pd.DataFrame]) -> np.ndarray:
    import vectorbt as vbt

    combos = [(f, s) for f in FAST for s in SLOW]
    close = pd.DataFrame({s: f["close"] for s, f in universe.items()})
    open_ = pd.DataFrame({s: f["open"] for s, f in universe.items()})
    fast = vbt.MA.run(close, window=[f for f, _ in combos], short_name="fast").ma.to_numpy()
    slow = vbt.MA.run(close, window=[s for _, s in combos], short_name="slow").ma.to_numpy()
    shift = np.zeros((1, fast.shape[1]), bool)
    entries = np.vstack([shift, (fast > slow)[:-1]])  # decided at the close, filled next open
    exits = np.vstack([shift, (fast < slow)[:-1]])
    columns = pd.MultiIndex.from_tuples([(k, s) for k in range(len(combos)) for s in universe],
                                        names=["combo", "symbol"])
    wide = {name: pd.DataFrame(np.tile(frame.to_numpy(), len(combos)), index=frame.index,
                               columns=columns) for name, frame in (("close", close),
                                                                    ("open", open_))}
    pf = vbt.Portfolio.from_signals(
        wide["close"], pd.DataFrame(entries, index=close.index, columns=columns),
        pd.DataFrame(exits, index=close.index, columns=columns), price=wide["open"], size=SIZE,
        size_type="amount", init_cash=cash_for(universe), fees=0.0, slippage=0.0, direction="longonly",
        accumulate=False, group_by="combo", cash_sharing=True, freq="1D")
    return pf.final_value().to_numpy()


def timed(fn, repeats: int) -> tuple[np.ndarray, float, float]:
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return out, first, best


def child(symbols: int, bars: int, repeats: int, out: str) -> None:
    """One process: ours (the sweep, then run_portfolio per combination) and vectorbt."""
    sys.path.insert(0, str(Path(__file__).parent))
    import inputs

    universe = inputs.universe(symbols, bars)
    result: dict = {}
    for name, fn in (("sweep_portfolio", ours), ("run_portfolio x combinations", ours_one_by_one),
                     ("vectorbt", vectorbt)):
        try:
            values, first, best = timed(lambda fn=fn: fn(universe), repeats)
        except ImportError as err:
            result[name] = {"error": f"not importable ({err})"}
            continue
        result[name] = {"first": first, "best": best, "values": [float(v) for v in values]}
    Path(out).write_text(json.dumps(result))


def measure(cores: str, args: argparse.Namespace, tmp: str) -> dict:
    """`child` in a fresh process, at one core (affinity + NUMBA_NUM_THREADS=1) or all."""
    out = os.path.join(tmp, f"portfolio-{cores}.json")
    from scaling import run_script  # beside this file (a script's folder is on sys.path)

    error = run_script(__file__, ["--child", str(args.symbols), str(args.bars), str(args.repeats),
                                  out], cores)
    return {"error": error} if error else json.loads(Path(out).read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--bars", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--child", nargs=4, metavar=("SYMBOLS", "BARS", "REPEATS", "OUT"))
    args = p.parse_args()
    if args.child:
        symbols, bars, repeats, out = args.child
        child(int(symbols), int(bars), int(repeats), out)
        return 0
    from scaling import load, machine

    print(machine())
    print(f"load average at the start: {load()}")
    print(f"{len(FAST) * len(SLOW)} combinations x {args.symbols} symbols x {args.bars} bars, "
          f"shared cash, {SIZE} shares each, long only (cash: max(100,000, 1.1 x {SIZE} shares "
          "of each symbol at its high))")
    print("\n| cores | engine | first [s] | best [s] | ours / vectorbt | final values |")
    print("|---|---|---:|---:|---:|---|")
    agree, verdicts = True, []
    with tempfile.TemporaryDirectory(prefix="bench-portfolio-") as tmp:
        for cores in ("1", "all"):
            got = measure(cores, args, tmp)
            if "error" in got:
                print(f"| {cores} | - | - | - | - | failed: {got['error']} |")
                agree = False
                continue
            theirs = got.get("vectorbt", {})
            for name, row in got.items():
                if "error" in row:
                    print(f"| {cores} | {name} | - | - | - | {row['error']} |")
                    continue
                ratio, check = "-", "-"
                if name != "vectorbt" and "values" in theirs:
                    ratio = f"{row['best'] / theirs['best']:.2f}x"
                    same = np.abs(np.array(row["values"]) - np.array(theirs["values"])) \
                        <= 1e-6 * args.symbols
                    agree &= bool(same.all())
                    check = f"agree on {int(same.sum())}/{len(same)} combinations"
                print(f"| {cores} | {name} | {row['first']:.3f} | {row['best']:.4f} | {ratio} | "
                      f"{check} |")
            if "values" in theirs:
                mine = got["sweep_portfolio"]["best"]
                verdicts.append(f"shared-cash sweep no slower than vectorbt, {cores} core(s): "
                                f"{mine:.4f} s vs {theirs['best']:.4f} s: "
                                f"{'PASS' if mine <= theirs['best'] else 'FAIL'}")
    print()
    print("\n".join(verdicts) or "vectorbt not measured: no verdict")
    print(f"load average at the end: {load()}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
