"""Scale-out: a sweep split into SageMaker training jobs, and the workshop's tuning path.

Locally, the shard entry point (`python -m algotrading.backtest.job`) runs over SM_* folders as
it would in a container, and the shards' tables gathered together equal the local
`backtest.sweep` exactly. On the moto server (tests/test_aws.py's fixtures, the project's
template deployed), we check the N training-job requests, gather the shards' model.tar.gz from
where SageMaker would put them, and check the hyperparameter tuning job request.

moto records training and tuning jobs but never runs them (no container, no logs, no
model.tar.gz); so here the model.tar.gz files are built from the local shard runs and uploaded
to the S3 keys SageMaker writes. Only a real account proves that the container runs the entry,
that the tuner scrapes the metrics from real logs, and that the role's permissions suffice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from test_aws import STACK, _deploy, aws_env, moto_url  # noqa: F401  (the shared moto fixtures)

from algotrading import backtest, jobs, lake, schema, sources
from algotrading.backtest import job

# The workshop's EMA tuning ranges (fast 5-10 x slow 21-31), on the S&P 500 sample.
GRID = {"fast_period": list(range(5, 11)), "slow_period": list(range(21, 32))}
PARAMS = {"size": 10, "commission_per_share": 0.005}
START, END = "2005-01-03", "2012-12-31"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return sources.read("sample", symbols=["GSPC"]).frame


@pytest.fixture
def channel(tmp_path: Path, sample: pd.DataFrame) -> Path:
    """The prices channel as SageMaker lays it out: the lake's GSPC.csv in a folder."""
    folder = tmp_path / "input" / "data" / "prices"
    folder.mkdir(parents=True)
    (folder / "GSPC.csv").write_bytes(lake.to_csv_bytes(sample))
    return folder


def _run_entry(tmp_path: Path, channel: Path, name: str, hp: dict, monkeypatch) -> Path:
    """One job's container run: hyperparameters.json (every value a string, as SageMaker
    writes it), SM_CHANNEL_PRICES and SM_MODEL_DIR; returns the model folder."""
    config = tmp_path / name / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in hp.items()}))
    model = tmp_path / name / "model"
    monkeypatch.setenv("SM_INPUT_CONFIG_DIR", str(config))
    monkeypatch.setenv("SM_CHANNEL_PRICES", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(model))
    job.main()
    return model


def _shard_hp(i: int, shards: int) -> dict:
    return {"mode": "shard", "strategy": "ema", "symbol": "GSPC", "grid": GRID, "shard": i,
            "shards": shards, "params": PARAMS, "start": START, "end": END}


def _local_sweep(sample: pd.DataFrame) -> pd.DataFrame:
    prices = schema.to_prices(sample, "GSPC").loc[:END]  # bars before START warm the averages up
    return backtest.sweep("ema", prices, GRID, start=START, **PARAMS)


def test_shard_grid_splits_the_first_parameter_in_order() -> None:
    parts = [job.shard_grid(GRID, i, 4) for i in range(4)]
    assert [p["fast_period"] for p in parts] == [[5, 6], [7, 8], [9], [10]]
    assert all(p["slow_period"] == GRID["slow_period"] for p in parts)
    with pytest.raises(ValueError, match="shards=7: want 1..6"):
        job.shard_grid(GRID, 0, 7)
    with pytest.raises(ValueError, match="shard=4"):
        job.shard_grid(GRID, 4, 4)


def test_shards_over_sm_folders_gather_to_the_local_sweep_exactly(tmp_path, channel, sample,
                                                                  monkeypatch) -> None:
    shards = 4
    tables = [job.read_table(_run_entry(tmp_path, channel, f"shard{i}", _shard_hp(i, shards),
                                        monkeypatch) / job.SWEEP_FILE) for i in range(shards)]
    gathered = pd.concat(tables, ignore_index=True)
    local = _local_sweep(sample)
    assert len(local) == 6 * 11 and [len(t) for t in tables] == [22, 22, 11, 11]
    pd.testing.assert_frame_equal(gathered, local, check_exact=True)


