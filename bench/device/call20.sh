# superseded by call22.sh (never ran; its H100 branch lacked the thinktune run lf_thinktune_args reads). issue 14 (~280 s on a fresh machine; the session's last device time): after the planner's checkpointing line moved
# to 6,144 tokens, (c) under memoryBudgetGiB 48 (now micro-batch 4 x 4 without checkpointing: the >= 20,000 goal);
# on an H100 then (b) and (c)'s arguments with the last 2 steps profiled (where a micro-batch-8 step goes); on an
# H200 instead (c), (c) at micro-batch 16 without checkpointing and (a), the H200 goals.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-290}
G=/tmp/g20; mkdir -p $G
CARD=h100; RUNS=thinktune_budget48,hf_peft,lf_thinktune_args; PROF="--profile-last 2"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200 \
  && RUNS=thinktune_budget48,thinktune,thinktune_mb16,lf_default && PROF=""
run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB --runs $RUNS $PROF \
  --tag 2026-12-08b-$CARD-2048 --run-timeout 150
echo "all done at ${SECONDS}s"
