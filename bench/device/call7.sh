# issue 14 items 2-3 (~200 s on a fresh machine): call6.sh after the preprocessing-worker and parent-tokenizer
# fixes, with one cold attempt (the fresh job's time to first step) and LLaMA Factory's run_exp on the same
# resolved arguments with its last 2 steps profiled: kernel time against wall time, the host-device syncs and the
# Python lines that cause them (bench/startup.py --profile).
LIMIT=${LIMIT:-250} S=/tmp/su7 ATTEMPTS=1 STEPS=6 EXTRA=--profile bash "$(dirname "$0")/call6.sh"
