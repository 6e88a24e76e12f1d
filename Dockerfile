# The paper/live strategy runner as a container (ECS Fargate task in cloudformation/algotrading.yaml).
# Build from the project root:  docker build -t algotrading-live .
# One run polls the vendor once, trades the new bars and exits (python -m algotrading.live; its
# settings come from the environment, see lib/algotrading/live/__main__.py and service.py).
# The base image pinned by digest (a tag can be re-pointed). This is the python:3.11-slim digest
# pinned in two unrelated public repositories (one through public.ecr.aws/docker/library, which
# mirrors Docker Hub's digests), found by code search on 2026-12-03; it was not pulled here (no
# registry access). Check it, and move it forward for security fixes, with
#   docker buildx imagetools inspect python:3.11-slim
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLCONFIGDIR=/tmp

WORKDIR /app
# Only what the runner imports (requirements/live.in), at the dev lock's versions, hash-checked;
# then the package without dependencies (tests/test_project.py runs a replay in exactly this
# install).
COPY requirements/live.txt requirements/live.txt
RUN pip install --require-hashes --no-deps -r requirements/live.txt
COPY pyproject.toml README.md ./
COPY lib ./lib
RUN pip install --no-deps . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin algo

USER 10001
ENTRYPOINT ["python", "-m", "algotrading.live"]
