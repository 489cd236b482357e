set -o pipefail
LIMIT=${LIMIT:-588}
source .gpu/env.sh || exit 1
echo "setup done at ${SECONDS}s, limit ${LIMIT}s"
V="--samples 8 --max-new-tokens 64"
[ "$LIMIT" -lt 540 ] && V="--samples 4 --max-new-tokens 32"
E=/tmp/export-gpu
timeout $((LIMIT - SECONDS)) python3 bench/export_gpu.py $E --variants gptq --iterations 200 --calibration-samples 128 --seq-len 2048 --verify-each $V --json $OUT/export_gptq.json > $OUT/log_gptq.txt 2>&1 &
A=$!
while kill -0 $A 2>/dev/null && ! grep -q '"merge"' $OUT/export_gptq.json 2>/dev/null; do sleep 2; done
echo "merge done at ${SECONDS}s; int8 in a second process while GPTQ runs"
timeout $((LIMIT - SECONDS)) python3 bench/export_gpu.py $E --variants int8 --reuse-merged --verify-each $V --json $OUT/export_int8.json > $OUT/log_int8.txt 2>&1
echo "int8 rc=$? at ${SECONDS}s"
wait $A; echo "gptq rc=$? total ${SECONDS}s"
for f in $OUT/log_gptq.txt $OUT/log_int8.txt; do echo "== $f"; tr '\r' '\n' < $f | grep -i "export_gpu\]\|error\|Traceback" | tail -n 25; done
