"""What thinktune's forward-path worker callbacks (thinktune/train/worker_callbacks.py: ``CausalRightPadding``,
``LoraCastUnderAutocast``, ``LoraScaledAddmm``) add to the host's work per micro-batch: a forward and backward of
Qwen3-4B's depth (36 layers, LoRA r16 on all seven linears: 252 adapted layers) at widths so small that the time
is the host's dispatch (Python, autograd, the operator calls), not arithmetic. That host time is what a GPU run
waits on where the CPU cannot queue kernels ahead of the GPU (small micro-batches, after each sync); the GPU-side
effects (the casts and elementwise kernels they remove) are bench/gpu_train.py's to measure.

    python bench/callback_overhead.py OUT.json [--iters 80] [--rounds 3] [--variants peft,lora_scaled_addmm]

Each variant runs in its own fresh process (one thread, under bfloat16 autocast as the Trainer's forward), the
variants alternating, ``--rounds`` times; the median per variant is reported, with peft's forward as the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VARIANTS = {
    "peft": [],
    "causal_right_padding": ["CausalRightPadding"],
    "lora_cast_under_autocast": ["LoraCastUnderAutocast"],
    "lora_scaled_addmm": ["LoraScaledAddmm"],
    "all_three": ["CausalRightPadding", "LoraCastUnderAutocast", "LoraScaledAddmm"],
}

CHILD = r"""
import json, sys, time, types
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM
from thinktune.train import worker_callbacks

names, iters = json.loads(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(1)
cfg = Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=36, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256)
cfg._attn_implementation = "sdpa"
linears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
model = get_peft_model(Qwen3ForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules=linears, lora_dropout=0.0))
model.train()
args = types.SimpleNamespace(fsdp=None, deepspeed=None)
callbacks = [getattr(worker_callbacks, n)() for n in names]
for cb in callbacks:
    cb.on_train_begin(args, None, None, model=model)
ids = torch.randint(0, 512, (2, 32))
mask = torch.ones_like(ids)
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, attention_mask=mask, labels=ids)
    out.loss.backward()
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range(iters):
    step()
ms = (time.perf_counter() - t) / iters * 1000
fused = sum(getattr(cb, "fused", 0) for cb in callbacks)
dropped = sum(getattr(cb, "dropped", 0) for cb in callbacks)
print("RESULT " + json.dumps({"ms_per_forward_backward": round(ms, 2), "lora_forwards_fused": fused,
      "masks_dropped": dropped}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--iters", type=int, default=80)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}; peft first")
    a = ap.parse_args()
    from gpu_bench_lib import REPO, child_result, git_commit

    env = {**os.environ, "PYTHONPATH": str(REPO / "trainer"), "HF_HUB_OFFLINE": "1"}
    chosen = [v for v in a.variants.split(",") if v]
    if chosen[:1] != ["peft"] or not set(chosen) <= set(VARIANTS):
        raise SystemExit(f"--variants: peft first, then any of {', '.join(VARIANTS)}")
    runs: dict[str, list[dict]] = {v: [] for v in chosen}
    for i in range(a.rounds):
        for name in chosen:
            runs[name].append(child_result(CHILD, json.dumps(VARIANTS[name]), str(a.iters), env=env))
            print(f"round {i + 1} {name}: {runs[name][-1]}", flush=True)
    median = {v: statistics.median(r["ms_per_forward_backward"] for r in rs) for v, rs in runs.items()}
    spread = {
        v: round(
            (max(r["ms_per_forward_backward"] for r in rs) - min(r["ms_per_forward_backward"] for r in rs)), 2
        )
        for v, rs in runs.items()
    }
    result = {
        "what": "host time of one forward+backward (bf16 autocast, 1 thread) of a 36-layer Qwen3 with LoRA r16 on all "
        "linears at tiny widths (dispatch, not arithmetic), peft's forward against thinktune's forward-path worker "
        "callbacks",
        "command": "python bench/callback_overhead.py OUT " + " ".join(sys.argv[2:]),
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit(),
        "machine": f"{os.cpu_count()} CPUs",
        "median_ms": median,
        "spread_ms": spread,
        "vs_peft": {v: round(median[v] / median["peft"], 3) for v in chosen},
        "runs": runs,
    }
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"median_ms": median, "vs_peft": result["vs_peft"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
