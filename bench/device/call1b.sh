set -o pipefail
source .gpu/env.sh || exit 1
echo "setup done at ${SECONDS}s"
timeout $((${LIMIT:-250} - SECONDS)) python3 bench/export_gpu.py /tmp/export-gpu --variants int8 --verify-each --samples 4 --max-new-tokens 32 --json $OUT/export_int8.json 2>&1 | tee $OUT/log_int8.txt | tr "\r" "\n" | grep -v -i "warning\|it/s\]\|s/it\]\|^ *$"
echo "rc=$? total ${SECONDS}s"
