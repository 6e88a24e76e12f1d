"""How our batches scale, beside vectorbt and the fused lower bound (`bench/bound.py`).

Three axes, SMA crossover long-only, all-in (our default sizing; vectorbt size=inf in whole
shares), no costs, on seeded synthetic bars (`inputs.universe`):
- bars: 1,000 / 10,000 / 100,000 bars, 1,000 combinations (`backtest.sweep`);
- combinations: 100 / 1,000 / 10,000 / 100,000 combinations on 5,000 bars (`backtest.sweep`);
- symbols: 50 / 500 / 5,000 symbols x 5,000 bars, SMA 10/30 each (`backtest.run_many`).

Every measurement runs in its own process, at one core (os.sched_setaffinity to one CPU and
NUMBA_NUM_THREADS=1) and at all cores: a first call (compiles, fills caches; not reported), then
`--repeats` timed calls, more for short ones (best, and their spread: median / best - 1,
flagged above 15 %). Peak memory is
the process's peak resident set during one call above its resident set before it (VmHWM after
resetting it through /proc/self/clear_refs), so it counts numba's allocations too. vectorbt runs
where its estimated need (VECTORBT_BYTES per combination-bar) fits in `--vectorbt-gb`, else the
row says why not. Final values are compared with ours (to 1e-6): the check column.

`python bench/scaling.py` (about 10-20 minutes on 2 busy cores; `--quick` stops at 10,000 bars,
10,000 combinations and 500 symbols). The machine, its load and the thread settings are printed
first: timings on a shared machine move with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASH = 100_000.0
AXES = {"bars": (1_000, 10_000, 100_000), "combinations": (100, 1_000, 10_000, 100_000),
        "symbols": (50, 500, 5_000)}
QUICK = {"bars": (1_000, 10_000), "combinations": (100, 1_000, 10_000), "symbols": (50, 500)}
SHAPES = {100: (10, 10), 1_000: (20, 50), 10_000: (100, 100), 100_000: (200, 500)}  # fast x slow
BARS = 5_000  # the combinations and symbols axes
VECTORBT_BYTES = 200  # vectorbt's measured need per combination-bar (18.5 GB at 20k x 5,000)
ENGINES = ("ours", "bound", "vectorbt")
SPREAD = 0.15  # repeats further apart than this are flagged


def grid(combos: int, bars: int) -> tuple[np.ndarray, np.ndarray]:
    """`combos` (fast, slow) pairs, fast < slow, every window shorter than `bars`."""
    if bars <= 1_000:  # the bars axis: 1,000 combinations that fit 1,000 bars
        fast, slow = np.arange(5, 25), np.arange(50, 150, 2)
    else:
        a, b = SHAPES[combos]
        fast, slow = np.arange(5, 5 + a), np.arange(250, 250 + b)
    f, s = np.meshgrid(fast, slow, indexing="ij")
    return f.ravel(), s.ravel()


def case(axis: str, n: int) -> tuple[int, int, int]:
    """(symbols, bars, combinations) of one point."""
    if axis == "bars":
        return 1, n, 1_000
    if axis == "combinations":
        return 1, BARS, n
    return n, BARS, 1


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def peak_of(fn) -> float:
    """MB the process's resident set rose above its level before `fn()` at its peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except OSError:
        return float("nan")
    before = rss_kb("VmRSS")
    fn()
    return (rss_kb("VmHWM") - before) / 1024


