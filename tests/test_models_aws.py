"""The forecaster's aws backend against a moto server on 127.0.0.1.

Proven here: the bars are uploaded to S3 and a SageMaker training job is created for the
forecaster's entry (`python -m algotrading.models.train`) with the PyTorch image, the role, the
hyperparameters, the `training` channel on the uploaded data and the metric definitions of the
metrics the entry prints; `forecast.load` reads a model.tar.gz from S3. moto RECORDS the job and
does not run it (no container, no model.tar.gz): the test puts a model.tar.gz, packed from a local
run of the same entry, where SageMaker would leave it. That the container runs is shown only by
a real account; that the entry works under the SageMaker layout is tested in test_models.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("sagemaker.train")

from test_aws import aws_env, moto_url  # noqa: E402,F401  (shared moto fixtures)
from test_jobs import sent  # noqa: E402,F401  (the CreateTrainingJob request as sent)

from algotrading import aws, jobs, schema, sources  # noqa: E402
from algotrading.models import forecast, train  # noqa: E402

pytestmark = pytest.mark.aws
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


@pytest.fixture
def role(aws_env, monkeypatch) -> str:  # noqa: F811
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto has no SimulatePrincipalPolicy
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    aws.client("s3").create_bucket(Bucket="algo-lake")
    return aws.client("iam").create_role(RoleName="algo-sagemaker",
                                         AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]


def test_forecast_job_request_and_artifact_from_s3(role, sent, tmp_path) -> None:  # noqa: F811
    prices = schema.to_prices(sources.read("sample").frame, "IXIC")
    cfg = forecast.Config(symbol="IXIC", epochs=2, patience=1)
    name = train.submit(prices, cfg, "s3://algo-lake/models", role=role)
    job = jobs.describe(name)
    assert name.startswith("algotrading-forecast-IXIC-")
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.5.1-cpu-py311")
    assert job["RoleArn"] == role
    (request,) = sent
    assert {m["Name"]: m["Regex"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]} \
        == jobs.metric_definitions(forecast.METRICS)
    assert job["HyperParameters"] == {k: v if isinstance(v, str) else json.dumps(v)
                                      for k, v in asdict(cfg).items()}
    assert forecast.Config.from_params(job["HyperParameters"]) == cfg  # what the entry rebuilds
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in job["InputDataConfig"]}
    data_uri = channels[train.CHANNEL]
    assert data_uri.startswith(f"s3://algo-lake/models/data/IXIC-{forecast.fingerprint(prices)[:12]}")
    key = f"{data_uri.removeprefix('s3://algo-lake/')}IXIC.csv"
    body = aws.client("s3").get_object(Bucket="algo-lake", Key=key)["Body"].read()
    (tmp_path / "channel").mkdir()
    (tmp_path / "channel" / "IXIC.csv").write_bytes(body)
    pd.testing.assert_frame_equal(train.read_prices(tmp_path / "channel", "IXIC"), prices)

    # where SageMaker would leave the artifact; moto does not run the job, so put one there
    model, _ = train.train_local(prices, cfg, tmp_path / "model")
    artifact = f"{job['OutputDataConfig']['S3OutputPath']}/{name}/output/model.tar.gz"
    tar = forecast.pack(tmp_path / "model", tmp_path / "model.tar.gz")
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    aws.client("s3").upload_file(str(tar), bucket, key)
    back = forecast.load(artifact)
    pd.testing.assert_frame_equal(back.predict(prices), model.predict(prices))


def test_forecast_job_needs_an_s3_output(role) -> None:
    prices = schema.to_prices(sources.read("sample").frame, "IXIC")
    with pytest.raises(ValueError, match="s3://"):
        train.submit(prices, forecast.Config(symbol="IXIC"), "models/", role=role)
