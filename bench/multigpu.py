"""Issue 15: parallel strategies through ``thinktune train`` on 1 and 2 GPUs of one host, same data, global batch
and seed.

    python bench/multigpu.py OUT_DIR [--model qwen3-4b|tiny] [--steps 8] [--cutoff 2048]
        [--runs lora:single:1,lora:ddp:2,lora:zero2:2,lora:zero3:2,lora:fsdp:2,full:zero3:1,full:zero3:2,full:fsdp:2]

Each run is ``METHOD:STRATEGY:GPUS``: a FineTuneJob with ``finetuning.method/strategy`` forced and a fixed micro-batch
(LoRA 8, full 4) and global batch 16, so 1 GPU accumulates twice what 2 GPUs do. ``CUDA_VISIBLE_DEVICES`` and
``NPROC_PER_NODE`` give the launcher its world (on CPU, NPROC_PER_NODE alone: gloo ranks). Per run: tokens/s total
and per GPU, scaling efficiency against the 1-GPU run of the same method (the ``single`` LoRA run, or the 1-GPU run
of the same strategy when there is one), peak memory per rank, and the largest loss difference against that
1-GPU run step by step. Writes OUT_DIR/multigpu.json (and $OUT/multigpu.json).

DeepSpeed must be importable for zero2/zero3 (bench/README.md says how it is built on the GPU machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench_lib import (  # noqa: E402
    base_env,
    git_commit,
    make_fixed_dataset,
    make_model,
    run_thinktune,
    summarize,
    tail,
    versions,
)
from gpu_train import thinktune_job  # noqa: E402

DEFAULT_RUNS = (
    "lora:single:1,lora:ddp:2,lora:zero2:2,lora:zero3:2,lora:fsdp:2,full:zero3:1,full:zero3:2,full:fsdp:2"
)


def baseline_for(runs: dict[str, dict[str, Any]], method: str, strategy: str) -> str | None:
    """The 1-GPU run a 2-GPU run is compared with: the same strategy on 1 GPU, else the method's single run."""
    for key in (f"{method}:{strategy}:1", f"{method}:single:1"):
        if key in runs and runs[key].get("tokens_per_s"):
            return key
    one = [
        k
        for k, v in runs.items()
        if k.startswith(f"{method}:") and k.endswith(":1") and v.get("tokens_per_s")
    ]
    return one[0] if one else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="qwen3-4b", choices=["qwen3-4b", "tiny"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--cutoff", type=int, default=2048)
    ap.add_argument("--runs", default=DEFAULT_RUNS)
    ap.add_argument("--run-timeout", type=float, default=420)
    a = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    root = a.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else root
    model_dir, model_cfg = make_model(root / "model", a.model)
    ds = make_fixed_dataset(
        root / "ds_fixed", n=400, chars=3 * a.cutoff, tokenizer_dir=model_dir, cutoff=a.cutoff
    )
    result: dict[str, Any] = {
        "what": "issue 15: thinktune train per strategy on 1 and 2 GPUs, random-weight model, fixed-length rows, "
        "global batch 16, seed 7",
        "command": "python bench/multigpu.py OUT " + " ".join(sys.argv[2:]),
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "versions": versions(),
        "model": a.model,
        "cutoff": a.cutoff,
        "nccl_share": "not measured: needs a profiler hook inside the trainer callback (not in this bench)",
        "runs": {},
    }

    def save() -> None:
        text = json.dumps(result, ensure_ascii=False, indent=1)
        (root / "multigpu.json").write_text(text)
        if dest != root:
            (dest / "multigpu.json").write_text(text)

    runs: dict[str, dict[str, Any]] = result["runs"]
    for key in [k for k in a.runs.split(",") if k]:
        method, strategy, gpus_s = key.split(":")
        gpus = int(gpus_s)
        if cuda and gpus > torch.cuda.device_count():
            runs[key] = {"error": f"needs {gpus} GPUs, {torch.cuda.device_count()} visible"}
            continue
        print(f"[multigpu] {key} ...", flush=True)
        rdir = root / key.replace(":", "-")
        rdir.mkdir(parents=True, exist_ok=True)
        mb = 8 if method != "full" else 4
        if not cuda:
            mb = 2
        over = {
            "finetuning": {"method": method, "strategy": strategy},
            "training": {"microBatchSize": mb},
        }
        job = thinktune_job(
            f"mg-{method}-{strategy}-{gpus}", model_dir, rdir / "out", a.cutoff, a.steps, over
        )
        extra = {"NPROC_PER_NODE": str(gpus)}
        if cuda:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
        env = base_env(extra)
        rc, t0, t1, recs, plan_args = run_thinktune(job, rdir, ds, env, a.run_timeout)
        summ = summarize(
            recs, t_start=t0, t_end=t1, model_cfg=model_cfg, mean_seq=a.cutoff, method=method, world=gpus
        )
        rec: dict[str, Any] = {"method": method, "strategy": strategy, "gpus": gpus, "exit_code": rc, **summ}
        if plan_args:
            rec["plan_args"] = plan_args
        if rc != 0 or "error" in summ:
            rec["log_tail"] = tail(rdir / "log.txt", 40)
        runs[key] = rec
        print(
            f"[multigpu] {key}: rc={rc} tokens/s={summ.get('tokens_per_s')} peak/rank={summ.get('peak_gib_per_rank')}",
            flush=True,
        )
        save()
    for r in runs.values():
        if r.get("gpus", 1) < 2 or not r.get("tokens_per_s"):
            continue
        base = baseline_for(runs, r["method"], r["strategy"])
        if base is None:
            continue
        b = runs[base]
        r["baseline"] = base
        r["scaling_efficiency"] = round(r["tokens_per_s"] / (r["gpus"] * b["tokens_per_s"]), 3)
        pairs = [
            (x, y) for x, y in zip(r["losses"], b["losses"], strict=False) if x is not None and y is not None
        ]
        if pairs:
            r["max_abs_loss_diff_vs_baseline"] = round(max(abs(x - y) for x, y in pairs), 5)
    fastest: dict[str, dict[str, Any]] = {}
    for key, r in runs.items():
        if r.get("tokens_per_s"):
            slot = f"{r['method']}@{r['gpus']}gpu"
            if slot not in fastest or r["tokens_per_s"] > fastest[slot]["tokens_per_s"]:
                fastest[slot] = {"run": key, "tokens_per_s": r["tokens_per_s"]}
    result["fastest_per_method_and_gpus"] = fastest
    save()
    print("\nrun                 rc  tokens/s  per_gpu   eff    peak_GiB/rank    loss_diff")
    for key, r in runs.items():
        print(
            f"{key:19s} {r.get('exit_code', '-')!s:3s} {r.get('tokens_per_s')!s:9s} {r.get('tokens_per_s_per_gpu')!s:9s}"
            f" {r.get('scaling_efficiency')!s:6s} {r.get('peak_gib_per_rank', r.get('peak_gib'))!s:16s} "
            f"{r.get('max_abs_loss_diff_vs_baseline')!s} {r.get('error', '')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
