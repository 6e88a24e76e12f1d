"""What-if speed targets (issue #11): 1,000 paths x 5,000 bars of SMA 50/200 with all-in sizing
in < 5 s including path generation, and the same with a 5 % stop-loss in < 10 s.

Paths are fitted to the offline GSPC sample (`--model`, default gbm). Times are wall-clock
(time.perf_counter) of one call after a warm-up on 10 paths (so one-off imports and compiles are
not counted; the warm-up time is printed too). Run: `.venv/bin/python bench/whatif.py`. The
machine is shared: the load average is printed beside the numbers. Targets print PASS/FAIL.
"""

from __future__ import annotations

import argparse
import os
import time

import inputs

from algotrading import scenarios

RULE = dict(fast_period=50, slow_period=200)
TARGETS = {"all-in": ({}, 5.0), "all-in + 5 % stop": ({"stop_loss": 0.05}, 10.0)}


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--paths", type=int, default=1000)
    p.add_argument("--bars", type=int, default=5000)
    p.add_argument("--model", choices=scenarios.MODELS, default="gbm")
    args = p.parse_args()
    prices = inputs.gspc(bars=100_000)  # the whole sample
    _, warm = timed(lambda: scenarios.run("sma", scenarios.simulate(prices, args.model, 10, args.bars),
                                          **RULE))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; warm-up {warm:.2f} s")
    print(f"{'case':<20} {'generate':>9} {'backtests':>10} {'total':>8} {'target':>7}")
    for name, (extra, target) in TARGETS.items():
        paths, gen = timed(scenarios.simulate, prices, args.model, args.paths, args.bars, seed=0)
        outcome, bt = timed(scenarios.run, "sma", paths, **RULE, **extra)
        total = gen + bt
        verdict = "PASS" if total < target else "FAIL"
        print(f"{name:<20} {gen:>8.2f}s {bt:>9.2f}s {total:>7.2f}s {target:>6.0f}s {verdict}  "
              f"(P(loss) {scenarios.probabilities(outcome)['p_loss']:.1%})")


if __name__ == "__main__":
    main()
