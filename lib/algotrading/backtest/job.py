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

The client side lives here too (the jobs' submitter and their entry share one module):
`sweep_jobs` submits a sweep as shards and `gather_sweep` concatenates their tables (wait between
with `jobs.wait`); `tune` starts a SageMaker hyperparameter tuning job whose trials run this entry.
sagemaker and boto3 are imported inside those functions, so the container never needs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
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
           "train_start", "train_end", "valid_start", "valid_end", "tuned")


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


HP_VALUE_MAX = 2500  # SageMaker refuses a hyperparameter value longer than this


def encode_grid(grid: Mapping[str, list[Any]]) -> dict[str, Any]:
    """The grid as a shard's hyperparameter: each run of evenly spaced integers as
    {"range": [start, stop, step]} (Python's range), other values as their list, so a
    5..200 x 20..400 grid takes 60 characters instead of 2,739."""
    out: dict[str, Any] = {}
    for name, values in grid.items():
        values = list(values)
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        step = values[1] - values[0] if ints and len(values) > 2 else 0
        if step and list(range(values[0], values[-1] + step, step)) == values:
            out[name] = {"range": [values[0], values[-1] + step, step]}
        else:
            out[name] = values
    return out


def decode_grid(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`encode_grid`'s inverse (a plain grid passes unchanged)."""
    return {k: list(range(*v["range"])) if isinstance(v, dict) else list(v)
            for k, v in grid.items()}


def check_hyperparameters(hp: Mapping[str, Any]) -> None:
    """Refuse, before anything is submitted, a value SageMaker would refuse (over HP_VALUE_MAX
    characters as sent), naming it."""
    for name, value in hp.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > HP_VALUE_MAX:
            raise ValueError(f"hyperparameter {name!r} is {len(text):,} characters; SageMaker "
                             f"accepts at most {HP_VALUE_MAX:,} (use evenly spaced integer "
                             "values, which are sent as ranges, or fewer values)")


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
    grid = shard_grid(decode_grid(hp["grid"]), int(hp["shard"]), int(hp["shards"]))
    start = {"start": hp["start"]} if hp.get("start") else {}  # earlier bars warm indicators up
    table = sweep(hp["strategy"], prices(hp["symbol"], end=hp.get("end")), grid,
                  progress=False, **start, **hp.get("params", {}))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / SWEEP_FILE, index=False)
    print(f"shard {hp['shard']} of {hp['shards']}: {len(table)} rows", flush=True)
    return table


def run_trial(hp: Mapping[str, Any], out: Path) -> dict[str, dict[str, float]]:
    """The strategy gets `params` and the tuned names (`tuned`, else every hyperparameter that
    is neither ours nor one SageMaker adds, such as `_tuning_objective_metric`)."""
    own = jobs.own_hyperparameters(hp)
    tuned = hp["tuned"] if "tuned" in hp else [k for k in own if k not in CONTROL]
    params = {**hp.get("params", {}), **{k: own[k] for k in tuned}}
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


# --- the client side: submit the shards or the tuning job, gather the shards' tables ------------

ENTRY = "algotrading.backtest.job"
# The backtest engine's own imports beyond jobs.REQUIREMENTS (pinned as in pyproject.toml); with
# network isolation their share of requirements/job.txt ships as wheels (algotrading.wheelhouse).
REQUIREMENTS = (*jobs.REQUIREMENTS, "numba>=0.60,<0.70", "tqdm>=4.66")


def _prices_uri(symbol: str, lake: str | None = None) -> str:
    """The S3 object of `symbol` in the lake (the prices channel of a backtest job)."""
    from algotrading import lake as lake_mod
    from algotrading.config import settings
    from algotrading.schema import DataError

    root = lake or settings().lake_path()
    if not root.startswith("s3://"):
        raise ValueError(f"SageMaker jobs read the lake from S3; the lake is {root!r} "
                         "(set ALGO_STACK or ALGO_LAKE=s3://...)")
    if symbol not in lake_mod.symbols(lake=root):
        raise DataError(f"{root}/hist_data_daily", f"symbol {symbol} is not in the lake; ingest it")
    return f"{root}/{lake_mod.key(symbol)}"


def _output_path(output_path: str | None, kind: str) -> str:
    from algotrading.config import settings

    if output_path:
        return output_path.rstrip("/")
    root = settings().lake_path()
    if not root.startswith("s3://"):
        raise ValueError("pass output_path=s3://... (the lake is not in S3)")
    return f"{root}/jobs/{kind}"


def sweep_jobs(strategy: str, symbol: str, grid: Mapping[str, Iterable[Any]], shards: int, *,
               start: str | None = None, end: str | None = None,
               params: Mapping[str, Any] | None = None, output_path: str | None = None,
               lake: str | None = None, requirements: Iterable[str] = REQUIREMENTS,
               **options: Any) -> list[str]:
    """Submit a sweep as `shards` training jobs, shard i running `backtest.sweep` on
    `shard_grid(grid, i, shards)` over the lake's `symbol` file, and return the job names in shard
    order (for `jobs.wait` and `gather_sweep`). `start` is the first bar traded (earlier bars warm
    the indicators up, as in a local sweep); `options` go to `jobs.submit`."""
    grid = {k: list(v) for k, v in grid.items()}
    for i in range(shards):
        shard_grid(grid, i, shards)  # refuses a bad shard count before anything is submitted
    hps = [{"mode": "shard", "strategy": strategy, "symbol": symbol, "grid": encode_grid(grid),
            "shard": i, "shards": shards, "params": dict(params or {}),
            **{k: v for k, v in (("start", start), ("end", end)) if v}} for i in range(shards)]
    for hp in hps:
        check_hyperparameters(hp)
    uri, out = _prices_uri(symbol, lake), _output_path(output_path, "sweep")
    names = []
    for i, hp in enumerate(hps):
        names.append(jobs.submit(ENTRY, {"prices": uri}, out, hyperparameters=hp,
                                 base_job_name=jobs.job_prefix(f"sweep-{i}-of-{shards}"),
                                 requirements=requirements, **options))
    return names


