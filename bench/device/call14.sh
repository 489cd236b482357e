# issue 14 (~270 s on a fresh machine, for the last ~300 s of a session's device time): (c) with the recalibrated
# memory model (an 80 GiB card now gets micro-batch 8 without checkpointing), non-blocking batch copies and the
# LoRA update in one GEMM's epilogue (worker_callbacks.LoraScaledAddmm), against (b) on the same card; then, as
# time allows, (c)'s arguments through LLaMA Factory directly with its last 2 steps profiled.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-300}
G=/tmp/g14; mkdir -p $G
run $G --cutoff 2048 --steps 10 --rows 160 --hf-micro-batch $MB --runs thinktune,hf_peft --profile-last 0 \
  --tag addmm-2048 --run-timeout 110
echo "main done at ${SECONDS}s"
for f in $G/fixed-thinktune/out/logs/*.log; do grep "\[thinktune\] attention\|\[thinktune\] LoRA\|Error" $f; done
grep "\[plan\] single" $G/fixed-thinktune/log.txt
if [ $((LIMIT - SECONDS)) -gt 90 ]; then
  run $G --cutoff 2048 --steps 8 --rows 160 --runs lf_thinktune_args --profile-last 2 --tag addmm-profile-2048 \
    --run-timeout $((LIMIT - SECONDS - 5))
fi
echo "all done at ${SECONDS}s"
