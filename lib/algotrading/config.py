"""One settings object, read from environment variables (and a CloudFormation stack's outputs,
when ALGO_STACK names one), so notebooks never hard-code a backend."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from algotrading.errors import ParameterError

BACKENDS = ("local", "aws")
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
# CloudFormation output key -> (Settings field, the ALGO_* variable that wins over it)
STACK_OUTPUTS: dict[str, tuple[str, str]] = {
    "BucketName": ("lake", "ALGO_LAKE"),
    "DatabaseName": ("database", "ALGO_DATABASE"),
    "WorkGroupName": ("workgroup", "ALGO_WORKGROUP"),
    "KmsKeyArn": ("kms_key", "ALGO_KMS_KEY"),
    "JobSubnetIds": ("job_subnets", "ALGO_JOB_SUBNETS"),  # only when the stack has a VPC
    "JobSecurityGroupId": ("job_security_group", "ALGO_JOB_SECURITY_GROUP"),
    "JobNetworkIsolation": ("job_network_isolation", "ALGO_JOB_NETWORK_ISOLATION"),
}
ROLE_OUTPUT = "JobRoleArn"  # the jobs' own role; stacks from before it have only:
NOTEBOOK_ROLE_OUTPUT = "SageMakerRoleArn"
PREFIX_OUTPUT = "JobPrefix"  # training and tuning job names must start with "<prefix>-"


def project_root(start: Path | None = None) -> Path:
    """The checkout's top folder (nearest parent with pyproject.toml), so notebooks in
    subfolders and the CLI share one default lake; the current folder outside a checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lib" / "algotrading").is_dir():
            return folder
    return here


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    lake: str = "data/lake"
    database: str = "algo_data"
    workgroup: str | None = None
    region: str | None = None  # None: the AWS SDK's own lookup (algotrading.aws.resolve_region)
    stack: str | None = None
    kms_key: str | None = None
    job_subnets: str | None = None  # comma-separated; with job_security_group: jobs run in the VPC
    job_security_group: str | None = None
    job_network_isolation: str | None = None  # "true"/"false"; None: on (jobs.network_isolation)
    public_data: str | None = None
    run_dir: str = "runs/latest"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"ALGO_BACKEND must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.database, str) or not DATABASE_NAME.fullmatch(self.database):
            # it is written into SQL (the view, the queries' FROM) before the lockdown
            raise ParameterError(f"ALGO_DATABASE {self.database!r}: want a database name of "
                                 "letters, digits and underscores (1-255, not starting with a "
                                 "digit), as Glue and Athena name them")

    @property
    def lake_is_s3(self) -> bool:
        return self.lake.startswith("s3://")

    def lake_path(self) -> str:
        """The lake as an absolute folder or an s3:// URL; relative folders hang off the project."""
        if self.lake_is_s3:
            return self.lake.rstrip("/")
        path = Path(self.lake).expanduser()
        return str(path if path.is_absolute() else project_root() / path)

    def run_path(self) -> Path:
        path = Path(self.run_dir).expanduser()
        return path if path.is_absolute() else project_root() / path

    def s3_put_args(self) -> dict[str, object]:
        """Extra PutObject arguments: SSE-KMS with the stack's key (and the bucket key) when one
        is configured, so every object the lake writes names its key explicitly."""
        if not self.kms_key:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key,
                "BucketKeyEnabled": True}

    def with_(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def settings(**overrides: object) -> Settings:
    """Settings from ALGO_* variables (and the CloudFormation stack if ALGO_STACK is set);
    keyword overrides (e.g. papermill parameters) win over the environment.

    The stack's outputs are read once per process (per stack and region): every lake write and
    query calls settings(), and a DescribeStacks per call would be slow and throttled.
    """
    env = os.environ
    base = Settings(
        backend=env.get("ALGO_BACKEND", "local"),
        lake=env.get("ALGO_LAKE", "data/lake"),
        database=env.get("ALGO_DATABASE", "algo_data"),
        workgroup=env.get("ALGO_WORKGROUP") or None,
        stack=env.get("ALGO_STACK") or None,
        kms_key=env.get("ALGO_KMS_KEY") or None,
        job_subnets=env.get("ALGO_JOB_SUBNETS") or None,
        job_security_group=env.get("ALGO_JOB_SECURITY_GROUP") or None,
        job_network_isolation=env.get("ALGO_JOB_NETWORK_ISOLATION") or None,
        public_data=env.get("ALGO_PUBLIC_DATA") or None,
        run_dir=env.get("ALGO_RUN_DIR", "runs/latest"),
    )
    stack = overrides.get("stack") or base.stack
    if stack:
        from algotrading import aws  # boto3 only when a stack is named

        region = aws.resolve_region(overrides.get("region"))  # type: ignore[arg-type]
        base = apply_stack_outputs(base, stack_outputs(str(stack), region), explicit=env)
    return base.with_(**overrides)


def apply_stack_outputs(settings: Settings, outputs: Mapping[str, str],
                        explicit: Mapping[str, str] = os.environ) -> Settings:
    """Settings with the stack's bucket (as the lake root), database, workgroup and key filled in;
    a non-empty ALGO_* variable in `explicit` wins over the matching output."""
    changes: dict[str, str] = {}
    for output, (field, variable) in STACK_OUTPUTS.items():
        value = outputs.get(output)
        if value and not explicit.get(variable):
            changes[field] = f"s3://{value}" if field == "lake" else value
    return replace(settings, **changes)


def role_arn(outputs: Mapping[str, str]) -> str | None:
    """The execution role the stack created for training and tuning jobs, if it has one."""
    return outputs.get(ROLE_OUTPUT) or outputs.get(NOTEBOOK_ROLE_OUTPUT) or None


@functools.cache
def stack_outputs(stack: str, region: str | None) -> dict[str, str]:
    """The stack's outputs, fetched on first use and kept for the process
    (`stack_outputs.cache_clear()` after redeploying the stack in a running kernel)."""
    from algotrading import aws

    return aws.stack_outputs(stack, region=region)