def test_trial_reports_train_objective_and_validation_separately(tmp_path, channel, sample,
                                                                 monkeypatch, capsys) -> None:
    hp = {"mode": "trial", "strategy": "ema", "symbol": "GSPC", "params": {"size": 10},
          "fast_period": 8, "slow_period": 21, "train_start": "1999-01-04",
          "train_end": "2006-12-29", "valid_start": "2007-01-03", "valid_end": "2012-12-31",
          # what SageMaker adds to a tuning trial's hyperparameters: never strategy parameters
          "_tuning_objective_metric": "algo:pnl", "sagemaker_program": "algotrading_entry.py",
          "sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz",
          "sagemaker_region": "us-east-1", "sagemaker_container_log_level": "20"}
    model = _run_entry(tmp_path, channel, "trial", hp, monkeypatch)
    log = capsys.readouterr().out
    prices = schema.to_prices(sample, "GSPC")
    train = backtest.run("ema", prices.loc["1999-01-04":"2006-12-29"], size=10, fast_period=8,
                         slow_period=21).metrics
    valid = backtest.run("ema", prices.loc["2007-01-03":"2012-12-31"], size=10, fast_period=8,
                         slow_period=21).metrics
    scraped = {name: float(m[1]) for name, regex in job.trial_metric_definitions().items()
               if (m := re.search(regex, log))}
    assert scraped["algo:pnl"] == pytest.approx(train["pnl"], rel=1e-5)  # printed to 6 digits
    assert scraped["valid:pnl"] == pytest.approx(valid["pnl"], rel=1e-5)
    assert scraped["algo:sharpe"] == pytest.approx(train["sharpe"], rel=1e-5)
    assert train["pnl"] != valid["pnl"]
    saved = json.loads((model / job.TRIAL_FILE).read_text())
    assert saved["train"]["pnl"] == train["pnl"] and saved["valid"]["pnl"] == valid["pnl"]
    assert saved["params"] == {"size": 10, "fast_period": 8, "slow_period": 21}


# --- on the emulator -----------------------------------------------------------------------------

def _decode(text: str) -> object:
    """A hyperparameter as the entry reads it (jobs.hyperparameters): JSON, else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@pytest.fixture
def stack(aws_env, monkeypatch, sample) -> dict:  # noqa: F811
    """The project's template on moto (tests/test_aws.py), ALGO_STACK set, GSPC in its bucket."""
    pytest.importorskip("sagemaker.train")
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto has no SimulatePrincipalPolicy
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    outputs = _deploy()
    monkeypatch.setenv("ALGO_STACK", STACK)
    lake.write(sample, lake=f"s3://{outputs['BucketName']}")
    return outputs


@pytest.fixture
def sent(monkeypatch) -> dict[str, list[dict]]:
    """The SageMaker requests as sent (moto's Describe* answers leave parts out)."""
    requests: dict[str, list[dict]] = {"CreateTrainingJob": [], "CreateHyperParameterTuningJob": []}
    make = jobs.session

    def session(*args, **kwargs):
        out = make(*args, **kwargs)
        for op, seen in requests.items():
            out.boto_session.events.register(f"provide-client-params.sagemaker.{op}",
                                             lambda params, seen=seen, **_: seen.append(params))
        return out

    monkeypatch.setattr(jobs, "session", session)
    return requests


@pytest.mark.aws
@pytest.mark.filterwarnings("ignore:Tried to parse AWS::.*not supported by moto")
def test_sweep_jobs_request_n_shards_and_gather_from_s3(stack, sent, sample, tmp_path,
                                                         channel, monkeypatch) -> None:
    from algotrading import aws

    shards, bucket = 3, stack["BucketName"]
    names = job.sweep_jobs("ema", "GSPC", GRID, shards, start=START, end=END, params=PARAMS,
                           requirements=())
    assert [n.rsplit("-", 1)[0] for n in names] == [f"algo-sweep-{i}-of-3" for i in range(3)]
    requests = sent["CreateTrainingJob"]
    assert len(requests) == shards
    for i, request in enumerate(requests):
        assert request["RoleArn"] == stack["JobRoleArn"]
        assert request["ResourceConfig"]["VolumeKmsKeyId"] == stack["KmsKeyArn"]
        assert request["OutputDataConfig"]["KmsKeyId"] == stack["KmsKeyArn"]
        hp = {k: _decode(v) for k, v in request["HyperParameters"].items()}
        assert hp == {**_shard_hp(i, shards), "grid": {"fast_period": {"range": [5, 11, 1]},
                                                        "slow_period": {"range": [21, 32, 1]}}}
        assert job.decode_grid(hp["grid"]) == GRID
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                    for c in request["InputDataConfig"]}
        assert channels["prices"] == f"s3://{bucket}/hist_data_daily/GSPC.csv"
        assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/jobs/sweep"
    jobs.wait(names, poll=0)  # moto marks jobs Completed at once

    # What SageMaker would leave behind: each shard's model folder as model.tar.gz.
    s3 = aws.client("s3")
    for i, name in enumerate(names):
        model = _run_entry(tmp_path, channel, name, _shard_hp(i, shards), monkeypatch)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(model / job.SWEEP_FILE, arcname=job.SWEEP_FILE)
        s3.put_object(Bucket=bucket, Key=f"jobs/sweep/{name}/output/model.tar.gz", Body=buf.getvalue())
    gathered = job.gather_sweep(names)
    pd.testing.assert_frame_equal(gathered, _local_sweep(sample), check_exact=True)


