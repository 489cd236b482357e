# issue 14 (~400 s on a fresh machine): after the forward shortcuts found by call8's profiles (right-padded batches
# causal without a mask; no float32 round trip of LoRA inputs under autocast) and the NaN/Inf loss test off:
# (b), (c), (c)'s arguments through LLaMA Factory directly (last 2 steps profiled), (a), and (c) under
# memoryBudgetGiB 48, at 2048 tokens on one card.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-585}
G=/tmp/g9; mkdir -p $G
run $G --cutoff 2048 --steps 10 --rows 160 --hf-micro-batch $MB \
  --runs hf_peft,thinktune,lf_thinktune_args,lf_default,thinktune_budget48 --profile-last 2 --tag shortcuts-2048 \
  --run-timeout 140
echo "all done at ${SECONDS}s"
for f in $G/fixed-thinktune*/out/logs/*.log; do echo "== $f"; grep "\[thinktune\] attention\|Error" $f; done
tar czf $OUT/logs9.tgz $G/fixed-*/log.txt $G/fixed-thinktune*/out/logs/*.log 2>/dev/null