def child(engine: str, axis: str, n: int, repeats: int, out: str) -> None:
    """One engine at one point: times, peak memory and final values into `out` (JSON + .npy)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import inputs

    symbols, bars, combos = case(axis, n)
    universe = inputs.universe(symbols, bars, start="1700-01-01")
    first = next(iter(universe.values()))
    fast = slow = None
    if axis == "symbols":
        call = _universe_call(engine, universe)
    else:
        fast, slow = grid(combos, bars)
        call = _sweep_call(engine, first, fast, slow)
    result, first_call = _timed(call)
    values = final_values(result, axis, fast, slow)
    peak = peak_of(call)
    once = _timed(call)[1]
    # short calls repeat more (up to a second in all), so one busy moment does not decide
    times = [once] + [_timed(call)[1] for _ in range(max(repeats, min(50, int(1.0 / once))) - 1)]
    data_mb = sum(f.memory_usage(index=True, deep=True).sum() for f in universe.values()) / 2**20
    np.save(out + ".npy", np.asarray(values, dtype=float))
    Path(out).write_text(json.dumps({"first": first_call, "times": times, "peak_mb": peak,
                                     "data_mb": data_mb}))


def final_values(result, axis: str, fast: np.ndarray | None, slow: np.ndarray | None
                 ) -> np.ndarray:
    """The final values of a call's result in the grid's (or the symbols') order: a sweep's
    table (ours) is aligned here, outside the timed call, as the peers' arrays need nothing."""
    if not hasattr(result, "set_index"):
        return np.asarray(result, dtype=float)
    if axis == "symbols":
        return result["final_value"].to_numpy()
    keys = list(zip(fast.tolist(), slow.tolist(), strict=True))
    return result.set_index(["fast_period", "slow_period"]).loc[keys, "final_value"].to_numpy()


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _sweep_call(engine: str, prices, fast: np.ndarray, slow: np.ndarray):
    if engine == "ours":
        from algotrading import backtest

        grid_ = {"fast_period": sorted(set(fast.tolist())), "slow_period": sorted(set(slow.tolist()))}
        return lambda: backtest.sweep("sma", prices, grid_, long_only=True, progress=False)
    if engine == "bound":
        import bound

        o, c = prices["open"].to_numpy(float), prices["close"].to_numpy(float)
        return lambda: bound.run_sweep(o, c, fast, slow, CASH)[:, 0]
    import pandas as pd
    from peers import with_vectorbt

    columns = pd.MultiIndex.from_arrays([fast, slow], names=["fast_period", "slow_period"])
    return lambda: with_vectorbt.run(prices["close"], prices["open"], fast.tolist(), slow.tolist(),
                                     np.inf, columns)["final_value"].to_numpy()


def _universe_call(engine: str, universe: dict):
    if engine == "ours":
        from algotrading import backtest

        return lambda: backtest.run_many("sma", universe, fast_period=10, slow_period=30,
                                         long_only=True)
    if engine == "bound":
        import bound

        o = np.stack([f["open"].to_numpy(float) for f in universe.values()])
        c = np.stack([f["close"].to_numpy(float) for f in universe.values()])
        return lambda: bound.universe(o, c, 10, 30, CASH)[:, 0]
    import pandas as pd
    from peers import with_vectorbt

    names = pd.Index(list(universe))
    close = pd.DataFrame({s: f["close"] for s, f in universe.items()})
    open_ = pd.DataFrame({s: f["open"] for s, f in universe.items()})
    return lambda: with_vectorbt.run(close, open_, 10, 30, np.inf, names)["final_value"].to_numpy()


def measure(engine: str, axis: str, n: int, cores: str, repeats: int, tmp: str) -> dict:
    """Run `child` in a fresh process (one core or all); its JSON plus the final values."""
    out = os.path.join(tmp, f"{engine}-{axis}-{n}-{cores}.json")
    error = run_script(__file__, ["--child", engine, axis, str(n), str(repeats), out], cores)
    if error:
        return {"error": error}
    result = json.loads(Path(out).read_text())
    result["values"] = np.load(out + ".npy")
    return result


def run_script(script: str, args: list[str], cores: str) -> str | None:
    """`python script args` in a fresh process, at all cores or pinned to one CPU with
    NUMBA_NUM_THREADS=1 (`cores` "1"); None, or the last line of its error."""
    env = dict(os.environ)
    cmd = [sys.executable, script, *args]
    if cores == "1":
        env["NUMBA_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-c",
               "import os, runpy, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
               f"sys.argv = {cmd[1:]!r}; runpy.run_path(sys.argv[0], run_name='__main__')"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def machine() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
               platform.processor())
    threads = os.environ.get("NUMBA_NUM_THREADS", f"unset (numba: {os.cpu_count()})")
    return (f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {cpu}; "
            f"Python {platform.python_version()}; NUMBA_NUM_THREADS {threads}; one-core rows: "
            "affinity to one CPU and NUMBA_NUM_THREADS=1")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", nargs=5, metavar=("ENGINE", "AXIS", "N", "REPEATS", "OUT"))
    p.add_argument("--quick", action="store_true", help="stop at 10,000 bars and combinations")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", choices=("1", "all", "both"), default="both")
    p.add_argument("--axis", choices=tuple(AXES), action="append", help="only these axes")
    p.add_argument("--vectorbt-gb", type=float, default=4.0, help="skip vectorbt above this")
    args = p.parse_args()
    if args.child:
        engine, axis, n, repeats, out = args.child
        child(engine, axis, int(n), int(repeats), out)
        return 0
    print(machine())
    print(f"load average at the start: {load()}")
    print("\n| axis | size | cores | engine | best [s] | median / best - 1 | ns per run-bar | "
          "x bound | peak memory [MB] | check |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---|")
    cores_list = ("1", "all") if args.cores == "both" else (args.cores,)
    flagged = 0
    seen: dict[tuple[str, int, str], dict] = {}  # (axis, size, cores) -> our row
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for axis in args.axis or AXES:
            for n in (QUICK if args.quick else AXES)[axis]:
                symbols, bars, combos = case(axis, n)
                runs = symbols * combos
                for cores in cores_list:
                    rows = {}
                    for engine in ENGINES:
                        need = VECTORBT_BYTES * runs * bars / 1e9
                        if engine == "vectorbt" and need > args.vectorbt_gb:
                            rows[engine] = {"error": f"skipped: needs ~{need:.0f} GB "
                                                     f"(limit {args.vectorbt_gb:g} GB)"}
                            continue
                        rows[engine] = measure(engine, axis, n, cores, args.repeats, tmp)
                    flagged += report(axis, n, cores, rows, runs, bars)
                    seen[axis, n, cores] = {**rows.get("ours", {}), "runs": runs, "bars": bars}
    print(f"\nload average at the end: {load()}; rows whose repeats spread over "
          f"{SPREAD:.0%}: {flagged}")
    print("\n| target | measured | result |\n|---|---|---|")
    for name, measured, ok in targets(seen, flagged):
        print(f"| {name} | {measured} | {'n/a' if ok is None else 'PASS' if ok else 'FAIL'} |")
    return 0


def targets(seen: dict[tuple[str, int, str], dict], flagged: int
            ) -> list[tuple[str, str, bool | None]]:
    """Issue 21's scaling targets, on our rows: 100,000 combinations x 5,000 bars <= 1.5 s with
    <= 200 MB extra; a flat cost per combination-bar from 100 to 100,000 combinations (the
    dearest point at most 1.5x the cheapest); 5,000 symbols <= 0.4 s, holding at most 1.2x the
    price data (the call's extra peak <= 0.2x the frames' size); repeats within SPREAD."""
    def best(row: dict) -> float:
        return min(row["times"])

    out: list[tuple[str, str, bool | None]] = []
    for cores in ("1", "all"):
        row = seen.get(("combinations", 100_000, cores), {})
        if "times" in row:
            out.append((f"100,000 combinations x 5,000 bars, {cores} core(s): <= 1.5 s",
                        f"{best(row):.2f} s", best(row) <= 1.5))
            out.append((f"100,000 combinations x 5,000 bars, {cores} core(s): <= 200 MB extra",
                        f"{row['peak_mb']:.0f} MB", row["peak_mb"] <= 200))
        costs = {n: best(r) / (r["runs"] * r["bars"]) * 1e9 for (axis, n, c), r in seen.items()
                 if axis == "combinations" and c == cores and "times" in r}
        if len(costs) > 1:
            spread = max(costs.values()) / min(costs.values())
            out.append((f"flat cost per combination, {min(costs):,} to {max(costs):,}, {cores} "
                        "core(s): dearest <= 1.5x cheapest", ", ".join(
                            f"{n:,}: {v:.1f} ns" for n, v in sorted(costs.items()))
                        + f" ({spread:.2f}x)", spread <= 1.5))
        row = seen.get(("symbols", 5_000, cores), {})
        if "times" in row:
            out.append((f"run_many 5,000 symbols x 5,000 bars, {cores} core(s): <= 0.4 s",
                        f"{best(row):.3f} s", best(row) <= 0.4))
            out.append((f"run_many 5,000 symbols, {cores} core(s): extra memory <= 0.2x the "
                        "price data", f"{row['peak_mb']:.0f} MB of {row['data_mb']:.0f} MB",
                        row["peak_mb"] <= 0.2 * row["data_mb"]))
    out.append((f"repeats within {SPREAD:.0%} of the best (median)",
                f"{flagged} rows over", flagged == 0))
    return out


def report(axis: str, n: int, cores: str, rows: dict, runs: int, bars: int) -> int:
    """Print one point's rows; returns how many spread over SPREAD."""
    ours, bound_ = rows.get("ours", {}), rows.get("bound", {})
    flagged = 0
    for engine, r in rows.items():
        if "error" in r:
            print(f"| {axis} | {n:,} | {cores} | {engine} | - | - | - | - | - | {r['error']} |")
            continue
        best, median = min(r["times"]), float(np.median(r["times"]))
        spread = median / best - 1
        flagged += spread > SPREAD
        ratio = (f"{best / min(bound_['times']):.1f}x" if "times" in bound_ else "-")
        check = "-"
        if engine != "ours" and "values" in ours:
            same = np.abs(r["values"] - ours["values"]) <= 1e-6
            check = f"agree with ours {int(same.sum()):,}/{len(same):,}"
        print(f"| {axis} | {n:,} | {cores} | {engine} | {best:.4f} | {spread:.0%}"
              f"{' (over 15 %)' if spread > SPREAD else ''} | {best / (runs * bars) * 1e9:.1f} | "
              f"{ratio} | {r['peak_mb']:.0f} | {check} |")
    sys.stdout.flush()
    return flagged


if __name__ == "__main__":
    sys.exit(main())