@pytest.mark.aws
@pytest.mark.filterwarnings("ignore:Tried to parse AWS::.*not supported by moto")
def test_tuning_job_request_is_the_workshops_ema_tuning_on_the_train_period(stack, sent, tmp_path,
                                                                             channel) -> None:
    tuner = job.tune("ema", "GSPC", {"fast_period": (5, 10), "slow_period": (21, 31)},
                     train=("1999-01-04", "2006-12-29"), validation=("2007-01-03", "2012-12-31"),
                     params={"size": 10}, max_jobs=12, max_parallel_jobs=3, requirements=())
    (request,) = sent["CreateHyperParameterTuningJob"]
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "algo:pnl"}
    assert config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 12
    assert config["ResourceLimits"]["MaxParallelTrainingJobs"] == 3
    ranges = {r["Name"]: (r["MinValue"], r["MaxValue"])
              for r in config["ParameterRanges"]["IntegerParameterRanges"]}
    assert ranges == {"fast_period": ("5", "10"), "slow_period": ("21", "31")}
    definition = request["TrainingJobDefinition"]
    metrics = {m["Name"]: m["Regex"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert metrics == job.trial_metric_definitions()
    assert {"algo:pnl", "valid:pnl", "valid:sharpe"} <= set(metrics)
    static = definition["StaticHyperParameters"]
    assert {k: static[k] for k in ("mode", "strategy", "symbol", "train_start", "train_end",
                                   "valid_start", "valid_end")} == {
        "mode": "trial", "strategy": "ema", "symbol": "GSPC", "train_start": "1999-01-04",
        "train_end": "2006-12-29", "valid_start": "2007-01-03", "valid_end": "2012-12-31"}
    assert "fast_period" not in static and "slow_period" not in static
    assert json.loads(static["tuned"]) == ["fast_period", "slow_period"]  # JSON, as the entry
    assert json.loads(static["params"]) == {"size": 10}                     # decodes it
    assert definition["RoleArn"] == stack["JobRoleArn"]
    assert definition["OutputDataConfig"]["KmsKeyId"] == stack["KmsKeyArn"]  # the policy's condition
    name = request["HyperParameterTuningJobName"]
    assert name.startswith("algo-tune-ema") and len(name) <= 32
    assert tuner.latest_tuning_job is not None

    # The inputs: the prices channel and the SDK's driver channel; the code as the framework
    # container finds it (sagemaker_program inside the sagemaker_submit_directory tarball).
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in definition["InputDataConfig"]}
    assert channels["prices"] == f"s3://{stack['BucketName']}/hist_data_daily/GSPC.csv"
    assert set(channels) == {"prices", "sm_drivers"}
    assert static["sagemaker_program"] == jobs.ENTRY_SCRIPT
    bucket, key = static["sagemaker_submit_directory"][5:].split("/", 1)
    assert bucket == stack["BucketName"]
    from algotrading import aws

    tar_bytes = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    code = tmp_path / "opt" / "ml" / "code"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
        assert {jobs.ENTRY_SCRIPT, "algotrading/backtest/job.py"} <= set(tar.getnames())
        tar.extractall(code, filter="data")
    # One trial as the container would run it: every hyperparameter a string, SageMaker's own
    # among them, `python <sagemaker_program>` from the code folder.
    hp = {**static, "fast_period": "8", "slow_period": "21", "_tuning_objective_metric": "algo:pnl"}
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(hp))
    env = {**os.environ, "SM_INPUT_CONFIG_DIR": str(config), "SM_CHANNEL_PRICES": str(channel),
           "SM_MODEL_DIR": str(tmp_path / "model"), "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, jobs.ENTRY_SCRIPT], cwd=code, env=env, check=True,
                         capture_output=True, text=True).stdout
    saved = json.loads((tmp_path / "model" / job.TRIAL_FILE).read_text())
    assert saved["params"] == {"size": 10, "fast_period": 8, "slow_period": 21}
    scraped = {n: float(m[1]) for n, r in job.trial_metric_definitions().items()
               if (m := re.search(r, out))}
    assert scraped["algo:pnl"] == pytest.approx(saved["train"]["pnl"], rel=1e-5)


