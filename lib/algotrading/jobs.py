"""SageMaker training jobs for any entry module of this package (SageMaker Python SDK 3.x).

One contract for every job (model training, tuning trials, sharded sweeps), on both sides
(the backtest's sharded sweeps and tuning are submitted by algotrading.backtest.job, its entry):

- Client side: `submit` (or `stage_source` + `model_trainer` when something else, such as a
  hyperparameter tuner, drives the trainer) copies the `algotrading` package into the job's code
  channel and has the container run `python -m <entry module>` from there, in a framework
  image from `sagemaker.core.image_uris.retrieve` (PyTorch by default), with network isolation
  (the channel carries the wheels of what the entry needs: algotrading.wheelhouse). The SDK uploads that code
  channel to S3 itself; data channels are S3 URIs (or local folders, which the SDK uploads).
- Container side (what an entry module calls): `hyperparameters()` reads
  `/opt/ml/input/config/hyperparameters.json`, `channel(name)` is `SM_CHANNEL_<NAME>`,
  `model_dir()` is `SM_MODEL_DIR` (SageMaker tars it into `<output_path>/<job>/output/model.tar.gz`),
  and `print_metrics` prints `name=value;` lines that the regexes of `metric_definitions` match.
  Run outside a container (the local backend, tests), the same entry module honours the same
  variables pointed at ordinary folders.

sagemaker and boto3 are imported inside the client-side functions, so entry modules and the local
backend never need them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

from algotrading.errors import JobError, ParameterError

if TYPE_CHECKING:
    from sagemaker.train import ModelTrainer

FRAMEWORK = "pytorch"
FRAMEWORK_VERSION = "2.5.1"  # the newest PyTorch training image built for Python 3.11, as we are
PY_VERSION = "py311"
INSTANCE_TYPE = "ml.m5.large"
# Installed by the container before the entry runs (pip leaves what the image already has);
# pyarrow because pandas uses it for its string dtype when installed, as it is in the notebook.
REQUIREMENTS = ("numpy>=1.26", "pandas>=2.2", "pyarrow>=15", "scikit-learn>=1.4")
PACKAGE = "algotrading"
IGNORED = ("__pycache__", "*.pyc", ".ipynb_checkpoints", ".DS_Store")
UNIQUE_SUFFIX = 15  # "-YYYYmmddHHMMSS", which the SDK appends to the base job name
MAX_JOB_NAME = 63

# --- the container side ------------------------------------------------------------------------

CONFIG_DIR = "/opt/ml/input/config"
DATA_DIR = "/opt/ml/input/data"
MODEL_DIR = "/opt/ml/model"


def hyperparameters(config_dir: str | None = None) -> dict[str, Any]:
    """The job's hyperparameters (`SM_INPUT_CONFIG_DIR`, default /opt/ml/input/config). SageMaker
    passes every value as a string; JSON values ("5", "0.02", "true", "[1, 2]") are decoded,
    anything else stays a string. No file (a local run without hyperparameters) -> {}."""
    path = Path(config_dir or os.environ.get("SM_INPUT_CONFIG_DIR", CONFIG_DIR)) / \
        "hyperparameters.json"
    if not path.is_file():
        return {}
    return {k: _decode(v) for k, v in json.loads(path.read_text()).items()}


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def channel(name: str) -> Path:
    """The folder holding input channel `name` (`SM_CHANNEL_<NAME>`)."""
    return Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", f"{DATA_DIR}/{name}"))


def model_dir() -> Path:
    """Where the entry writes its artifact (`SM_MODEL_DIR`); SageMaker uploads it as model.tar.gz."""
    return Path(os.environ.get("SM_MODEL_DIR", MODEL_DIR))


def print_metrics(values: Mapping[str, float], prefix: str = "") -> str:
    """Print `name=value;` for each metric on one line (SageMaker scrapes the job's log with the
    regexes of `metric_definitions`) and return the line."""
    line = " ".join(f"{prefix}{k}={float(v):.6g};" for k, v in values.items())
    print(line, flush=True)
    return line


def metric_definitions(names: Iterable[str], prefix: str = "") -> dict[str, str]:
    """name -> regex capturing the value `print_metrics` prints for it (NaN included)."""
    number = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf))"
    return {f"{prefix}{n}": rf"\b{re.escape(prefix + n)}={number};" for n in names}


# --- the client side ---------------------------------------------------------------------------

ENTRY_SCRIPT = "algotrading_entry.py"


def stage_source(folder: str | Path, requirements: Iterable[str] = REQUIREMENTS,
                 entry: str | None = None, *, isolated: bool | None = None) -> Path:
    """Copy the installed `algotrading` package (sources only) into `folder/algotrading` and write
    `folder/requirements.txt`; the folder becomes the job's code channel. With `entry` (a module),
    also write ENTRY_SCRIPT, a file that runs it: tuning jobs need a script, because
    CreateHyperParameterTuningJob has no container entrypoint and the framework container runs
    `python <sagemaker_program>`. Returns `folder`.

    isolated (default `network_isolation()`): the job runs without network, so the requirements'
    share of the job lock (algotrading.wheelhouse) goes into `folder/wheels` and requirements.txt
    installs from there only; otherwise requirements.txt pins each requirement to the version
    installed here and the container pip-installs it from the index at start."""
    folder = Path(folder)
    source = Path(__file__).resolve().parent
    target = folder / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*IGNORED))
    requirements = list(requirements)
    isolated = network_isolation() if isolated is None else isolated
    if isolated and requirements:
        from algotrading import wheelhouse

        pins = wheelhouse.closure(wheelhouse.read_lock(), [_name(r) for r in requirements])
        wheels = folder / wheelhouse.FOLDER
        if wheels.exists():
            shutil.rmtree(wheels)
        text = wheelhouse.requirements_text(pins, wheelhouse.fill(pins, wheels))
    else:
        text = "".join(f"{r}\n" for r in pinned(requirements))
    (folder / "requirements.txt").write_text(text)
    if entry is not None:
        _check_entry(entry, folder)
        (folder / ENTRY_SCRIPT).write_text(
            f'"""Run by SageMaker as `python {ENTRY_SCRIPT}` (written by algotrading.jobs)."""\n'
            f"import runpy\n\nrunpy.run_module({entry!r}, run_name=\"__main__\", alter_sys=True)\n")
    return folder


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]


def network_isolation(value: str | bool | None = None) -> bool:
    """Whether jobs run with SageMaker network isolation: `value`, else the stack output
    JobNetworkIsolation / ALGO_JOB_NETWORK_ISOLATION, else True. "false" is for a stack deployed
    with JobNetworkIsolation=false (its policy refuses isolation-less jobs otherwise)."""
    if value is None:
        from algotrading.config import settings

        value = settings().job_network_isolation
    if value is None or isinstance(value, bool):
        return True if value is None else value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ParameterError(f"ALGO_JOB_NETWORK_ISOLATION={value!r}: want true or false")
    return text == "true"


def pinned(requirements: Iterable[str]) -> list[str]:
    """Each requirement at the version installed here (`name==version`), so a job's container
    installs what the notebook ran, not whatever the index has that day; a requirement not
    installed here keeps its range."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for spec in requirements:
        name = _name(spec)
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(spec)
    return out


