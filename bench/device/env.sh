# sourced from the repo root on the device machine
cd .gpu/src || exit 1
if [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ../../.whl/*.whl || exit 1
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD/trainer:$PWD/operator PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 BENCH_COMMIT=$(cat COMMIT)
export TRITON_CACHE_DIR=/tmp/kcache/triton TORCHINDUCTOR_CACHE_DIR=/tmp/kcache/inductor
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
# (b)'s micro-batch for this card: 8 fits 139 GiB (H200), 4 an 80 GiB card (H100)
MB=8; [ "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)" -lt 100000 ] && MB=4
# one bench/gpu_train.py run inside the call's LIMIT (seconds since the call began), its summary lines only
run() { timeout $((LIMIT - SECONDS)) python3 bench/gpu_train.py "$@" 2>&1 | grep "gpu_train\]\|ratio"; }
