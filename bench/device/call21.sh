# superseded by call22.sh, which runs this pair in the same call as call20's runs (never ran alone).
# issue 14 (~250 s on a warm machine, after call20): LLaMA Factory's example defaults (a) alone and with thinktune's
# worker callbacks, one after another on the same card: whether the callbacks' per-micro-batch work (the
# right-padding check's sync, the hooks) costs at micro-batch 1 x 8 (6,097 tokens/s alone on 12-08's H100 against
# 4,380 with them on 12-07's machine; never on one card). Prediction: within 3 % (one sync per 2,034-token
# micro-batch against ~0.3 s of GPU work); a larger gap means a per-micro-batch cost every small-batch plan pays.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-290}
G=/tmp/g21; mkdir -p $G
CARD=h100; nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200
run $G --cutoff 2048 --steps 9 --rows 160 --hf-micro-batch $MB --runs lf_default,lf_default_callbacks \
  --tag 2026-12-08c-$CARD-2048 --run-timeout 140
echo "all done at ${SECONDS}s"