def _check_entry(entry: str, source_dir: str | Path) -> None:
    if not re.fullmatch(r"[A-Za-z_][\w.]*", entry):
        raise ValueError(f"entry must be a module name like 'algotrading.models.train', "
                         f"not {entry!r}")
    if not Path(source_dir, *entry.split(".")).with_suffix(".py").is_file():
        raise ValueError(f"entry {entry!r} is not in the staged source {source_dir}")


# Hyperparameters SageMaker adds to a job's own: never parameters of anything we run.
SAGEMAKER_ADDED = re.compile(r"^(_|sagemaker_)")


def own_hyperparameters(hp: Mapping[str, Any]) -> dict[str, Any]:
    """`hp` without what SageMaker adds (`_tuning_objective_metric`, `sagemaker_program`,
    `sagemaker_submit_directory`, ...)."""
    return {k: v for k, v in hp.items() if not SAGEMAKER_ADDED.match(k)}


def job_prefix(kind: str, stack: str | None = None) -> str:
    """`<stack>-<kind>` (stack: ALGO_STACK, else "algotrading"), reduced to the characters and
    length SageMaker allows once the SDK appends its timestamp. Jobs submitted in the same second
    need different kinds (e.g. a shard number), since the timestamp has one-second resolution."""
    from algotrading.config import settings

    prefix = stack or settings().stack or PACKAGE
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{prefix}-{kind}").strip("-")
    return name[:MAX_JOB_NAME - UNIQUE_SUFFIX].rstrip("-")


