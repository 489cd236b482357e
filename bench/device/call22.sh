# issue 14 (~560 s on a fresh machine; call20 and call21 in one call, since most starts find no machine). call20
# on an H100 listed lf_thinktune_args without the thinktune run it reads its arguments from: it would have
# recorded "needs the thinktune run first"; here (c) runs before it.
# Both cards: (c) under memoryBudgetGiB 48 (micro-batch 4 x 4 without checkpointing since the planner's line moved
# to 6,144 tokens; predicted 20,400-22,000 tokens/s at ~38 GiB), and (a) alone and with thinktune's worker
# callbacks (predicted within 3 % of each other; 6,097 alone against 4,380 with them on two machines).
# H200: (c), (c) at micro-batch 16 without checkpointing (predicted +3-5 %; the estimate is 134 GiB, so the OOM
# retry may halve it: the JSON says), first, for the 25,000 and 4.4x goals in one file with (a).
# H100: the rest with the last 2 steps of the LLaMA Factory runs profiled (device busy, syncs), then (b).
# Last on both, if time is left: (c) under the Trainer's torch_compile (predicted +3-8 % on the steady steps, the
# first step 60-120 s later; the hooks' counters no longer recompile it, worker_callbacks._eager).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-570}
G=/tmp/g22; mkdir -p $G
CARD=h100; RUNS=thinktune_budget48,lf_default,lf_default_callbacks,thinktune,lf_thinktune_args,hf_peft,thinktune_compile
PROF="--profile-last 2"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200 \
  && RUNS=thinktune,thinktune_mb16,lf_default,lf_default_callbacks,thinktune_budget48,thinktune_compile && PROF=""
run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB --runs $RUNS $PROF \
  --tag 2026-12-08c-$CARD-2048 --run-timeout 150
echo "all done at ${SECONDS}s"
