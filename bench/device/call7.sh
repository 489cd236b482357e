# issue 14 items 2-3 (~200 s on a fresh machine): after the preprocessing-worker fix, time to first step of
# `thinktune train` on the Qwen3-4B shape at 2048 tokens (one cold attempt, bytecode compiled first as the image
# has it), then LLaMA Factory's run_exp on the same resolved arguments with steps 3-4 profiled: kernel time
# against wall time, the host-device syncs and the Python lines that cause them (bench/startup.py --profile).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-250}
S=/tmp/su7; mkdir -p $S
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
timeout $((LIMIT - SECONDS)) python3 bench/startup.py $S/run --model $S/model --dataset $S/ds --cutoff 2048 \
  --global-batch 16 --micro-batch 0 --steps 6 --attempts 1 --profile 2>&1 | grep "^thinktune\|^direct\|Error"
echo "all done at ${SECONDS}s"
