# issue 14 items 2-3 (~400 s on a fresh machine). (1) A fresh `thinktune train` on the 4B shape to its first step
# after the preprocessing-worker and parent-tokenizer fixes (call6.sh's cold attempt, no direct run). (2) On the
# same card at 2048 tokens: (b), (c), (c)'s resolved arguments through LLaMA Factory directly, and the same with
# the Trainer's NaN/Inf loss test off; the last 2 steps of each (b) and direct run profiled
# (gpu_bench_lib.ProfileWindow, left out of the timing), so (b)'s and (c)'s kernels and syncs compare op by op.
set -o pipefail
LIMIT=${LIMIT:-585}
LIMIT=200 S=/tmp/su8 ATTEMPTS=1 STEPS=3 EXTRA=--no-direct bash "$(dirname "$0")/call6.sh" || exit 1
echo "start-up done at ${SECONDS}s"
source .gpu/env.sh || exit 1
G=/tmp/g8; mkdir -p $G; ln -sfn /tmp/su8/model $G/model
run $G --cutoff 2048 --steps 10 --rows 160 --hf-micro-batch $MB \
  --runs hf_peft,thinktune,lf_thinktune_args,lf_thinktune_args_no_nan_filter --profile-last 2 --tag profile-2048 \
  --run-timeout 140
echo "all done at ${SECONDS}s"
tar czf $OUT/logs8.tgz $G/fixed-*/log.txt /tmp/su8/run/out/logs/*.log 2>/dev/null
