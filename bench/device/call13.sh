# issue 14 item 3 (~220 s on a fresh machine): a fresh job's time to its first optimizer step on the Qwen3-4B
# shape at 2048 tokens with the operator's shared kernel cache (THINKTUNE_KERNEL_CACHE, as the operator sets it on
# every trainer pod): job 1 on a fresh output compiles Liger's kernels into the shared directory; job 2, another
# fresh output (no tokenized dataset, no checkpoint), finds them. Both through bench/startup.py, site-packages
# compiled to bytecode first as the trainer image has them (call6.sh).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-300}
S=/tmp/su13; mkdir -p $S
T0=$SECONDS; python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1; echo "compileall $((SECONDS - T0)) s"
PYTHONPATH=$PWD/bench:$PYTHONPATH python3 - "$S" <<'PY' || exit 1
import sys
from pathlib import Path

from gpu_bench_lib import make_fixed_dataset, make_model

root = Path(sys.argv[1])
model, _ = make_model(root / "model", "qwen3-4b")
make_fixed_dataset(root / "ds", n=160, chars=3 * 2048, tokenizer_dir=model, cutoff=2048)
PY
echo "inputs ready at ${SECONDS}s"
# the operator's shared directory; startup.py drops the caller's TRITON_CACHE_DIR, so kernel_cache_env uses it
export THINKTUNE_KERNEL_CACHE=$S/shared-kernel-cache
unset TORCHINDUCTOR_CACHE_DIR
for job in job1 job2; do
  timeout $((LIMIT - SECONDS)) python3 bench/startup.py $S/$job --model $S/model --dataset $S/ds --cutoff 2048 \
    --global-batch 16 --micro-batch 0 --steps 3 --attempts 1 --no-direct --tag $job 2>&1 | grep "^thinktune\|Error"
  echo "$job done at ${SECONDS}s"
done
