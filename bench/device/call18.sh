# issue 14 (~520 s on a fresh machine), most wanted first, each result written as it lands: at 2048 tokens in one
# file, (c) as planned, (a) as LLaMA Factory alone (the 4.4x goal on this card), on an H200 (c) with one
# micro-batch of 16 and no checkpointing (the +3-5 % lever the memory model's margin rules out), (c) under
# memoryBudgetGiB 48 (micro-batch 4 without checkpointing: the >= 20,000 goal), (b), and (c)'s arguments through
# LLaMA Factory with its last 2 steps profiled (where an H200 step goes now); then bench/sdpa_kernels.py if time is left.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-585}
G=/tmp/g18; mkdir -p $G
CARD=h100; RUNS=thinktune,lf_default,thinktune_budget48,hf_peft,lf_thinktune_args
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200 \
  && RUNS=thinktune,lf_default,thinktune_mb16,thinktune_budget48,hf_peft,lf_thinktune_args
run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB --runs $RUNS \
  --profile-last 2 --tag 2026-12-07g-$CARD-2048 --run-timeout 200
echo "train done at ${SECONDS}s"
for f in $G/fixed-thinktune*/out/logs/*.log; do grep -h "\[thinktune\] attention\|\[thinktune\] LoRA\|OutOfMemory\|Error" $f | head -3; done
[ $((LIMIT - SECONDS)) -gt 45 ] && timeout $((LIMIT - SECONDS - 5)) python3 bench/sdpa_kernels.py $OUT/sdpa_kernels.json 2>&1 | tail -6
echo "all done at ${SECONDS}s"
