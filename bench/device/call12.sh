# issue 14 item 4 (~420 s on a fresh machine): the memory budget honoured after the forward shortcuts:
# memoryBudgetGiB 48 and 24 at 2048 tokens, then 24 at 8192 tokens (peak memory against the budget).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-590}
G=/tmp/g12; mkdir -p $G/a $G/b
run $G/a --cutoff 2048 --steps 8 --rows 160 --runs thinktune_budget48,thinktune_budget24 --tag budgets-2048 \
  --run-timeout 130
echo "2048 done at ${SECONDS}s"
ln -sfn $G/a/model $G/b/model
run $G/b --cutoff 8192 --steps 5 --global-batch 4 --rows 40 --runs thinktune_budget24 --tag budget24-8192 \
  --run-timeout 150
echo "all done at ${SECONDS}s"
for f in $G/a/fixed-thinktune*/log.txt $G/b/fixed-thinktune*/log.txt; do echo "== $f"; grep "\[plan\]\|\[oom\]\|Error" $f | head -12; done