def image_uri(region: str, instance_type: str = INSTANCE_TYPE, version: str = FRAMEWORK_VERSION,
              py_version: str = PY_VERSION, framework: str = FRAMEWORK) -> str:
    """The framework's SageMaker training image for this region and instance type (the SDK's
    bundled table; no network)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework, region, version=version, py_version=py_version,
                               instance_type=instance_type, image_scope="training")


def role_arn(role: str | None = None, stack: str | None = None) -> str:
    """`role`, else the SageMakerRoleArn output of the stack (`stack` or ALGO_STACK)."""
    if role:
        return role
    from algotrading import aws, config

    stack = stack or config.settings().stack
    found = config.role_arn(aws.stack_outputs(stack)) if stack else None
    if not found:
        raise ValueError("a SageMaker job needs an execution role: pass role=... or set ALGO_STACK "
                         "to a stack with a SageMakerRoleArn output")
    return found


# The SDK's own defaults config, in place of ~/.config/sagemaker/config.yaml: its usage
# telemetry off (the SDK otherwise reports each call to an AWS endpoint).
SDK_CONFIG = {"SchemaVersion": "1.0",
              "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def session(bucket: str, prefix: str = "", region: str | None = None) -> Any:
    """A SageMaker session whose staging bucket is `bucket` (the code channel is uploaded there
    instead of the SDK's `sagemaker-<region>-<account>` bucket, which it would create)."""
    import boto3
    from sagemaker.core.helper.session_helper import Session

    from algotrading.aws import resolve_region

    return Session(boto_session=boto3.Session(region_name=resolve_region(region)),
                   default_bucket=bucket, default_bucket_prefix=prefix.strip("/") or None,
                   sagemaker_config=SDK_CONFIG)


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of an s3:// URL (a job's output_path)."""
    if not url.startswith("s3://"):
        raise ValueError(f"output_path must be an s3:// URL, not {url!r}")
    bucket, _, key = url[5:].partition("/")
    return bucket, key.strip("/")


def vpc_config(subnets: str | None, security_group: str | None) -> dict[str, list[str]] | None:
    """The jobs' VPC placement from the stack outputs JobSubnetIds / JobSecurityGroupId (or
    ALGO_JOB_SUBNETS / ALGO_JOB_SECURITY_GROUP); None outside a VPC. One without the other is
    refused: the stack's policy allows VPC jobs only with both."""
    if not subnets and not security_group:
        return None
    ids = [s.strip() for s in (subnets or "").split(",") if s.strip()]
    if not ids or not security_group:
        raise ParameterError(f"ALGO_JOB_SUBNETS={subnets!r}, ALGO_JOB_SECURITY_GROUP={security_group!r}: "
                             "a job in a VPC needs both (the stack outputs JobSubnetIds and "
                             "JobSecurityGroupId)")
    return {"subnets": ids, "security_group_ids": [security_group]}


def model_trainer(entry: str, source_dir: str | Path, output_path: str, *,
                  hyperparameters: Mapping[str, Any] | None = None, role: str | None = None,
                  instance_type: str = INSTANCE_TYPE, instance_count: int = 1,
                  metric_definitions: Mapping[str, str] | None = None,
                  base_job_name: str | None = None, image: str | None = None,
                  environment: Mapping[str, str] | None = None, max_runtime: int = 3600,
                  region: str | None = None, requirements: bool = True,
                  isolated: bool | None = None) -> ModelTrainer:
    """A ModelTrainer that runs `python -m <entry>` from `source_dir` (see `stage_source`).

    entry: a module of the package with a `__main__` block, e.g. "algotrading.models.train".
    output_path: s3:// prefix for the job's outputs (model.tar.gz lands in
    `<output_path>/<job name>/output/`); its bucket also receives the uploaded code channel.
    hyperparameters: name -> value (the SDK sends non-strings as JSON text).
    metric_definitions: name -> regex over the job's log (see `metric_definitions()`).
    base_job_name: default `job_prefix(<last part of entry>)`. image: default `image_uri`.
    isolated: SageMaker network isolation (default `network_isolation()`, on); stage the source
    with the same value, since an isolated container installs only the staged wheels.
    """
    from sagemaker.core.training.configs import (
        Compute,
        MetricDefinition,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train import ModelTrainer

    from algotrading.aws import resolve_region

    _check_entry(entry, source_dir)
    script = Path(source_dir, ENTRY_SCRIPT).is_file()  # staged with `entry`: run it as a script
    region = resolve_region(region)
    if not region:
        raise ValueError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")
    bucket, prefix = split_s3(output_path)
    how = {"entry_script": ENTRY_SCRIPT} if script else {"command": f"python -m {entry}"}
    code = SourceCode(source_dir=str(source_dir), **how,
                      requirements="requirements.txt" if requirements else None,
                      ignore_patterns=list(IGNORED))
    from algotrading.config import settings

    found = settings()
    key = found.kms_key or None  # the stack's key on the volume and the output (its policy
    network = vpc_config(found.job_subnets, found.job_security_group)  # refuses a job without them)
    isolated = network_isolation() if isolated is None else isolated
    if isolated and requirements and _needs_an_index(Path(source_dir, "requirements.txt")):
        raise ParameterError(f"{source_dir}/requirements.txt installs from a package index, which "
                             "a job with network isolation cannot reach: stage the source with "
                             "the same `isolated` (jobs.stage_source(..., isolated=True))")
    if not isolated:
        warnings.warn("network isolation is off (ALGO_JOB_NETWORK_ISOLATION=false): the job's "
                      "container reaches the network and pip-installs its requirements from the "
                      "package index at start", stacklevel=2)
    sagemaker_session = session(bucket, prefix, region)
    _complete_tuning_requests(sagemaker_session, isolated, key)
    trainer = ModelTrainer(
        sagemaker_session=sagemaker_session,
        role=role_arn(role),
        base_job_name=base_job_name or job_prefix(entry.rsplit(".", 1)[-1]),
        training_image=image or image_uri(region, instance_type),
        source_code=code,
        compute=Compute(instance_type=instance_type, instance_count=instance_count,
                        volume_kms_key_id=key),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=max_runtime),
        output_data_config=OutputDataConfig(s3_output_path=output_path.rstrip("/"), kms_key_id=key),
        networking=Networking(enable_network_isolation=isolated, **(network or {})),
        hyperparameters=dict(hyperparameters or {}),
        environment=dict(environment or {}),
    )
    if metric_definitions:
        trainer.with_metric_definitions([MetricDefinition(name=k, regex=v)
                                         for k, v in metric_definitions.items()])
    return trainer


def _needs_an_index(requirements: Path) -> bool:
    """The requirements file installs something and does not say --no-index."""
    lines = [line.strip() for line in requirements.read_text().splitlines()] \
        if requirements.is_file() else []
    wanted = [line for line in lines if line and not line.startswith("#")]
    return bool(wanted) and "--no-index" not in wanted


def _complete_tuning_requests(sagemaker_session: Any, isolated: bool, key: str | None) -> None:
    """The SDK's tuner copies neither the trainer's network isolation nor its volume key into
    the tuning job's TrainingJobDefinition (sagemaker-train 1.27, tuner.py
    `_build_training_job_definition`), so they are added to the CreateHyperParameterTuningJob
    request as it leaves this session (botocore's provide-client-params event)."""
    def complete(params: dict[str, Any], **_: Any) -> None:
        definition = params.get("TrainingJobDefinition", {})
        definition["EnableNetworkIsolation"] = isolated
        if key:
            definition.setdefault("ResourceConfig", {}).setdefault("VolumeKmsKeyId", key)

    sagemaker_session.boto_session.events.register(
        "provide-client-params.sagemaker.CreateHyperParameterTuningJob", complete)


def submit(entry: str, inputs: Mapping[str, str], output_path: str, *, wait: bool = False,
           requirements: Iterable[str] = REQUIREMENTS, **options: Any) -> str:
    """Stage the package, create the training job and return its name (without waiting, unless
    `wait`). `inputs`: channel name -> s3:// URI (or a local folder, which the SDK uploads);
    `options` go to `model_trainer` (hyperparameters, role, instance_type, metric_definitions,
    base_job_name, image, environment, max_runtime, region, isolated)."""
    from sagemaker.core.training.configs import InputData

    requirements = list(requirements)
    isolated = network_isolation(options.pop("isolated", None))
    with TemporaryDirectory(prefix="algotrading-job-") as tmp:
        source = stage_source(tmp, requirements, isolated=isolated)
        trainer = model_trainer(entry, source, output_path, requirements=bool(requirements),
                                isolated=isolated, **options)
        trainer.train(input_data_config=[InputData(channel_name=name, data_source=str(uri))
                                         for name, uri in inputs.items()],
                      wait=wait, logs=wait)
    return trainer._latest_training_job.training_job_name  # the SDK's documented handle


def describe(job_name: str, region: str | None = None) -> dict[str, Any]:
    """DescribeTrainingJob, as the service recorded the request (and its status)."""
    from algotrading import aws

    return aws.client("sagemaker", region).describe_training_job(TrainingJobName=job_name)


def wait(job_names: Iterable[str], poll: float = 30.0, region: str | None = None) -> None:
    """Block until every job has ended; JobError (a ValueError) naming the jobs that did not complete."""
    import time

    pending, failed = list(job_names), []
    while pending:
        for name in list(pending):
            job = describe(name, region)
            if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                pending.remove(name)
                if job["TrainingJobStatus"] != "Completed":
                    failed.append(f"{name}: {job['TrainingJobStatus']} "
                                  f"({job.get('FailureReason', 'no reason given')})")
        if pending:
            time.sleep(poll)
    if failed:
        raise JobError("training job(s) did not complete: " + "; ".join(failed))