def gather_sweep(job_names: Iterable[str], output_path: str | None = None,
                 region: str | None = None) -> pd.DataFrame:
    """The shards' tables, read from `<output_path>/<job>/output/model.tar.gz` and concatenated
    in the order of `job_names`: the table a local `backtest.sweep` returns."""
    import io
    import tarfile

    from algotrading import aws

    bucket, prefix = jobs.split_s3(_output_path(output_path, "sweep"))
    s3 = aws.client("s3", region)
    parts = []
    for name in job_names:
        key = "/".join(p for p in (prefix, name, "output", "model.tar.gz") if p)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            member = tar.extractfile(SWEEP_FILE)
            if member is None:
                raise ValueError(f"s3://{bucket}/{key} has no {SWEEP_FILE}")
            parts.append(read_table(member.read()))
    return pd.concat(parts, ignore_index=True)


def tune(strategy: str, symbol: str, ranges: Mapping[str, tuple[int, int]], *,
         train: tuple[str | None, str | None], validation: tuple[str | None, str | None],
         objective: str = "algo:pnl", max_jobs: int = 20, max_parallel_jobs: int = 2,
         params: Mapping[str, Any] | None = None, output_path: str | None = None,
         lake: str | None = None, wait: bool = False,
         requirements: Iterable[str] = REQUIREMENTS, **options: Any) -> Any:
    """Start a SageMaker hyperparameter tuning job over `strategy` (the workshop's path, rebuilt):
    each trial backtests one parameter set from the integer `ranges` (name -> (low, high)) and
    prints its train-period metrics as `algo:<name>` (the objective, e.g. algo:pnl, maximised)
    and its validation-period metrics as `valid:<name>`, which are recorded but never optimised.
    Returns the HyperparameterTuner (its `latest_tuning_job` names the job). `options` go to
    `jobs.model_trainer` (role, instance_type, image, max_runtime, region, isolated: network
    isolation, default `jobs.network_isolation()`)."""
    from sagemaker.core.parameter import IntegerParameter
    from sagemaker.core.training.configs import InputData
    from sagemaker.train.tuner import HyperparameterTuner

    if not objective.startswith(TRAIN_PREFIX):
        raise ValueError(f"objective {objective!r}: tune on the train period only "
                         f"(a metric named {TRAIN_PREFIX}<metric>)")
    definitions = trial_metric_definitions()
    if objective not in definitions:
        raise ValueError(f"objective {objective!r}: choose one of "
                         f"{sorted(k for k in definitions if k.startswith(TRAIN_PREFIX))}")
    uri, out = _prices_uri(symbol, lake), _output_path(output_path, "tune")
    hp = {"mode": "trial", "strategy": strategy, "symbol": symbol, "params": dict(params or {}),
          "tuned": sorted(ranges),
          **{k: v for k, v in zip(("train_start", "train_end", "valid_start", "valid_end"),
                                  (*train, *validation), strict=True) if v}}
    isolated = jobs.network_isolation(options.pop("isolated", None))
    with TemporaryDirectory(prefix="algotrading-tune-") as tmp:
        requirements = list(requirements)
        # JSON text ourselves: the tuner sends static values as str(), a Python repr
        # ("['a']", "{'size': 10}") that the entry could not decode
        hp = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hp.items()}
        source = jobs.stage_source(tmp, requirements, entry=ENTRY, isolated=isolated)
        trainer = jobs.model_trainer(ENTRY, source, out, hyperparameters=hp,
                                     requirements=bool(requirements), isolated=isolated, **options)
        tuner = HyperparameterTuner(
            model_trainer=trainer, objective_metric_name=objective, objective_type="Maximize",
            hyperparameter_ranges={k: IntegerParameter(lo, hi) for k, (lo, hi) in ranges.items()},
            metric_definitions=[{"Name": k, "Regex": v} for k, v in definitions.items()],
            max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs,
            base_tuning_job_name=tuning_prefix(strategy))
        tuner.tune(inputs=[InputData(channel_name="prices", data_source=uri)], wait=wait)
    return tuner


MAX_TUNING_PREFIX = 32 - jobs.UNIQUE_SUFFIX  # tuning job names have at most 32 characters


def tuning_prefix(strategy: str, stack: str | None = None) -> str:
    """`<stack>-tune-<strategy>` cut to MAX_TUNING_PREFIX; refused when the cut would lose the
    `<stack>-` that the template's policy scopes tuning jobs on (a stack name over 15 characters)."""
    prefix = jobs.job_prefix(f"tune-{strategy}", stack)[:MAX_TUNING_PREFIX]
    stack = jobs.job_prefix("x", stack)[:-2]
    if not prefix.startswith(f"{stack}-"):
        raise ValueError(f"stack name {stack!r} is longer than {MAX_TUNING_PREFIX - 2} characters: "
                         "tuning job names (32 characters) could not start with '<stack>-', which "
                         "the stack's policy requires; deploy under a shorter stack name")
    return prefix


def main() -> None:
    hp = jobs.hyperparameters()
    modes = {"shard": run_shard, "trial": run_trial}
    if hp.get("mode") not in modes:
        raise SystemExit(f"hyperparameter mode must be one of {sorted(modes)}, got {hp.get('mode')!r}")
    modes[hp["mode"]](hp, jobs.model_dir())


if __name__ == "__main__":
    main()
