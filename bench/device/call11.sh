# issue 14 (~560 s on a fresh machine; the first call after the LoRA-cast hook moved inside autocast): (b), (c),
# (c)'s arguments through LLaMA Factory directly (last 2 steps profiled) and (a) at 2048 tokens on one card, (b) at
# the card's micro-batch. (a) gets 180 s: its start alone took 124 s on an H100 (call9 cut it at 5 steps).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-590}
G=/tmp/g11; mkdir -p $G
run $G --cutoff 2048 --steps 10 --rows 160 --hf-micro-batch $MB \
  --runs hf_peft,thinktune,lf_thinktune_args,lf_default --profile-last 2 --tag hooks-2048 --run-timeout 180
echo "all done at ${SECONDS}s"
for f in $G/fixed-thinktune*/out/logs/*.log; do echo "== $f"; grep "\[thinktune\] attention\|Error" $f; done
tar czf $OUT/logs11.tgz $G/fixed-*/log.txt $G/fixed-thinktune*/out/logs/*.log 2>/dev/null
