"""Could the worker open its CUDA context while it imports LLaMA Factory? Timed in fresh processes, alternating:

- ``serial``: import torch, then LLaMA Factory's tuner and Liger (the worker's imports), then CUDA's
  initialisation and a first allocation (what ``TrainingArguments`` does next, on the worker's critical path);
- ``overlap``: the same, with the initialisation started in a thread right after ``import torch``, joined after
  the imports.

    python bench/cuda_init_overlap.py OUT.json [--repeat 2]

Each child reports ``to_ready_s`` (process start to a usable CUDA context). The difference of the medians is what
starting CUDA in the background would take off a fresh worker's start-up; zero or less means the initialisation
holds the GIL (or the imports wait on it) and the lever is not worth building. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench_lib import child_result  # noqa: E402

CHILD = r"""
import json, sys, threading, time
t0 = time.perf_counter()
import torch
t_torch = time.perf_counter()
cuda_s = {}

def cuda_ready():
    t = time.perf_counter()
    torch.cuda.init()
    torch.empty(1, device="cuda")
    torch.cuda.synchronize()
    cuda_s["s"] = time.perf_counter() - t

worker = None
if sys.argv[1] == "overlap":
    worker = threading.Thread(target=cuda_ready, daemon=True)
    worker.start()
import llamafactory.train.tuner, liger_kernel.transformers  # noqa: E401
t_imports = time.perf_counter()
if worker is None:
    cuda_ready()
else:
    worker.join()
t_ready = time.perf_counter()
print("RESULT " + json.dumps({"import_torch_s": round(t_torch - t0, 3), "imports_s": round(t_imports - t_torch, 3),
      "cuda_s": round(cuda_s["s"], 3), "to_ready_s": round(t_ready - t0, 3)}))
"""


def child(mode: str) -> dict:
    t = time.perf_counter()
    result = child_result(CHILD, mode, timeout=300)
    return {**result, "process_s": round(time.perf_counter() - t, 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    runs: dict[str, list[dict]] = {"serial": [], "overlap": []}
    child("serial")  # page cache and bytecode warm for both settings
    for _ in range(a.repeat):
        for mode in runs:
            runs[mode].append(child(mode))
            print(f"[cuda_init_overlap] {mode}: {runs[mode][-1]}", flush=True)
    med = {m: statistics.median(r["to_ready_s"] for r in rs) for m, rs in runs.items()}
    result = {
        "what": "fresh process to a usable CUDA context after the worker's imports: CUDA initialised after the "
        "imports (serial) or in a thread started after import torch (overlap); alternating, one warm-up child first",
        "command": "python bench/cuda_init_overlap.py OUT " + " ".join(sys.argv[2:]),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "median_to_ready_s": med,
        "saved_s": round(med["serial"] - med["overlap"], 3),
    }
    a.out.write_text(json.dumps(result, indent=1))
    print(
        f"[cuda_init_overlap] median serial {med['serial']:.2f} s, overlap {med['overlap']:.2f} s", flush=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
