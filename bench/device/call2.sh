set -o pipefail
source .gpu/env.sh || exit 1
echo "setup done at ${SECONDS}s"
G=/tmp/gt; mkdir -p $G/a $G/b
python3 bench/gpu_train.py $G/a --cutoff 2048 --steps 6 --rows 128 --runs thinktune_budget48,thinktune_budget24 --tag budget-2048 --run-timeout 220 2>&1 | tee $OUT/log-2048.txt
echo "2048 done at ${SECONDS}s"
ln -sfn $G/a/model $G/b/model
python3 bench/gpu_train.py $G/b --cutoff 8192 --steps 5 --global-batch 4 --rows 40 --runs thinktune_budget24 --tag budget-8192 --run-timeout 150 2>&1 | tee $OUT/log-8192.txt
echo "8192 done at ${SECONDS}s"
python3 bench/gpu_train.py $G/a --cutoff 2048 --steps 6 --rows 128 --runs thinktune --tag default-2048 --run-timeout 120 2>&1 | tee $OUT/log-default.txt
echo "all done at ${SECONDS}s"
for f in $G/a/fixed-*/log.txt $G/b/fixed-*/log.txt; do echo "== $f"; tail -n 15 $f; done > $OUT/run-tails.txt 2>&1
