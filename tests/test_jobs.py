"""SageMaker training jobs (algotrading.jobs): the container-side contract, and job submission
against a moto server on 127.0.0.1.

What the emulator proves: the SageMaker SDK 3.x ModelTrainer request we build is well formed and
carries the image, role, command, hyperparameters, channels, output path, instance and metric
definitions we asked for, with network isolation on by default; the code channel uploaded to S3
holds the `algotrading` package, a requirements file that installs only from the channel's
`wheels/` (placeholders here: tests/test_aws.py `placeholder_wheels`; the real wheels and an
offline install: tests/test_wheelhouse.py), and the SDK's launcher script runs
`python -m <entry>` from it.
moto RECORDS the training job and does not run it (it reports "Completed" at once, with no
container, no logs and no model.tar.gz), so nothing here proves that the image starts, that the
requirements install, or that the entry succeeds in the container: the entry scripts are run
in-process under a temporary SM_* layout by their own tests, and only a real account runs the
container. moto also lacks iam:SimulatePrincipalPolicy, so the SDK's client-side role check is
switched off here (SAGEMAKER_VALIDATE_ROLE=false); a real account runs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("sagemaker.train")

from test_aws import TEMPLATE, aws_env, moto_url  # noqa: E402,F401  (shared moto fixtures)

from algotrading import aws, jobs  # noqa: E402
from algotrading.errors import ParameterError  # noqa: E402

ENTRY = "algotrading.cli"  # any module of the package with a __main__ block will do
TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


@pytest.fixture
def sagemaker_env(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto has no SimulatePrincipalPolicy
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # ... so the SDK's own probe of it fails fast
    aws.client("s3").create_bucket(Bucket="algo-bucket")
    aws.client("s3").put_object(Bucket="algo-bucket", Key="data/INTC.csv", Body=b"dt,close\n")
    return aws_env


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The CreateTrainingJob parameters as sent over the wire (moto's DescribeTrainingJob answers
    a canned MetricDefinitions list, so the metric regexes are checked on the request itself)."""
    requests: list[dict] = []
    make = jobs.session

    def session(*args, **kwargs):
        out = make(*args, **kwargs)
        out.boto_session.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                                         lambda params, **_: requests.append(params))
        return out

    monkeypatch.setattr(jobs, "session", session)
    return requests


def _role(name: str = "algo-sagemaker") -> str:
    return aws.client("iam").create_role(RoleName=name,
                                         AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]


def _launcher(job: dict) -> str:
    """The SDK's sm_train.sh from the job's sm_drivers channel."""
    (url,) = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
              if c["ChannelName"] == "sm_drivers"]
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    body = aws.client("s3").get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/sm_train.sh")
    return body["Body"].read().decode()


@pytest.mark.aws
def test_submit_records_the_training_job_we_asked_for(sagemaker_env: str, sent: list) -> None:
    """moto records the job; it does not run it (see the module docstring)."""
    role = _role()
    metrics = jobs.metric_definitions(["auc_long", "loss"], prefix="test_")
    name = jobs.submit(ENTRY, {"training": "s3://algo-bucket/data/"}, "s3://algo-bucket/models",
                       role=role, hyperparameters={"epochs": 5, "symbol": "INTC", "rate": 0.02},
                       metric_definitions=metrics, instance_type="ml.c5.xlarge",
                       base_job_name="algo-forecast")
    assert re.fullmatch(r"algo-forecast-\d{14}", name)
    job = jobs.describe(name)
    spec = job["AlgorithmSpecification"]
    assert spec["TrainingImage"] == jobs.image_uri("us-east-1", "ml.c5.xlarge")
    assert spec["TrainingImage"].endswith("/pytorch-training:2.5.1-cpu-py311")
    (request,) = sent
    assert {m["Name"]: m["Regex"]
            for m in request["AlgorithmSpecification"]["MetricDefinitions"]} == metrics
    assert job["RoleArn"] == role
    assert job["HyperParameters"] == {"epochs": "5", "symbol": "INTC", "rate": "0.02"}
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://algo-bucket/models"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in job["InputDataConfig"]}
    assert channels["training"] == "s3://algo-bucket/data/"
    assert set(channels) == {"training", "code", "sm_drivers"}  # code + launcher: the SDK's

    s3 = aws.client("s3")
    code_prefix = channels["code"].removeprefix("s3://algo-bucket/")
    keys = {o["Key"].removeprefix(code_prefix).lstrip("/")
            for o in s3.list_objects_v2(Bucket="algo-bucket", Prefix=code_prefix)["Contents"]}
    assert {"algotrading/__init__.py", "algotrading/jobs.py", "algotrading/cli.py",
            "algotrading/job-lock.txt", "requirements.txt"} <= keys
    assert not any("__pycache__" in k for k in keys)
    # network isolation (the default): the container installs the lock's wheels from the channel
    assert request["EnableNetworkIsolation"] is True and job["EnableNetworkIsolation"] is True
    requirements = s3.get_object(Bucket="algo-bucket",
                                 Key=f"{code_prefix}/requirements.txt")["Body"].read().decode()
    lines = [line for line in requirements.splitlines() if not line.startswith("#")]
    assert lines[:2] == ["--no-index", "--find-links wheels"]
    assert not re.search(r"index-url|https?://", requirements)
    pins = dict(line.split(" --hash=")[0].split("==") for line in lines[2:])
    from importlib.metadata import version

    for spec in jobs.REQUIREMENTS:  # each at the version that runs here, with what it needs
        name = spec.split(">")[0]
        assert pins[name] == version(name)
    assert {"scipy", "joblib", "threadpoolctl", "python-dateutil"} <= set(pins)  # sklearn's, pandas'
    wheels = sorted(k for k in keys if k.startswith("wheels/"))
    assert len(wheels) == len(pins) and all(k.endswith(".whl") for k in wheels)
    launcher = _launcher(job)
    assert f"python -m {ENTRY}" in launcher
    assert "install_requirements.py requirements.txt" in launcher
    # the uploaded code is exactly what stage_source would put in the channel
    body = s3.get_object(Bucket="algo-bucket", Key=f"{code_prefix}/algotrading/jobs.py")["Body"]
    assert body.read() == Path(jobs.__file__).read_bytes()


