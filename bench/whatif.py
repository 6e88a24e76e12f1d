"""What-if speed targets.

In-process (issue #11): 1,000 paths x 5,000 bars of SMA 50/200 with all-in sizing in < 5 s
including path generation, and the same with a 5 % stop-loss in < 10 s. Paths are fitted to the
offline GSPC sample (`--model`, default gbm). Times are wall-clock (time.perf_counter) of one call
after a warm-up on 10 paths (so one-off imports and compiles are not counted; the warm-up time is
printed too). Run: `.venv/bin/python bench/whatif.py`.

`--cli` (issue #21): the command `algotrading whatif sma --symbol GSPC --model M --format json`
(1,000 paths x 5,031 bars, the defaults) for each model in fresh processes, interpreter start to
exit, best of `--repeat` after one warm-up run (which also fills numba's cache), against 2 s;
the CPU time (user + system) of the best run is printed beside it, since on a shared machine
the wall time grows with the load. It ingests the offline sample into a temporary lake.
Run: `.venv/bin/python bench/whatif.py --cli`.

The machine is shared: the load average is printed beside the numbers. Targets print PASS/FAIL.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import inputs

from algotrading import scenarios

RULE = dict(fast_period=50, slow_period=200)
TARGETS = {"all-in": ({}, 5.0), "all-in + 5 % stop": ({"stop_loss": 0.05}, 10.0)}
CLI_TARGET = 2.0  # seconds, process start to exit, every model (issue #21)


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - start


def child_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one fresh process running `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli(repeat: int) -> None:
    """The what-if command of each model in fresh processes (module doc)."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as lake:
        env["ALGO_LAKE"] = lake
        base = [sys.executable, "-m", "algotrading"]
        subprocess.run([*base, "ingest", "sample", "--symbols", "GSPC"], env=env, check=True,
                       capture_output=True)
        print(f"{'model':<10} {'best':>7} {'cpu':>7} {'runs':<28} {'target':>7}")
        for model in scenarios.MODELS:
            command = [*base, "whatif", "sma", "--symbol", "GSPC", "--model", model,
                       "--format", "json"]
            child_run(command, env)  # warm-up: numba's cache, the page cache
            runs = [child_run(command, env) for _ in range(repeat)]
            wall, cpu = min(runs)
            verdict = "PASS" if wall <= CLI_TARGET else "FAIL"
            print(f"{model:<10} {wall:>6.2f}s {cpu:>6.2f}s "
                  f"{' '.join(f'{w:.2f}' for w, _ in runs):<28} {CLI_TARGET:>6.1f}s {verdict}  "
                  f"(load {os.getloadavg()[0]:.2f})")
    print(f"{os.cpu_count()} cores; NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'unset')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--paths", type=int, default=1000)
    p.add_argument("--bars", type=int, default=5000)
    p.add_argument("--model", choices=scenarios.MODELS, default="gbm")
    p.add_argument("--cli", action="store_true", help="time the what-if command in fresh processes")
    p.add_argument("--repeat", type=int, default=3, help="with --cli: timed runs per model")
    args = p.parse_args()
    if args.cli:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        cli(args.repeat)
        return
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
