# issue 14, next call (~520 s on a fresh machine): (a), (b), (c) and (c) with (a)'s recipe at 2048 on one card (the
# ratios and the matched loss curve, lf_recipe_loss_max_abs_diff), then memoryBudgetGiB 24 at 8192.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-585}
G=/tmp/gt; mkdir -p $G/a $G/b
run $G/a --cutoff 2048 --steps 8 --rows 160 --hf-micro-batch $MB --runs hf_peft,thinktune,lf_default,thinktune_lf_recipe --tag main-2048 --run-timeout 130
echo "main done at ${SECONDS}s"
cp $G/a/gpu-train-*.json $OUT/
ln -sfn $G/a/model $G/b/model
run $G/b --cutoff 8192 --steps 5 --global-batch 4 --rows 40 --runs thinktune_budget24 --tag budget-8192 --run-timeout 130
echo "all done at ${SECONDS}s"
cp $G/b/gpu-train-*.json $OUT/ 2>/dev/null
for f in $G/a/fixed-thinktune*/log.txt $G/b/fixed-thinktune*/log.txt; do echo "== $f"; grep "\[plan\]\|\[launch\]\|\[oom\]\|Error" $f | head -12; done > $OUT/run-tails.txt 2>&1
# whole logs (LLaMA Factory's lines carry timestamps: where the ~85 s before the first step go)
tar czf $OUT/logs.tgz $G/a/fixed-*/log.txt $G/b/fixed-*/log.txt 2>/dev/null