@pytest.mark.aws
def test_role_and_job_name_come_from_the_stack(sagemaker_env: str, sent: list, monkeypatch) -> None:
    role = _role("algo-sagemaker")  # the ARN TEMPLATE's SageMakerRoleArn output names
    aws.client("cloudformation").create_stack(StackName="algo-dev",
                                              TemplateBody=json.dumps(TEMPLATE))
    monkeypatch.setenv("ALGO_STACK", "algo-dev")
    name = jobs.submit(ENTRY, {"training": "s3://algo-bucket/data/"}, "s3://algo-bucket/out/",
                       requirements=())
    job = jobs.describe(name)
    assert job["RoleArn"] == role
    assert re.fullmatch(r"algo-dev-cli-\d{14}", name)
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://algo-bucket/out"
    assert "MetricDefinitions" not in sent[0]["AlgorithmSpecification"]
    assert "install_requirements" not in _launcher(job)  # requirements=(): nothing to install


@pytest.mark.aws
def test_isolation_off_pins_for_the_index_and_says_so(sagemaker_env: str, sent: list,
                                                      monkeypatch) -> None:
    """ALGO_JOB_NETWORK_ISOLATION=false (a stack deployed with JobNetworkIsolation=false): the
    request states isolation off, the container pip-installs the pinned requirements from the
    index (no wheels shipped), and the submitter warns that it does."""
    monkeypatch.setenv("ALGO_JOB_NETWORK_ISOLATION", "false")
    with pytest.warns(UserWarning, match="network isolation is off.*pip-installs"):
        name = jobs.submit(ENTRY, {"training": "s3://algo-bucket/data/"}, "s3://algo-bucket/o",
                           role=_role())
    (request,) = sent
    assert request["EnableNetworkIsolation"] is False
    job = jobs.describe(name)
    (code,) = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]
               if c["ChannelName"] == "code"]
    prefix = code.removeprefix("s3://algo-bucket/").rstrip("/")
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="algo-bucket", Prefix=prefix)["Contents"]]
    assert not [k for k in keys if "/wheels/" in k]
    text = s3.get_object(Bucket="algo-bucket", Key=f"{prefix}/requirements.txt")["Body"].read()
    assert text.decode().split() == jobs.pinned(jobs.REQUIREMENTS)
    monkeypatch.setenv("ALGO_JOB_NETWORK_ISOLATION", "maybe")
    with pytest.raises(ParameterError, match="ALGO_JOB_NETWORK_ISOLATION='maybe'"):
        jobs.network_isolation()


