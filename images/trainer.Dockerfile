# syntax=docker/dockerfile:1.7
# thinktune trainer/workload image: CUDA 12.9 PyTorch, Python 3.12, LLaMA Factory, DeepSpeed, GPTQ.
# Build from the repository root:  docker build -f images/trainer.Dockerfile -t ghcr.io/thinktune/trainer:0.1.0 .
#
# torch/torchvision/torchaudio come from the explicit uv index `pytorch-cu129` declared in pyproject.toml
# ([[tool.uv.index]], explicit = true, so nothing else resolves from it); every other package is installed at
# the version pinned in uv.lock (`uv export --frozen`). Ubuntu 24.04's system Python is 3.12.
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.9.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.9.1-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG TORCH_INDEX=pytorch-cu129
ARG WITH_GPTQ=1
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0"
COPY --from=uv /uv /uvx /bin/
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-dev python3.12-venv git build-essential ninja-build libaio-dev \
 && rm -rf /var/lib/apt/lists/*
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.12 \
    VIRTUAL_ENV=/app/.venv \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv venv /app/.venv --python python3.12
# 1. torch family from the named CUDA 12.9 index, at the locked versions
# 2. everything else exactly as locked (trainer extra), 3. deepspeed and gptq (need torch at build time)
RUN --mount=type=cache,target=/root/.cache/uv \
    set -eux; \
    TORCH_INDEX_URL="$(python3.12 -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print(next(i['url'] for i in d['tool']['uv']['index'] if i['name'] == '${TORCH_INDEX}'))")"; \
    EXTRAS="--extra trainer --extra deepspeed"; \
    if [ "${WITH_GPTQ}" = "1" ]; then EXTRAS="${EXTRAS} --extra gptq"; fi; \
    uv export --frozen --no-dev ${EXTRAS} --no-emit-project --no-hashes --format requirements-txt -o /tmp/all.txt; \
    grep -E '^(torch|torchvision|torchaudio)==' /tmp/all.txt | sed 's/ *;.*//' > /tmp/torch.txt; \
    grep -vE '^(torch|torchvision|torchaudio|deepspeed|gptqmodel)==' /tmp/all.txt > /tmp/rest.txt; \
    grep -E '^(deepspeed|gptqmodel)==' /tmp/all.txt | sed 's/ *;.*//' > /tmp/build-late.txt || true; \
    uv pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt; \
    uv pip install -r /tmp/rest.txt; \
    uv pip install --no-build-isolation -r /tmp/build-late.txt; \
    /app/.venv/bin/python -c "import torch; assert torch.version.cuda.startswith('12.9'), torch.version.cuda"
COPY trainer/ trainer/
COPY operator/ operator/
COPY crds/ crds/
RUN --mount=type=cache,target=/root/.cache/uv uv pip install --no-deps .

FROM ${CUDA_RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="thinktune-trainer" \
      org.opencontainers.image.description="thinktune workload image: dataset build, LLaMA Factory training, export" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgomp1 libaio-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid 1000 thinktune \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/thinktune --shell /bin/bash thinktune
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=0 \
    NCCL_DEBUG=WARN
WORKDIR /home/thinktune
# uid 1000 matches the pod securityContext the operator sets (runAsUser 1000, runAsNonRoot)
USER 1000:1000
EXPOSE 9400 29500
ENTRYPOINT ["thinktune"]
CMD ["doctor"]
