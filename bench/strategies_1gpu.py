"""Parallel strategies through thinktune's launcher on ONE GPU (issue 6, the part one GPU allows).

Runs `train_job` on a random-weight Qwen3-4B-architecture model with each strategy forced (single, zero2, zero3,
fsdp) — one process, so no collective crosses a link: this measures the per-GPU overhead of each strategy's
machinery (DeepSpeed/FSDP wrapping, sharded optimizer state, gathers) and checks its loss matches the plain run.
Scaling across GPUs needs a multi-GPU machine (not lent in this session).

    python bench/strategies_1gpu.py OUT_DIR [--steps 10] [--strategies single,zero2,zero3,fsdp]

Writes OUT_DIR/strategies_1gpu.json (and $OUT/strategies_1gpu.json on the device machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_planner_h200 import make_dataset, make_qwen3_4b_random  # noqa: E402


def run_one(root: Path, strategy: str, steps: int) -> dict:
    from thinktune.resolve import resolve_resource
    from thinktune.spec import FineTuneJob
    from thinktune.train.job import train_job

    name = f"strategy-{strategy}"
    job = FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"nameOrPath": "model"},
                "dataset": {"path": "ds"},
                "output": {"path": name},
                "finetuning": {"method": "lora", "strategy": strategy},
                # the same micro-batch everywhere so the numbers compare strategies, not batch sizes
                "training": {
                    "maxSteps": steps,
                    "globalBatchSize": 8,
                    "microBatchSize": 8,
                    "cutoffLen": 2048,
                    "loggingSteps": 1,
                    "evalSteps": 10_000,
                    "saveSteps": 10_000,
                    "seed": 7,
                },
            },
        }
    )
    t0 = time.time()
    try:
        r = train_job(resolve_resource(job, root), progress=False)
    except Exception as e:  # record and go on: one broken strategy must not hide the others
        return {"strategy": strategy, "error": f"{type(e).__name__}: {e}"[:2000]}
    wall = time.time() - t0
    recs = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["type"] == "train"]
    peak = max((m.get("peak_bytes", 0) for x in train for m in x.get("memory", [])), default=0) / 2**30
    steady = [x["tokens_per_second"] for x in train[2:] if x.get("tokens_per_second")]
    p = r["plan"]
    return {
        "strategy": strategy,
        "plan": {
            k: p.get(k)
            for k in (
                "strategy",
                "precision",
                "micro_batch_size",
                "gradient_accumulation_steps",
                "gradient_checkpointing",
                "liger_kernel",
                "lora_rank",
            )
        },
        "steady_tokens_per_second_mean": round(sum(steady) / len(steady), 1) if steady else None,
        "peak_allocated_gib": round(peak, 2),
        "losses": [round(x["loss"], 5) for x in train if x.get("loss") is not None],
        "wall_s": round(wall, 1),
        "warnings": p.get("warnings", []),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--strategies", default="single,zero2,zero3,fsdp")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("THINKTUNE_METRICS_PORT", "off")
    root = a.out
    make_qwen3_4b_random(root / "model")
    make_dataset(root / "ds")
    runs = [run_one(root, s, a.steps) for s in a.strategies.split(",")]
    base = next((r for r in runs if r["strategy"] == "single" and "losses" in r), None)
    for r in runs:
        if base and "losses" in r and r is not base:
            n = min(len(base["losses"]), len(r["losses"]))
            r["max_abs_loss_diff_vs_single"] = round(
                max(abs(x - y) for x, y in zip(base["losses"][:n], r["losses"][:n], strict=True)), 5
            )
            if base["steady_tokens_per_second_mean"] and r.get("steady_tokens_per_second_mean"):
                r["throughput_vs_single"] = round(
                    r["steady_tokens_per_second_mean"] / base["steady_tokens_per_second_mean"], 3
                )
    import torch

    result = {
        "what": "thinktune launcher, one H200, one process per strategy, random-weight Qwen3-4B "
        "architecture, LoRA, micro-batch 8 x 2048 tokens",
        "command": "python bench/strategies_1gpu.py OUT " + " ".join(sys.argv[2:]),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "runs": runs,
    }
    text = json.dumps(result, ensure_ascii=False, indent=1)
    print(text)
    (root / "strategies_1gpu.json").write_text(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "strategies_1gpu.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
