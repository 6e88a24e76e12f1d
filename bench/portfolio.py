"""A portfolio sweep with shared cash: ours against vectorbt's grouped, cash-sharing Portfolio.

Every (fast, slow) SMA pair of a small grid trades the same `--symbols` synthetic symbols from one
account (cash 100,000; 10 shares per symbol, long only; fills at the next open; no costs). Ours:
`backtest.run_portfolio` once per combination (its Broker loop in Python: one account, every
symbol at each bar). vectorbt: one `Portfolio.from_signals` over combinations x symbols columns
with `group_by` the combination and `cash_sharing=True`. With a fixed size that cash always
covers, shared cash rejects nothing, so both must end at the same value per combination (checked
to 1e-6 per symbol). Times: a first call apart, then the best of `--repeats`; the load average
and the machine are printed beside them. `python bench/portfolio.py` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import inputs
import numpy as np
import pandas as pd
from peers import CASH
from scaling import machine

SIZE = 10


def ours(universe: dict[str, pd.DataFrame], combos: list[tuple[int, int]]) -> np.ndarray:
    from algotrading import backtest

    return np.array([backtest.run_portfolio("sma", universe, fast_period=f, slow_period=s,
                                            size=SIZE, long_only=True).metrics["final_value"]
                     for f, s in combos])


def vectorbt(universe: dict[str, pd.DataFrame], combos: list[tuple[int, int]]) -> np.ndarray:
    import vectorbt as vbt

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
        size_type="amount", init_cash=CASH, fees=0.0, slippage=0.0, direction="longonly",
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--bars", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    universe = inputs.universe(args.symbols, args.bars)
    combos = [(f, s) for f in (5, 10, 20, 30, 50) for s in (60, 100, 150, 200)]
    print(machine())
    print(f"{len(combos)} combinations x {args.symbols} symbols x {args.bars} bars, shared cash")
    mine, first, warm = timed(lambda: ours(universe, combos), args.repeats)
    print(f"ours (run_portfolio per combination): first {first:.3f} s, best {warm:.3f} s")
    try:
        theirs, vfirst, vwarm = timed(lambda: vectorbt(universe, combos), args.repeats)
    except ImportError as err:
        print(f"vectorbt: not importable ({err})")
        return 0
    same = np.abs(mine - theirs) <= 1e-6 * args.symbols
    print(f"vectorbt (group_by, cash_sharing): first {vfirst:.3f} s, best {vwarm:.3f} s; "
          f"ours / vectorbt {warm / vwarm:.1f}x; final values agree on {int(same.sum())}/"
          f"{len(same)} combinations")
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) / {os.getloadavg()[1]:.1f} (5 min)")
    return 0 if same.all() else 1


if __name__ == "__main__":
    sys.exit(main())