def test_tune_refuses_an_objective_outside_the_train_period() -> None:
    with pytest.raises(ValueError, match="train period only"):
        job.tune("ema", "GSPC", {"fast_period": (5, 10)}, train=(None, "2006-12-29"),
                 validation=("2007-01-03", None), objective="valid:pnl")


@pytest.mark.aws
@pytest.mark.filterwarnings("ignore:Tried to parse AWS::.*not supported by moto")
def test_cli_sweep_on_aws_prints_the_local_sweeps_table(stack, tmp_path, channel, monkeypatch,
                                                        capsys) -> None:
    """`algotrading sweep ... --backend aws --shards 3` against the emulated stack, with
    `jobs.wait` standing in for SageMaker: it runs each recorded job's hyperparameters through
    the entry point locally and uploads its model.tar.gz where SageMaker would."""
    from algotrading import aws, cli

    def sagemaker(names, **_):
        for name in names:
            hp = {k: _decode(v) for k, v in jobs.describe(name)["HyperParameters"].items()}
            with contextlib.redirect_stdout(io.StringIO()):  # the container's log, not ours
                model = _run_entry(tmp_path, channel, name, hp, monkeypatch)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(model / job.SWEEP_FILE, arcname=job.SWEEP_FILE)
            aws.client("s3").put_object(Bucket=stack["BucketName"], Body=buf.getvalue(),
                                        Key=f"jobs/sweep/{name}/output/model.tar.gz")

    monkeypatch.setattr(jobs, "wait", sagemaker)
    argv = ["sweep", "ema", "--symbol", "GSPC", "--start", START, "--end", END,
            "--grid", "fast_period=5:10", "--grid", "slow_period=21:31", "--param", "size=10",
            "--param", "commission_per_share=0.005", "--format", "csv", "--sort", "sharpe"]
    assert cli.main([*argv, "--backend", "aws", "--shards", "3"]) == 0
    remote = capsys.readouterr()
    assert "waiting for 3 training job(s): algo-sweep-0-of-3-" in remote.err
    monkeypatch.setenv("ALGO_BACKEND", "local")  # DuckDB over the same S3 lake
    assert cli.main(argv) == 0
    local = capsys.readouterr().out
    assert remote.out == local
    assert len(local.splitlines()) == 1 + 66
    assert cli.main([*argv, "--shards", "3"]) == 2
    assert "add --backend aws" in capsys.readouterr().err


def test_backtest_jobs_install_what_the_engine_imports() -> None:
    """The container gets the engine's third-party imports, pinned as pyproject.toml pins them."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for requirement in job.REQUIREMENTS:
        assert requirement in pins
    names = {re.split(r"[<>=]", r)[0] for r in job.REQUIREMENTS}
    assert {"numpy", "pandas", "numba", "tqdm"} <= names


def test_tuning_job_names_keep_the_stack_prefix_or_are_refused() -> None:
    """The policy allows tuning jobs named `<stack>-*`; names have 32 characters, 15 of them the
    SDK's timestamp, so a longer stack name is refused instead of cut."""
    assert job.tuning_prefix("ema", "research") == "research-tune-ema"  # 17 characters
    assert job.tuning_prefix("ema", "fifteen-chars-x") == "fifteen-chars-x-t"
    with pytest.raises(ValueError, match="longer than 15 characters"):
        job.tuning_prefix("ema", "a-much-longer-stack-name")


def test_shard_grids_fit_sagemakers_hyperparameter_cap() -> None:
    """fast 5..200 x slow 20..400 is 2,739 characters as a JSON list, over SageMaker's 2,500; sent
    as ranges it is short and decodes to the same grid. A grid that cannot be made short is
    refused before any job is submitted (no stack needed: the check comes first)."""
    big = {"fast_period": list(range(5, 201)), "slow_period": list(range(20, 401))}
    assert len(json.dumps(big)) > job.HP_VALUE_MAX
    encoded = job.encode_grid(big)
    assert len(json.dumps(encoded)) < 100
    assert job.decode_grid(json.loads(json.dumps(encoded))) == big
    odd = {"fast_period": [5, 7, 8], "slow_period": [1.5, 2.5, 3.5], "flag": [True, False]}
    assert job.decode_grid(job.encode_grid(odd)) == odd  # not ranges: kept as lists
    primes = {"fast_period": [p for p in range(2, 8000) if all(p % d for d in range(2, p))]}
    with pytest.raises(ValueError, match="hyperparameter 'grid' is .* characters; SageMaker "
                                         "accepts at most 2,500"):
        job.sweep_jobs("ema", "GSPC", primes, 2)
