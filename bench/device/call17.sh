# issue 14 item 3 (~200 s; right after call16 on the same machine, or ~300 s fresh): a fresh job's time to its first
# optimizer step on the Qwen3-4B shape at 2048 tokens, as call13 measured it (shared kernel cache, site-packages
# compiled), now with the worker's start-up shortcuts (worker_startup: datasets' lean tokenizer fingerprint, no
# AutoProcessor for a text-only model) and cuDNN attention; then where the rest goes: the worker's imports
# (-X importtime, top entries), CUDA's initialisation after the imports or overlapped with them
# (bench/cuda_init_overlap.py), and bench/worker_startup.py on this machine's CPU.
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-300}
S=/tmp/su17; mkdir -p $S
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
export THINKTUNE_KERNEL_CACHE=$S/shared-kernel-cache
unset TORCHINDUCTOR_CACHE_DIR
for job in job1 job2; do
  timeout $((LIMIT - SECONDS)) python3 bench/startup.py $S/$job --model $S/model --dataset $S/ds --cutoff 2048 \
    --global-batch 16 --micro-batch 0 --steps 3 --attempts 1 --no-direct --tag shortcuts-$job 2>&1 | grep "^thinktune\|Error"
  echo "$job done at ${SECONDS}s"
done
find $S/job2 -name "*.log" -print0 | xargs -0 grep -h "attention kernel\|Failed to load processor" | head -3
python3 -c "import importlib.util as u; print('nltk on this image:', u.find_spec('nltk') is not None)"
python3 -X importtime -c "import llamafactory.train.tuner, liger_kernel.transformers" 2> $S/imp.txt
sort -t'|' -k2 -n -r $S/imp.txt | head -12
[ $((LIMIT - SECONDS)) -gt 70 ] && timeout $((LIMIT - SECONDS - 5)) python3 bench/cuda_init_overlap.py $OUT/cuda_init_overlap.json --repeat 2 2>&1 | tail -5
[ $((LIMIT - SECONDS)) -gt 60 ] && timeout $((LIMIT - SECONDS - 5)) python3 bench/worker_startup.py $OUT/worker_startup_gpu_host.json --model $S/model --repeat 2 2>&1 | tail -1
echo "all done at ${SECONDS}s"
