"""One settings object, read from environment variables, so notebooks never hard-code a backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

BACKENDS = ("local", "aws")


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
    region: str | None = None
    stack: str | None = None
    public_data: str | None = None
    run_dir: str = "runs/latest"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"ALGO_BACKEND must be one of {BACKENDS}, got {self.backend!r}")

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

    def with_(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def settings(**overrides: object) -> Settings:
    """Settings from ALGO_* variables (and the CloudFormation stack if ALGO_STACK is set);
    keyword overrides (e.g. papermill parameters) win over the environment."""
    env = os.environ
    base = Settings(
        backend=env.get("ALGO_BACKEND", "local"),
        lake=env.get("ALGO_LAKE", "data/lake"),
        database=env.get("ALGO_DATABASE", "algo_data"),
        workgroup=env.get("ALGO_WORKGROUP") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        stack=env.get("ALGO_STACK") or None,
        public_data=env.get("ALGO_PUBLIC_DATA") or None,
        run_dir=env.get("ALGO_RUN_DIR", "runs/latest"),
    )
    stack = overrides.get("stack") or base.stack
    if stack:
        from algotrading import aws

        outputs = aws.stack_outputs(str(stack), region=base.region)
        base = aws.apply_stack_outputs(base, outputs, explicit=env)
    return base.with_(**overrides)
