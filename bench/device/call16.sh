# issue 14 (~560 s on a fresh machine; meant for an H200): attention with cuDNN's SDPA kernel first on Hopper
# (planner.decide_attention_kernel, worker_callbacks.CudnnAttentionFirst). Its GPU test, the kernels timed alone
# (bench/sdpa_kernels.py), then at 2048 tokens in one file: (c) as planned (cuDNN first), (b), (c) with PyTorch's
# order, (a), and, as time allows, (c)'s arguments through LLaMA Factory with and without the one-GEMM LoRA update.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-590}
G=/tmp/g16; mkdir -p $G
python3 -m pytest -p no:cacheprovider -q -W ignore::pytest.PytestConfigWarning tests/gpu/test_attention_kernel_gpu.py 2>&1 | tail -4
python3 bench/sdpa_kernels.py $OUT/sdpa_kernels.json 2>&1 | tail -5
echo "kernels done at ${SECONDS}s"
run $G --cutoff 2048 --steps 12 --rows 160 --hf-micro-batch $MB \
  --runs thinktune,hf_peft,thinktune_pytorch_attention,lf_default,lf_thinktune_args,lf_thinktune_args_peft_lora_update \
  --profile-last 0 --tag cudnn-2048 --run-timeout 170
echo "all done at ${SECONDS}s"
for r in thinktune thinktune_pytorch_attention; do
  for f in $G/fixed-$r/out/logs/*.log; do grep "\[thinktune\] attention\|\[thinktune\] LoRA\|Error" $f; done
done
