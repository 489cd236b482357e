#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (uv, the Python deps, the Go-built control
# plane, Prometheus, Chromium), then runs every tier that can run without a GPU. The README and .ci/run call this.
#   unit     fast, pure Python
#   e2e      real LLaMA Factory training steps on a tiny Qwen3 (CPU)
#   cluster  real etcd/kube-apiserver/scheduler/controller-manager + kwok GPU nodes + Prometheus
# Extra arguments go to pytest (e.g. `bash tests/run.sh -m unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
export UV_LINK_MODE=copy HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== python deps"
uv sync --frozen --extra trainer --extra operator

echo "== control plane binaries (first run builds from the Go module proxy; cached afterwards)"
if [ -x tools/build-binaries.sh ]; then
  bash tools/build-binaries.sh
  bash tools/build-binaries.sh --prometheus
fi

echo "== headless browser for the review page test (Debian's chromium; Playwright drives it, downloads nothing)"
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
  else
    echo "no apt-get: install Chromium at /usr/bin/chromium, or tests/unit/test_review_page.py skips its browser test"
  fi
fi

echo "== tests"
rc=0
uv run --no-sync pytest -m "not gpu" -p no:cacheprovider "$@" || rc=$?

# requires-python stays >=3.11 (README: "Python version"); the torch-free unit tier also runs on 3.12 so the
# code keeps working there. uv finds no 3.12 on its own on these machines (pyenv has one, but not as the
# global version, and uv cannot download one offline), so look in the usual places; ~1 min when cached.
find_python312() {
  local c
  for c in "${THINKTUNE_PYTHON312:-}" "$(command -v python3.12 || true)" "$(command -v python3.13 || true)" \
    "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.1[2-9]*/bin/python3; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}
echo "== unit tier without torch on Python 3.12+"
if py312="$(find_python312)"; then
  env312="${HOME}/.cache/thinktune/venv-py312"
  UV_PROJECT_ENVIRONMENT="$env312" uv sync --frozen --quiet --python "$py312" || rc=1
  "$env312/bin/python" -m pytest -p no:cacheprovider -q tests/unit/test_spec_crds.py tests/unit/test_cli.py \
    tests/unit/test_planner.py tests/unit/test_operator_planner.py tests/unit/test_train_oom.py \
    tests/unit/test_train_anomalies.py || rc=1
else
  echo "no Python >= 3.12 found (set THINKTUNE_PYTHON312=/path/to/python3.12): the 3.12 tier did not run"
  rc=1
fi
# pytest exits 5 when nothing was collected: that is a failure of this script, not a pass
exit $rc
