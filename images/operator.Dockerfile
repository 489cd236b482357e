# syntax=docker/dockerfile:1.7
# thinktune operator: kopf + kubernetes client + prometheus_client, no torch.
# Build from the repository root:  docker build -f images/operator.Dockerfile -t ghcr.io/thinktune/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# dependencies first (cached layer): only the operator extra, exactly as locked, no dev group
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --extra operator --no-dev --frozen --no-install-project
COPY trainer/ trainer/
COPY operator/ operator/
COPY crds/ crds/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --extra operator --no-dev --frozen --no-editable \
 && /app/.venv/bin/python -c "import thinktune_operator.main, thinktune.spec, sys; assert 'torch' not in sys.modules"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="thinktune-operator" \
      org.opencontainers.image.description="kopf operator for thinktune.io DatasetBuild/FineTuneJob/ModelExport" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 thinktune \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin thinktune
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kopf"]
CMD ["run", "--standalone", "--all-namespaces", "--module=thinktune_operator.main", "--liveness=http://0.0.0.0:8081/healthz"]
