# issue 14 (~560 s on a fresh machine; meant for an H200): which attention kernel the training runs and what the
# others would cost (bench/sdpa_kernels.py: PyTorch's own choice, flash, cuDNN, efficient at the training shapes;
# PyTorch 2.10+ tries cuDNN first on sm90 when its cuDNN is new enough), then at 2048 tokens in one file: (c) as
# planned, (b), (a) as LLaMA Factory alone (gpu_lf_run gave it thinktune's callbacks before), (c) under
# memoryBudgetGiB 48 (now planned micro-batch 4 without checkpointing: the >= 20,000 goal), and (c)'s arguments
# through LLaMA Factory (last 2 steps profiled: where the step goes now) with and without the one-GEMM LoRA update.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-590}
G=/tmp/g16; mkdir -p $G
CARD=h100; nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -q H200 && CARD=h200
python3 bench/sdpa_kernels.py $OUT/sdpa_kernels.json 2>&1 | tail -6
echo "kernels done at ${SECONDS}s"
run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB \
  --runs thinktune,hf_peft,lf_default,thinktune_budget48,lf_thinktune_args,lf_thinktune_args_peft_lora_update \
  --profile-last 2 --tag 2026-12-07f-$CARD-2048 --run-timeout 170
echo "all done at ${SECONDS}s"
for f in $G/fixed-thinktune/out/logs/*.log; do grep "\[thinktune\] attention\|\[thinktune\] LoRA\|processor\|Error" $f; done
