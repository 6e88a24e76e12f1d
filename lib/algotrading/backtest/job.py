"""`python -m algotrading.backtest.job`: one SageMaker training job's share of backtest work, by
the entry contract of algotrading.jobs (hyperparameters file, SM_CHANNEL_PRICES, SM_MODEL_DIR).

Two modes, chosen by the `mode` hyperparameter:

- `shard`: shard `shard` of `shards` of a sweep grid (`shard_grid` splits the grid's first
  parameter into contiguous runs, so the shards' tables, concatenated in shard order, are the
  rows of the local sweep in the same order); writes `sweep.csv` into the model folder.
- `trial`: one parameter set of a tuning job, scored on the train period (printed as
  `algo:<metric>=<value>;`, what the tuner's objective reads) and, separately, on the
  validation period (`valid:<metric>=...;`, reported but never optimised).

The prices channel holds `<SYM>.csv` in the lake's format (the S3 object the client points at).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from algotrading import jobs, schema
from algotrading.backtest.engine import run
from algotrading.backtest.sweep import sweep

SWEEP_FILE = "sweep.csv"
TRIAL_FILE = "trial.json"
TRAIN_PREFIX = "algo:"  # the workshop's objective name, algo:pnl
VALID_PREFIX = "valid:"
REPORTED = ("pnl", "sharpe", "total_return", "max_drawdown", "trades_closed")
CONTROL = ("mode", "strategy", "symbol", "start", "end", "grid", "shard", "shards", "params",
           "train_start", "train_end", "valid_start", "valid_end")


def shard_grid(grid: Mapping[str, list[Any]], shard: int, shards: int) -> dict[str, list[Any]]:
    """Shard `shard` (0-based) of `shards`: the grid with its first parameter's values cut into
    `shards` contiguous runs (sizes differ by at most one) and the other parameters whole."""
    if not grid:
        raise ValueError("the grid is empty")
    first, values = next(iter(grid.items()))
    values = list(values)
    if not 1 <= shards <= len(values):
        raise ValueError(f"shards={shards}: want 1..{len(values)}, the number of values of the grid's "
                         f"first parameter {first}")
    if not 0 <= shard < shards:
        raise ValueError(f"shard={shard}: want 0..{shards - 1}")
    cut = np.array_split(np.arange(len(values)), shards)[shard]
    return {first: [values[i] for i in cut.tolist()], **{k: list(v) for k, v in grid.items()
                                                          if k != first}}


def prices(symbol: str, start: str | None = None, end: str | None = None,
           folder: Path | None = None) -> pd.DataFrame:
    """`symbol`'s bars from the prices channel, between start and end inclusive (as load_prices)."""
    if not re.fullmatch(r"[A-Za-z0-9.\-_^]+", symbol):  # a ticker, never a path
        raise ValueError(f"symbol {symbol!r} has characters a ticker never has")
    path = (folder or jobs.channel("prices")) / f"{symbol}.csv"
    if not path.is_file():
        raise ValueError(f"no {path.name} in the prices channel {path.parent}")
    frame = schema.to_prices(pd.read_csv(path, dtype={"dt": str, "sym": str}), symbol)
    return frame.loc[start:end]


def read_table(data: bytes | str | Path) -> pd.DataFrame:
    """A shard's sweep.csv (bytes or a path) as the DataFrame the shard wrote."""
    import io

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return pd.read_csv(source)


def run_shard(hp: Mapping[str, Any], out: Path) -> pd.DataFrame:
    grid = shard_grid(hp["grid"], int(hp["shard"]), int(hp["shards"]))
    table = sweep(hp["strategy"], prices(hp["symbol"], hp.get("start"), hp.get("end")), grid,
                  progress=False, **hp.get("params", {}))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / SWEEP_FILE, index=False)
    print(f"shard {hp['shard']} of {hp['shards']}: {len(table)} rows", flush=True)
    return table


def run_trial(hp: Mapping[str, Any], out: Path) -> dict[str, dict[str, float]]:
    params = {**hp.get("params", {}), **{k: v for k, v in hp.items() if k not in CONTROL}}
    bars = prices(hp["symbol"])
    result = {}
    for name, prefix in (("train", TRAIN_PREFIX), ("valid", VALID_PREFIX)):
        window = bars.loc[hp.get(f"{name}_start"):hp.get(f"{name}_end")]
        stats = run(hp["strategy"], window, **params).metrics
        result[name] = {k: float(stats[k]) for k in REPORTED}
        jobs.print_metrics(result[name], prefix=prefix)
    out.mkdir(parents=True, exist_ok=True)
    (out / TRIAL_FILE).write_text(json.dumps({"params": params, **result}, sort_keys=True))
    return result


def trial_metric_definitions() -> dict[str, str]:
    """What a tuning job scrapes from a trial's log: train metrics (the objective) and validation."""
    return {**jobs.metric_definitions(REPORTED, TRAIN_PREFIX),
            **jobs.metric_definitions(REPORTED, VALID_PREFIX)}


def main() -> None:
    hp = jobs.hyperparameters()
    modes = {"shard": run_shard, "trial": run_trial}
    if hp.get("mode") not in modes:
        raise SystemExit(f"hyperparameter mode must be one of {sorted(modes)}, got {hp.get('mode')!r}")
    modes[hp["mode"]](hp, jobs.model_dir())


if __name__ == "__main__":
    main()
