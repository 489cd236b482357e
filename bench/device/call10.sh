# issue 14 (~150 s on a fresh machine, for the last ~260 s of a session's device time): (c) and (c)'s arguments
# through LLaMA Factory directly (last 2 steps profiled) at 2048 tokens, after the forward hooks moved to modules
# whose hooks run inside the Trainer's autocast and under peft (call9 showed the LoRA input casts still there).
set -o pipefail
source .gpu/env.sh || exit 1
LIMIT=${LIMIT:-150}
G=/tmp/g10; mkdir -p $G
run $G --cutoff 2048 --steps 8 --rows 160 \
  --runs thinktune,lf_thinktune_args --profile-last 2 --tag hooks-2048 --run-timeout 80
echo "all done at ${SECONDS}s"
