# issue 14, everything still open in one call (~530 s on a fresh machine), most wanted first, each result written
# as it lands: at 2048 tokens in one file (c) as planned, (a) as LLaMA Factory alone (the 4.4x goal), on an H200
# (c) at one micro-batch of 16 without checkpointing (the lever the memory model's margin rules out), (c) under
# memoryBudgetGiB 48 (the >= 20,000 goal); then a fresh job to its first step (item 3: fresh output, nothing
# tokenized, the Liger kernels the runs above compiled, as a shared kernel cache gives a later job: call13's job 2),
# now with the worker's start-up shortcuts; then CUDA's initialisation overlapped with the imports or not
# (bench/cuda_init_overlap.py). call18 (with (b) and the profile) is the longer form of the first part.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-585}
G=/tmp/g19; mkdir -p $G
CARD=h100; RUNS=thinktune,lf_default,thinktune_budget48
nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200 \
  && RUNS=thinktune,lf_default,thinktune_mb16,thinktune_budget48
T0=$SECONDS; python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1; echo "compileall $((SECONDS - T0)) s"
LIMIT=$((LIMIT - 130)) run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB --runs $RUNS \
  --tag 2026-12-08-$CARD-2048 --run-timeout 200
echo "train done at ${SECONDS}s"
for f in $G/fixed-thinktune*/out/logs/*.log; do grep -h "\[thinktune\] attention\|\[thinktune\] LoRA\|OutOfMemory" $f | head -3; done
timeout $((LIMIT - SECONDS)) python3 bench/startup.py $G/fresh-job --model $G/model --dataset $G/ds_fixed_2048 \
  --cutoff 2048 --global-batch 16 --micro-batch 0 --steps 3 --attempts 1 --no-direct --keep-kernel-cache \
  --tag fresh-$CARD 2>&1 | grep "^thinktune\|Error"
echo "fresh job done at ${SECONDS}s"
[ $((LIMIT - SECONDS)) -gt 50 ] && timeout $((LIMIT - SECONDS - 3)) python3 bench/cuda_init_overlap.py $OUT/cuda_init_overlap.json --repeat 1 2>&1 | tail -3
echo "all done at ${SECONDS}s"
