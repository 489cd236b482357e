# issue 14, for the next device time (~560 s on a fresh machine; meant for an H200): (a), (b), (c), (c)'s arguments
# through LLaMA Factory directly (last 2 steps profiled) and the same without the one-GEMM LoRA update
# (worker_callbacks.LoraScaledAddmm left out: its share measured with and without on one card), at 2048 tokens.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-590}
G=/tmp/g15; mkdir -p $G
run $G --cutoff 2048 --steps 10 --rows 160 --hf-micro-batch $MB \
  --runs thinktune,hf_peft,lf_thinktune_args,lf_thinktune_args_peft_lora_update,lf_default --profile-last 2 \
  --tag h200-2048 --run-timeout 170
echo "all done at ${SECONDS}s"
for f in $G/fixed-thinktune/out/logs/*.log; do grep "\[thinktune\] attention\|\[thinktune\] LoRA\|Error" $f; done
