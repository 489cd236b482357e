# issue 14 (one call, ~450 s): hardware detection check, then (b) and (c) at 2048 on the same card, (c) under
# memoryBudgetGiB 48 and 24 at 2048 and 24 at 8192. LIMIT = the call's seconds.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-540}
python3 -c "
import sys, time; t = time.time()
from thinktune.hardware import detect_hardware
h = detect_hardware(); print('detect_hardware', round(time.time() - t, 2), 's; torch imported:', 'torch' in sys.modules, [(g.name, g.total_gib, g.free_gib) for g in h.gpus], h.torch_version, h.cuda_version)
from thinktune.hardware import _detect_gpus_with_torch; t = time.time(); print('torch path', _detect_gpus_with_torch([]), round(time.time() - t, 2), 's')" 2>&1 | tee $OUT/hardware.txt
G=/tmp/gt; mkdir -p $G/a $G/b
run $G/a --cutoff 2048 --steps 8 --rows 160 --hf-micro-batch $MB --runs hf_peft,thinktune --tag main-2048 --run-timeout 150
echo "main done at ${SECONDS}s"
run $G/a --cutoff 2048 --steps 6 --rows 160 --runs thinktune_budget48,thinktune_budget24 --tag budget-2048 --run-timeout 120
echo "budget 2048 done at ${SECONDS}s"
ln -sfn $G/a/model $G/b/model
run $G/b --cutoff 8192 --steps 5 --global-batch 4 --rows 40 --runs thinktune_budget24 --tag budget-8192 --run-timeout 120
echo "all done at ${SECONDS}s"
cp $G/a/gpu-train-*.json $G/b/gpu-train-*.json $OUT/ 2>/dev/null
for f in $G/a/fixed-thinktune*/log.txt $G/b/fixed-thinktune*/log.txt; do echo "== $f"; grep "\[plan\]\|\[launch\]\|\[oom\]\|Error" $f | head -12; done > $OUT/run-tails.txt 2>&1
