"""Ingest and cold-load benchmark (`python bench/ingest.py [--rows-per-symbol N]`).

1. ingest: a seeded synthetic CSV of 500 symbols x 7,600 business days (3.8 M rows, ~252 MB) is
   ingested into an empty lake by `algotrading ingest csv FILE --lake DIR` in a fresh process;
   wall time and that process's peak resident memory (getrusage of the child) are reported.
   The same file is then ingested again into the full lake (the merge path: every row kept).
2. cold load: `python -c "load_prices(SYM)"` and `algotrading backtest sma --symbol SYM --json`
   in fresh processes against that 500-symbol lake (median of 3), the path a notebook or the
   CLI takes on its first call.

The generated CSV is cached in a temporary folder for the run only. Timings depend on the
machine's load (printed), so this prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

SYMBOLS = 500
ROWS = 7_600
BIN = Path(sys.executable).parent


def make_csv(path: Path, symbols: int, rows: int, seed: int = 7) -> None:
    """Seeded random-walk OHLCV bars for `symbols` tickers S0000.., written symbol by symbol."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("1990-01-02", periods=rows).strftime("%Y-%m-%d")
    with open(path, "w") as out:
        out.write("dt,sym,open,high,low,close,vol\n")
        for k in range(symbols):
            close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
            open_ = close * np.exp(rng.normal(0, 0.005, rows))
            high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, rows))
            low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, rows))
            vol = rng.integers(1_000, 50_000_000, rows)
            frame = pd.DataFrame({"dt": days, "sym": f"S{k:04d}", "open": open_.round(6),
                                  "high": high.round(6), "low": low.round(6),
                                  "close": close.round(6), "vol": vol})
            frame.to_csv(out, header=False, index=False, lineterminator="\n")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(seconds, peak RSS of the child in MB, result) of one fresh process."""
    code = ("import resource, subprocess, sys, time, json\n"
            "t = time.perf_counter()\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "dt = time.perf_counter() - t\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
            "print(json.dumps([dt, rss, r.returncode, r.stdout[-2000:], r.stderr[-2000:]]))\n")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                         check=True, env=env)

    seconds, rss, rc, stdout, stderr = json.loads(out.stdout)
    return seconds, rss, subprocess.CompletedProcess(cmd, rc, stdout, stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-symbol", type=int, default=ROWS)
    ap.add_argument("--symbols", type=int, default=SYMBOLS)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="algo-bench-ingest-"))
    env = dict(os.environ, ALGO_LAKE=str(work / "lake"))
    try:
        src = work / "big.csv"
        make_csv(src, args.symbols, args.rows_per_symbol)
        size_mb = src.stat().st_size / 1e6
        print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
              f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")
        print(f"input: {src.stat().st_size:,} bytes ({size_mb:.0f} MB), "
              f"{args.symbols} symbols x {args.rows_per_symbol} rows\n")
        print("| case | seconds | peak RSS (MB) | exit |")
        print("|---|---:|---:|---:|")
        cli = [str(BIN / "algotrading")]
        for label in ("ingest into an empty lake", "ingest again (merge, all kept)"):
            seconds, rss, res = timed([*cli, "ingest", "csv", str(src), "--lake", env["ALGO_LAKE"]], env)
            print(f"| {label} | {seconds:.1f} | {rss:.0f} | {res.returncode} |")
            if res.returncode:
                print(res.stderr.strip().splitlines()[-1])
        sym = "S0123"
        load = [sys.executable, "-c",
                f"from algotrading.query import load_prices; print(len(load_prices('{sym}')))"]
        back = [*cli, "backtest", "sma", "--symbol", sym, "--json"]
        for label, cmd in (("cold load_prices (500-symbol lake)", load),
                           ("cold backtest sma --json (500-symbol lake)", back)):
            runs = [timed(cmd, env) for _ in range(3)]
            med = statistics.median(r[0] for r in runs)
            rc = runs[-1][2].returncode
            print(f"| {label} | {med:.2f} | {max(r[1] for r in runs):.0f} | {rc} |")
            if rc:
                print(runs[-1][2].stderr.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