@pytest.mark.aws
def test_bad_job_requests_fail_before_anything_is_created(sagemaker_env: str, tmp_path,
                                                          monkeypatch) -> None:
    monkeypatch.delenv("ALGO_STACK", raising=False)
    with pytest.raises(ValueError, match="execution role"):
        jobs.submit(ENTRY, {}, "s3://algo-bucket/out")
    with pytest.raises(ValueError, match="s3://"):
        jobs.submit(ENTRY, {}, "/tmp/out", role=_role())
    with pytest.raises(ValueError, match="not in the staged source"):
        jobs.model_trainer("algotrading.nope", jobs.stage_source(tmp_path), "s3://algo-bucket/o",
                           role="arn:aws:iam::123456789012:role/algo-sagemaker")
    with pytest.raises(ValueError, match="module name"):
        jobs.submit("algotrading/cli.py", {}, "s3://algo-bucket/out", role="x")
    # a channel staged for the index cannot feed an isolated job (its pip would find no index)
    staged = jobs.stage_source(tmp_path / "indexed", isolated=False)
    with pytest.raises(ParameterError, match="installs from a package index"):
        jobs.model_trainer(ENTRY, staged, "s3://algo-bucket/o", isolated=True,
                           role="arn:aws:iam::123456789012:role/algo-sagemaker")
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


# --- the container side (no AWS) ---------------------------------------------------------------

def test_job_prefix_fits_sagemaker_names(monkeypatch) -> None:
    monkeypatch.delenv("ALGO_STACK", raising=False)
    assert jobs.job_prefix("train") == "algotrading-train"
    assert jobs.job_prefix("sweep_3", stack="my_stack") == "my-stack-sweep-3"
    long = jobs.job_prefix("shard-0001", stack="x" * 80)
    assert len(long) + jobs.UNIQUE_SUFFIX <= 63 and re.fullmatch(r"[a-zA-Z0-9-]+", long)


def test_entry_contract_reads_the_sm_layout(tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "config"
    config.mkdir()
    # as SageMaker writes it: every value a string (the SDK JSON-encodes non-strings)
    (config / "hyperparameters.json").write_text(json.dumps(
        {"epochs": "5", "rate": "0.02", "symbol": "INTC", "flag": "true", "grid": "[1, 2]"}))
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(config))
    monkeypatch.setenv("SM_CHANNEL_TRAINING", str(tmp_path / "data"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    assert jobs.hyperparameters() == {"epochs": 5, "rate": 0.02, "symbol": "INTC", "flag": True,
                                      "grid": [1, 2]}
    assert jobs.channel("training") == tmp_path / "data"
    assert jobs.model_dir() == tmp_path / "model"
    assert jobs.hyperparameters(str(tmp_path / "none")) == {}

    line = jobs.print_metrics({"auc_long": 0.61234567, "loss": float("nan"), "n": 3},
                              prefix="test_")
    assert capsys.readouterr().out == line + "\n"
    found = {name: re.search(regex, "INFO " + line + " tail").group(1)
             for name, regex in jobs.metric_definitions(["auc_long", "loss", "n"],
                                                        prefix="test_").items()}
    assert found == {"test_auc_long": "0.612346", "test_loss": "nan", "test_n": "3"}
    # a metric whose name ends another's is not confused with it
    assert re.search(jobs.metric_definitions(["auc"])["auc"], "val_auc=0.5;") is None


def test_stage_source_copies_the_package_only(tmp_path) -> None:
    """Without isolation (the pip-from-the-index path); the isolated code channel:
    tests/test_wheelhouse.py."""
    (tmp_path / "algotrading").mkdir()
    (tmp_path / "algotrading" / "stale.py").write_text("old")  # a previous staging is replaced
    out = jobs.stage_source(tmp_path, requirements=["pandas>=2.2"], isolated=False)
    assert out == tmp_path
    assert (tmp_path / "algotrading" / "jobs.py").is_file()
    assert (tmp_path / "algotrading" / "backtest" / "engine.py").is_file()
    assert not (tmp_path / "algotrading" / "stale.py").exists()
    assert not list(tmp_path.rglob("__pycache__"))
    assert (tmp_path / "requirements.txt").read_text() == f"pandas=={pd.__version__}\n"
    assert jobs.pinned(["not-installed-anywhere>=1"]) == ["not-installed-anywhere>=1"]


def test_vpc_config_needs_both_outputs_or_neither() -> None:
    """Issue 20 item 5: the stack's policy creates VPC jobs only with subnet and group both."""
    assert jobs.vpc_config(None, None) is None
    assert jobs.vpc_config("subnet-0a, subnet-0b", "sg-01") == {
        "subnets": ["subnet-0a", "subnet-0b"], "security_group_ids": ["sg-01"]}
    for half in (("subnet-0a", None), (None, "sg-01"), (" , ", "sg-01")):
        with pytest.raises(ParameterError, match="ALGO_JOB_SUBNETS=.*needs both"):
            jobs.vpc_config(*half)
