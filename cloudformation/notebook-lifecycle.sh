#!/bin/bash
# OnStart script of the algotrading notebook instance (cloudformation/algotrading.yaml
# embeds this file verbatim; tests/test_template.py runs it in a fake home).
#
# SageMaker runs it as root on every start, with a 5-minute limit. Only ~/SageMaker
# survives a stop, so the environment lives there and is built once (in the background:
# installing the project takes longer than 5 minutes); the kernel spec lives in ~/.local,
# which is wiped on every stop, so it is written again on every start.
set -euo pipefail

if [ "$(id -u)" -eq 0 ] && id ec2-user >/dev/null 2>&1; then
    # As root, nothing on a path the notebook user controls: ~/SageMaker survives restarts, so a
    # symlink planted there would turn a root write, chown or log redirect into a write anywhere.
    # Root only copies this script into a fresh root-owned file (mktemp: O_EXCL, never a symlink)
    # and starts it as ec2-user, which writes its own log.
    copy="$(mktemp -t algotrading-onstart.XXXXXXXX)"
    cat -- "$0" >"$copy"
    chmod 0755 "$copy"
    nohup sudo -u ec2-user -i env ALGO_STACK="${ALGO_STACK:-}" AWS_REGION="${AWS_REGION:-}" \
        ALGO_ONSTART_LOG=1 /bin/bash "$copy" </dev/null >/dev/null 2>&1 &
    exit 0
fi

sagemaker="$HOME/SageMaker"
state="$sagemaker/.algotrading"
env_dir="$state/env"
mkdir -p "$state"
if [ -n "${ALGO_ONSTART_LOG:-}" ]; then
    exec >>"$state/setup.log" 2>&1
fi

project=""
for candidate in "$sagemaker"/*/; do
    if grep -qs '^name = "algotrading"' "${candidate}pyproject.toml"; then
        project="${candidate%/}"
        break
    fi
done
if [ -z "$project" ]; then
    echo "algotrading: no checkout of the project under $sagemaker (clone it there, then restart)" >&2
    exit 1
fi

if [ ! -x "$env_dir/bin/python" ]; then
    if [ -n "${ALGO_ENV_PYTHON:-}" ]; then
        "$ALGO_ENV_PYTHON" -m venv "$env_dir"
    elif [ -x "$HOME/anaconda3/bin/conda" ]; then
        "$HOME/anaconda3/bin/conda" create --yes --quiet --prefix "$env_dir" python=3.11 pip
    else
        python3.11 -m venv "$env_dir"
    fi
fi
# the hashed lock (requirements/dev.txt), then the checkout itself without dependencies
"$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r "$project/requirements/dev.txt"
"$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$project"

kernel="$HOME/.local/share/jupyter/kernels/algotrading"
mkdir -p "$kernel"
"$env_dir/bin/python" - "$kernel/kernel.json" "$env_dir/bin/python" <<'PY'
import json, os, sys
from algotrading.numerics import PINS  # kernels that round the same on every CPU
path, python = sys.argv[1], sys.argv[2]
env = {**PINS, "ALGO_BACKEND": "aws", "ALGO_STACK": os.environ.get("ALGO_STACK", ""),
       "AWS_REGION": os.environ.get("AWS_REGION", ""),
       # the jobs' wheels (algotrading.wheelhouse) on the volume that outlives a restart
       "ALGO_WHEELHOUSE": os.path.expanduser("~/SageMaker/.algotrading/wheels")}
spec = {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (algotrading)", "language": "python",
        "env": {k: v for k, v in env.items() if v}}
with open(path, "w") as out:
    json.dump(spec, out, indent=1)
PY
echo "algotrading: environment $env_dir, kernel 'Python (algotrading)', project $project"
