"""Training entry point for the forecaster, honouring the SageMaker training contract.

In a SageMaker job (`python -m algotrading.models.train`, see algotrading.jobs): hyperparameters
from /opt/ml/input/config/hyperparameters.json, the symbol's bars as `<SYM>.csv` (the lake's
`dt,sym,open,high,low,close,vol` format) in SM_CHANNEL_TRAINING, the artifact written to
SM_MODEL_DIR (SageMaker uploads it as model.tar.gz), metrics printed as `name=value;`. The local
backend calls `run` in-process with ordinary folders: the same code, the same artifact.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from algotrading import jobs, schema
from algotrading.models import forecast

CHANNEL = "training"
ENTRY = "algotrading.models.train"


def write_prices(prices: pd.DataFrame, folder: str | Path, symbol: str) -> Path:
    """The bars as the channel's `<SYM>.csv`, in the lake's format."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = prices.reset_index()
    rows.insert(1, "sym", symbol)
    rows["dt"] = rows["dt"].dt.strftime("%Y-%m-%d")
    path = folder / f"{symbol}.csv"
    rows.loc[:, list(schema.NAMES)].to_csv(path, index=False)
    return path


def read_prices(folder: str | Path, symbol: str) -> pd.DataFrame:
    """`<SYM>.csv` from the channel folder, validated like an ingest."""
    path = Path(folder) / f"{symbol}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training channel has no bars for {symbol}")
    frame = pd.read_csv(path, dtype={"dt": str, "sym": str})
    return schema.to_prices(schema.validate(frame, str(path)), symbol)


def run(data_dir: str | Path, model_dir: str | Path, params: dict[str, Any]
        ) -> tuple[forecast.Forecaster, dict[str, Any]]:
    """Train on the channel's bars, save the artifact to `model_dir`, print the metrics."""
    cfg = forecast.Config.from_params(params)
    prices = read_prices(data_dir, cfg.symbol)
    model, report = forecast.train(prices, cfg)
    forecast.save(model, model_dir)
    jobs.print_metrics(model.meta["metrics"])
    return model, report


def train_local(prices: pd.DataFrame, cfg: forecast.Config, model_dir: str | Path
                ) -> tuple[forecast.Forecaster, dict[str, Any]]:
    """The local backend: the entry's `run` in-process, the bars staged in a temporary channel."""
    with tempfile.TemporaryDirectory(prefix="algotrading-channel-") as tmp:
        write_prices(prices, tmp, cfg.symbol)
        return run(tmp, model_dir, asdict(cfg))


def submit(prices: pd.DataFrame, cfg: forecast.Config, output_path: str, wait: bool = False,
           **options: Any) -> str:
    """The aws backend: upload the bars to `<output_path>/data/<SYM>-<fingerprint>/<SYM>.csv` and
    start this entry as a SageMaker training job (algotrading.jobs); returns the job name. The
    artifact lands in `<output_path>/<job>/output/model.tar.gz` (`forecast.load` reads it)."""
    from algotrading import aws

    if not output_path.startswith("s3://"):
        raise ValueError(f"output_path must be an s3:// URL, not {output_path!r}")
    with tempfile.TemporaryDirectory(prefix="algotrading-channel-") as tmp:
        path = write_prices(prices, tmp, cfg.symbol)
        prefix = f"{output_path.rstrip('/')}/data/{cfg.symbol}-{forecast.fingerprint(prices)[:12]}"
        bucket, _, key = prefix.removeprefix("s3://").partition("/")
        aws.client("s3").upload_file(str(path), bucket, f"{key}/{path.name}")
    options.setdefault("base_job_name", jobs.job_prefix(f"forecast-{cfg.symbol}"))
    return jobs.submit(ENTRY, {CHANNEL: f"{prefix}/"}, output_path, wait=wait,
                       hyperparameters=asdict(cfg),
                       metric_definitions=jobs.metric_definitions(forecast.METRICS), **options)


def train_model(prices: pd.DataFrame, cfg: forecast.Config, backend: str = "local",
                model_dir: str | Path | None = None, output_path: str | None = None,
                **options: Any) -> tuple[forecast.Forecaster, str]:
    """Train by the configured backend and return the model with its artifact's location:
    local: in-process into `model_dir`; aws: a SageMaker job (waited for) writing
    `<output_path>/<job>/output/model.tar.gz`, which is then loaded from S3."""
    if backend == "local":
        if model_dir is None:
            raise ValueError("the local backend needs model_dir")
        return train_local(prices, cfg, model_dir)[0], str(model_dir)
    if backend != "aws":
        raise ValueError(f"backend must be 'local' or 'aws', not {backend!r}")
    if output_path is None:
        raise ValueError("the aws backend needs output_path (an s3:// prefix)")
    job = submit(prices, cfg, output_path, wait=True, **options)
    artifact = jobs.describe(job)["ModelArtifacts"]["S3ModelArtifacts"]
    return forecast.load(artifact), artifact


def main() -> int:
    run(jobs.channel(CHANNEL), jobs.model_dir(), jobs.hyperparameters())
    return 0


if __name__ == "__main__":
    sys.exit(main())
