#!/usr/bin/env bash
# Run the Dockerfiles' own commands outside a container (no container engine is needed or used), in a scratch
# directory laid out like the image's WORKDIR /src:
#   operator.Dockerfile: both `uv sync --extra operator --no-dev --frozen ...` lines into /app/.venv's stand-in,
#     the build-time import check, then the image's ENTRYPOINT+CMD (kopf run ... --liveness) against a running
#     sandbox when KUBECONFIG is set, until /healthz answers 200.
#   trainer.Dockerfile: the `uv export` + grep split into torch / rest / build-late requirement files (checked to
#     be non-empty and disjoint), `uv pip install --dry-run -r rest.txt` (resolves every locked non-torch package
#     against PyPI for Python 3.12), the project install `uv pip install --no-deps .`, and that the ENTRYPOINT's
#     console script `thinktune` is installed.
# Not run: the CUDA base images, apt-get, the CUDA torch wheels from pytorch-cu129 (several GB), deepspeed/gptq
# builds (need CUDA), the non-root USER switch and the runtime stage's COPY.
#
#   bash images/check-outside-container.sh [SCRATCH_DIR]        (PYTHON312=/path/to/python3.12 to choose it)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCRATCH="${1:-$(mktemp -d /tmp/thinktune-images.XXXXXX)}"
PY="${PYTHON312:-$(command -v python3.12 || true)}"
[ -n "$PY" ] || { echo "python3.12 not found (the images use Python 3.12); set PYTHON312" >&2; exit 2; }
PY="$("$PY" -c 'import sys; print(sys.executable)')"
export UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON="$PY"
step() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------- operator.Dockerfile, build stage
OP="$SCRATCH/operator"
rm -rf "$OP" && mkdir -p "$OP/src" "$OP/app"
export UV_PROJECT_ENVIRONMENT="$OP/app/.venv"
cp "$ROOT/pyproject.toml" "$ROOT/uv.lock" "$ROOT/README.md" "$OP/src/"
step "operator: uv sync --extra operator --no-dev --frozen --no-install-project"
(cd "$OP/src" && uv sync --extra operator --no-dev --frozen --no-install-project)
cp -r "$ROOT/trainer" "$ROOT/operator" "$ROOT/crds" "$OP/src/"
step "operator: uv sync --extra operator --no-dev --frozen --no-editable + import check"
(cd "$OP/src" && uv sync --extra operator --no-dev --frozen --no-editable)
"$OP/app/.venv/bin/python" -c "import thinktune_operator.main, thinktune.spec, sys; assert 'torch' not in sys.modules"
echo "operator venv: $(du -sh "$OP/app/.venv" | cut -f1), torch absent"
unset UV_PROJECT_ENVIRONMENT

if [ -n "${KUBECONFIG:-}" ]; then
  step "operator: ENTRYPOINT [kopf] + CMD against \$KUBECONFIG"
  PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  (cd /tmp && PATH="$OP/app/.venv/bin:$PATH" HOME=/tmp PYTHONUNBUFFERED=1 THINKTUNE_METRICS_PORT=0 \
    kopf run --standalone --all-namespaces --module=thinktune_operator.main \
    --liveness="http://127.0.0.1:$PORT/healthz" >"$SCRATCH/operator-entrypoint.log" 2>&1) &
  KOPF=$!
  ok=""
  for _ in $(seq 1 120); do
    if "$PY" -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=2).status != 200)" 2>/dev/null; then ok=1; break; fi
    sleep 1
  done
  kill "$KOPF" 2>/dev/null || true
  wait "$KOPF" 2>/dev/null || true
  [ -n "$ok" ] || { tail -20 "$SCRATCH/operator-entrypoint.log"; echo "operator entrypoint: /healthz never answered" >&2; exit 1; }
  echo "operator entrypoint: /healthz 200"
else
  echo "(KUBECONFIG unset: the operator ENTRYPOINT is not started; \`thinktune sandbox up\` first to check it)"
fi

# ---------------------------------------------------------------- trainer.Dockerfile, build stage
TR="$SCRATCH/trainer"
rm -rf "$TR" && mkdir -p "$TR/src" "$TR/tmp"
cp "$ROOT/pyproject.toml" "$ROOT/uv.lock" "$ROOT/README.md" "$TR/src/"
cd "$TR/src"
step "trainer: uv export + split (the Dockerfile's lines, /tmp -> $TR/tmp)"
TORCH_INDEX=pytorch-cu129 WITH_GPTQ=1
TORCH_INDEX_URL="$("$PY" -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print(next(i['url'] for i in d['tool']['uv']['index'] if i['name'] == '${TORCH_INDEX}'))")"
EXTRAS="--extra trainer --extra deepspeed"
if [ "${WITH_GPTQ}" = "1" ]; then EXTRAS="${EXTRAS} --extra gptq"; fi
# shellcheck disable=SC2086
uv export --frozen --no-dev ${EXTRAS} --no-emit-project --no-hashes --format requirements-txt -o "$TR/tmp/all.txt" >/dev/null
grep -E '^(torch|torchvision|torchaudio)==' "$TR/tmp/all.txt" | sed 's/ *;.*//' > "$TR/tmp/torch.txt"
grep -vE '^(torch|torchvision|torchaudio|deepspeed|gptqmodel)==' "$TR/tmp/all.txt" > "$TR/tmp/rest.txt"
grep -E '^(deepspeed|gptqmodel)==' "$TR/tmp/all.txt" | sed 's/ *;.*//' > "$TR/tmp/build-late.txt" || true
echo "torch index: $TORCH_INDEX_URL"
echo "torch.txt: $(tr '\n' ' ' < "$TR/tmp/torch.txt")"
echo "build-late.txt: $(tr '\n' ' ' < "$TR/tmp/build-late.txt")"
echo "rest.txt: $(grep -c '==' "$TR/tmp/rest.txt") pinned packages"
[ "$(wc -l < "$TR/tmp/torch.txt")" -ge 1 ] && grep -q '^torch==' "$TR/tmp/torch.txt"
grep -q '^deepspeed==' "$TR/tmp/build-late.txt" && grep -q '^gptqmodel==' "$TR/tmp/build-late.txt"
! grep -qE '^(torch|deepspeed|gptqmodel)==' "$TR/tmp/rest.txt"
step "trainer: uv venv + uv pip install --dry-run -r rest.txt (resolution only) + the project itself"
uv venv -q "$TR/app/.venv" --python "$PY"
TRPY="$TR/app/.venv/bin/python"
uv pip install --python "$TRPY" --dry-run -r "$TR/tmp/rest.txt" 2>&1 | grep -E "^(Resolved|Would)" || {
  echo "trainer: the locked non-torch requirements do not resolve for Python 3.12" >&2; exit 1; }
cp -r "$ROOT/trainer" "$ROOT/operator" "$ROOT/crds" "$TR/src/"
uv pip install -q --python "$TRPY" --no-deps .
step "trainer: ENTRYPOINT [thinktune] (the project's console script in the image venv)"
"$TR/app/.venv/bin/python" -c "import importlib.metadata as m; print('thinktune', m.version('thinktune'), [e.value for e in m.entry_points(group='console_scripts') if e.name == 'thinktune'])"
test -x "$TR/app/.venv/bin/thinktune"
echo
echo "all image checks passed (scratch: $SCRATCH)"
