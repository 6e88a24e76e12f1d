"""The PPO training job request (algotrading.rl.train.submit) against the moto server.

What this proves and what it does not is as in tests/test_jobs.py: moto RECORDS the training job
(image, role, command, hyperparameters, channels, metric definitions) and does not run it; the
entry itself runs in-process in tests/test_rl_train.py; only a real account runs the container.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("sagemaker.train")

from test_aws import aws_env, moto_url  # noqa: E402,F401  (shared moto fixtures)
from test_jobs import _launcher, _role, sagemaker_env, sent  # noqa: E402,F401

from algotrading import aws, jobs  # noqa: E402
from algotrading.rl import train  # noqa: E402


@pytest.fixture
def prices() -> pd.DataFrame:
    n = 300
    close = 50 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
    index = pd.bdate_range("2012-01-02", periods=n, name="dt")
    return pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                         "vol": np.full(n, 1e6)}, index=index)


@pytest.mark.aws
def test_ppo_job_request_on_the_moto_server(sagemaker_env, sent, prices):  # noqa: F811
    name = train.submit(prices, "SYN", "2013-12-31", "s3://algo-bucket/models", seed=2,
                        engine={"commission_bps": 1.0}, hyper={"total_timesteps": 50_000},
                        role=_role())
    job = jobs.describe(name)
    assert name.startswith("algotrading-ppo-SYN-")
    assert job["HyperParameters"] == {"symbol": "SYN", "train_end": "2013-12-31", "seed": "2",
                                      "commission_bps": "1.0", "total_timesteps": "50000"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    data = f"s3://algo-bucket/models/data/SYN-{train.fingerprint(prices)[:12]}/"
    assert channels["training"] == data
    body = aws.client("s3").get_object(Bucket="algo-bucket",
                                       Key=data.removeprefix("s3://algo-bucket/") + "hist_data_daily/SYN.csv")
    assert body["Body"].read().decode().startswith("dt,sym,open,high,low,close,vol\n2012-01-02,SYN,")
    (request,) = sent
    assert {m["Name"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]} == \
        set(train.JOB_METRICS)
    assert f"python -m {train.ENTRY}" in _launcher(job)
    with pytest.raises(ValueError, match="PPO has no parameter"):
        train.submit(prices, "SYN", "2013-12-31", "s3://algo-bucket/models", hyper={"epochs": 1})

