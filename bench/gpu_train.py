"""Issue 14's side-by-side: LLaMA Factory's example defaults (a), a hand-tuned transformers+peft+Liger loop (b) and
``thinktune train`` with the planner's choices (c), on one GPU, the same model, data and sequence length.

    python bench/gpu_train.py OUT_DIR [--model qwen3-4b|tiny] [--steps 10] [--cutoff 2048]
        [--real-dataset DIR] [--runs lf_default,hf_peft,thinktune,lf_thinktune_args,thinktune_dropout0]

Model: random weights with Qwen3-4B's exact architecture built from a config (no hub; the shape sets speed and
memory), or thinktune's tiny model for a CPU check of the whole script. Workloads: ``fixed`` (rows longer than
cutoff, so every row is exactly cutoff tokens) and, with ``--real-dataset``, ``real`` (a DatasetBuild's train
split at cutoff 4096: its length distribution, so padding and packing count).

Runs (each a fresh process, one after another):
- ``lf_default``  (a) LLaMA Factory 0.9.5's examples/train_lora/*_lora_sft.yaml settings: rank 8, micro-batch 1 x
  accumulation 8, gradient checkpointing on (its default), no Liger. ``lf_default_callbacks``: the same with
  thinktune's worker callbacks (what they cost at micro-batch 1).
- ``hf_peft``     (b) bench/hf_peft_bench.py: rank 16, micro-batch 8 x 2, Liger, no checkpointing, fused AdamW.
- ``thinktune``   (c) ``python -m thinktune.cli train`` on a FineTuneJob (globalBatchSize 16): the planner decides.
- levers, each one change against (c), to find where (c) loses against (b) (bench/NOTES-gpu.md):
  ``lf_thinktune_args`` (c)'s resolved LLaMA Factory arguments run without thinktune's launcher and callback;
  ``lf_thinktune_args_no_nan_filter`` the same with the Trainer's per-micro-batch NaN/Inf test of the loss off;
  ``thinktune_dropout0`` finetuning.lora.dropout 0 (the default since this bench; was 0.05); ``thinktune_packing``
  training.packing (neat packing); ``thinktune_mb16`` microBatchSize 16; ``thinktune_compile`` extraArgs
  torch_compile; ``thinktune_budget48`` / ``thinktune_budget24`` training.memoryBudgetGiB 48 / 24 (peak memory
  must stay under it);
  ``thinktune_lf_recipe`` (a)'s recipe through thinktune: its losses must match (a)'s
  (``lf_recipe_loss_max_abs_diff``) and its speed is what thinktune adds at one recipe.

Tokens/s count non-padding tokens only ((a): HF ``include_num_input_tokens_seen: non_padding``; (c): thinktune's
``NonPaddingTokens`` callback; (b) counts its attention mask), over the steady steps (the first third skipped). Writes OUT_DIR/gpu-train.json, and
bench/results/gpu-train-<date>.json-shaped output to $OUT when set.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench_lib import (  # noqa: E402
    BENCH,
    base_env,
    git_commit,
    make_fixed_dataset,
    make_model,
    read_records,
    run_logged,
    run_thinktune,
    summarize,
    tail,
    token_lengths,
    train_only_copy,
    versions,
)

DEFAULT_RUNS = "hf_peft,lf_default,thinktune,lf_thinktune_args,thinktune_dropout0"

# (c)'s resolved arguments run directly, each with these changed (levers measured without a planner change)
LF_ARG_VARIANTS: dict[str, dict[str, Any]] = {
    "lf_thinktune_args": {},
    # transformers' Trainer tests each micro-batch's loss for NaN/Inf in Python: a host-device sync (b) does not make
    "lf_thinktune_args_no_nan_filter": {"logging_nan_inf_filter": False},
    "lf_thinktune_args_peft_lora_update": {},
}
# (a)'s arguments with thinktune's worker callbacks (as the worker adds them): whether their per-micro-batch work
# costs at micro-batch 1 (6,097 tokens/s alone against 4,380 with them on two machines, bench/NOTES-gpu.md)
LF_DEFAULT_WITH_CALLBACKS = "lf_default_callbacks"
LF_DEFAULT_RUNS = ("lf_default", LF_DEFAULT_WITH_CALLBACKS)  # (a)'s arguments, built by lf_default_args
# ... or with these of thinktune's worker callbacks left out (a worker-side lever measured with and without)
LF_CALLBACKS_LEFT_OUT: dict[str, tuple[str, ...]] = {
    # peft's own `base + B(A(x)) * scaling` instead of the one-GEMM update (worker_callbacks.LoraScaledAddmm)
    "lf_thinktune_args_peft_lora_update": ("LoraScaledAddmm",),
}


def lf_default_args(model: Path, ds: Path, out: Path, cutoff: int, steps: int, cuda: bool) -> dict[str, Any]:
    """LLaMA Factory's example LoRA SFT recipe (examples/train_lora/llama3_lora_sft.yaml in 0.9.5) on our data."""
    args: dict[str, Any] = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "dataset": "bench_train",
        "dataset_dir": str(ds),
        "template": "qwen3",
        "cutoff_len": cutoff,
        "max_samples": 1000,
        "overwrite_cache": True,
        "preprocessing_num_workers": 16 if cuda else 1,
        "dataloader_num_workers": 4 if cuda else 0,
        "output_dir": str(out),
        "logging_steps": 1,  # the example logs every 10; every step here so each step is timed
        "save_strategy": "no",
        "overwrite_output_dir": True,
        "report_to": "none",
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1.0e-4,
        "max_steps": steps,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "ddp_timeout": 180000000,
        "seed": 7,
        "include_num_input_tokens_seen": "non_padding",
    }
    if cuda:
        args["bf16"] = True
    else:
        args["use_cpu"] = True
    return args


def thinktune_job(
    name: str, model: Path, out: Path, cutoff: int, steps: int, over: dict[str, Any], global_batch: int = 16
) -> dict:
    training = {
        "maxSteps": steps,
        "globalBatchSize": global_batch,
        "cutoffLen": cutoff,
        "loggingSteps": 1,
        "evalSteps": 100_000,
        "saveSteps": 100_000,
        "seed": 7,
        **over.get("training", {}),
    }
    spec: dict[str, Any] = {
        "model": {"nameOrPath": str(model)},
        "dataset": {"path": "unused-see---dataset"},
        "output": {"path": str(out)},
        "training": training,
        "evaluation": {"enabled": False},
    }
    if "finetuning" in over:
        spec["finetuning"] = over["finetuning"]
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec,
    }


THINKTUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "thinktune": {},
    "thinktune_dropout0": {"finetuning": {"lora": {"dropout": 0.0}}},
    "thinktune_packing": {"training": {"packing": True}},
    # one micro-batch of 16 rows, no checkpointing: fits an H200 only if the memory model's margin is loose (its
    # estimate, 134.5 GiB, is over the ~127 usable), so "auto" would turn checkpointing on
    "thinktune_mb16": {"training": {"microBatchSize": 16, "gradientCheckpointing": "off"}},
    # (a)'s recipe through thinktune (rank 8, 1 x 8, checkpointing, no Liger, lr 1e-4 cosine, warm-up 0.1): its loss
    # curve must match (a)'s for the same data and seed, and its speed shows what thinktune adds at one recipe
    "thinktune_lf_recipe": {
        "finetuning": {"lora": {"rank": 8}},
        "training": {
            "globalBatchSize": 8,
            "microBatchSize": 1,
            "learningRate": 1.0e-4,
            "lrSchedulerType": "cosine",
            "warmupRatio": 0.1,
            "gradientCheckpointing": "on",
            "ligerKernel": "off",
        },
    },
    # torch.compile of the whole model through the Trainer (torch_compile; a lever not yet tried on the GPU)
    "thinktune_compile": {"training": {"extraArgs": {"torch_compile": True}}},
    # issue 14 item 4: the plan must stay under spec.training.memoryBudgetGiB (the worker caps the allocator)
    "thinktune_budget48": {"training": {"memoryBudgetGiB": 48}},
    "thinktune_budget24": {"training": {"memoryBudgetGiB": 24}},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="qwen3-4b", choices=["qwen3-4b", "tiny"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cutoff", type=int, default=2048)
    ap.add_argument(
        "--real-dataset", type=Path, default=None, help="a DatasetBuild output dir (real lengths)"
    )
    ap.add_argument("--real-cutoff", type=int, default=4096)
    ap.add_argument("--runs", default=DEFAULT_RUNS)
    ap.add_argument("--real-runs", default="lf_default,thinktune,thinktune_packing")
    ap.add_argument("--run-timeout", type=float, default=420)
    ap.add_argument(
        "--global-batch",
        type=int,
        default=16,
        help="thinktune runs' globalBatchSize (rows per optimizer step)",
    )
    ap.add_argument(
        "--hf-micro-batch", type=int, default=8, help="(b)'s micro-batch (8 fits 139 GiB, 4 an 80 GiB card)"
    )
    ap.add_argument("--rows", type=int, default=400, help="rows in the fixed workload")
    ap.add_argument(
        "--profile-last",
        type=int,
        default=0,
        help="profile the last N optimizer steps of the hf_peft and lf_* runs (left out of their timing)",
    )
    ap.add_argument("--tag", default="", help="suffix of the JSON name: gpu-train<-TAG>.json")
    a = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    root = a.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else root
    dest.mkdir(parents=True, exist_ok=True)
    model_dir, model_cfg = make_model(root / "model", a.model)
    if cuda:
        torch.cuda.empty_cache()
    workloads = {
        "fixed": (
            make_fixed_dataset(
                root / f"ds_fixed_{a.cutoff}",
                n=a.rows,
                chars=3 * a.cutoff,
                tokenizer_dir=model_dir,
                cutoff=a.cutoff,
            ),
            a.cutoff,
            a.runs,
        )
    }
    if a.real_dataset:
        workloads["real"] = (train_only_copy(a.real_dataset, root / "ds_real"), a.real_cutoff, a.real_runs)
    env = base_env({"PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])})
    result: dict[str, Any] = {
        "what": "issue 14: LLaMA Factory example defaults (a) vs plain transformers+peft+Liger (b) vs thinktune "
        "train (c), one GPU, random-weight model of the given architecture",
        "command": "python bench/gpu_train.py OUT " + " ".join(sys.argv[2:]),
        "date": datetime.date.today().isoformat(),
        "git_commit": git_commit(),
        "versions": versions(),
        "model": {
            "kind": a.model,
            **{k: model_cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
        },
        "global_batch_thinktune": a.global_batch,
        "workloads": {},
    }

    def save() -> None:
        text = json.dumps(result, ensure_ascii=False, indent=1)
        name = f"gpu-train-{a.tag}.json" if a.tag else "gpu-train.json"
        (root / name).write_text(text)
        if dest != root:
            (dest / name).write_text(text)

    for wname, (ds, cutoff, runs) in workloads.items():
        lengths = token_lengths(ds, model_dir, cutoff)
        # attention cost grows with the row length: the token-weighted mean length sets its FLOPs per token
        mean_seq = sum(x * x for x in lengths) / max(1, sum(lengths))
        wres: dict[str, Any] = {
            "dataset": str(ds),
            "cutoff": cutoff,
            "rows": len(lengths),
            "row_tokens": {
                "min": min(lengths),
                "median": statistics.median(lengths),
                "max": max(lengths),
                "mean": round(sum(lengths) / len(lengths), 1),
            },
            "runs": {},
        }
        result["workloads"][wname] = wres
        for run in [r for r in runs.split(",") if r]:
            print(f"[gpu_train] {wname}/{run} ...", flush=True)
            rdir = root / f"{wname}-{run}"
            rdir.mkdir(parents=True, exist_ok=True)
            recs_path = rdir / "steps.jsonl"
            recs_path.unlink(missing_ok=True)
            log = rdir / "log.txt"
            info: dict[str, Any] = {}
            prof_path = rdir / "profile.json"
            prof_path.unlink(missing_ok=True)
            prof_conf = {"profile_last": a.profile_last, "profile_out": str(prof_path)}
            if run in LF_DEFAULT_RUNS or run in LF_ARG_VARIANTS:
                if run in LF_DEFAULT_RUNS:
                    args = lf_default_args(model_dir, ds, rdir / "out", cutoff, a.steps, cuda)
                    prof_conf["worker_callbacks"] = run == LF_DEFAULT_WITH_CALLBACKS
                else:
                    src = root / f"{wname}-thinktune" / "out" / ".thinktune" / "attempt-0.json"
                    if not src.is_file():
                        wres["runs"][run] = {"error": f"needs the thinktune run first ({src} missing)"}
                        continue
                    resolved = json.loads(src.read_text())
                    args = dict(resolved["args"])
                    args.update({"output_dir": str(rdir / "out"), "overwrite_output_dir": True})
                    args.update(LF_ARG_VARIANTS[run])
                    prof_conf["worker_callbacks"] = True
                    prof_conf["labelled_logits"] = bool(resolved.get("labelled_logits"))
                    prof_conf["callbacks_left_out"] = list(LF_CALLBACKS_LEFT_OUT.get(run, ()))
                cfg = rdir / "cfg.json"
                cfg.write_text(json.dumps({"args": args, "records": str(recs_path), **prof_conf}))
                rc, t0, t1 = run_logged(
                    [sys.executable, str(BENCH / "gpu_lf_run.py"), str(cfg)], log, env, a.run_timeout
                )
                recs = read_records(recs_path)
                info["args"] = args
            elif run == "hf_peft":
                cfg = rdir / "cfg.json"
                conf = {
                    "model": str(model_dir),
                    "dataset": str(ds),
                    "cutoff": cutoff,
                    "micro_batch": a.hf_micro_batch if cuda else 2,
                    "accum": 16 // a.hf_micro_batch if cuda else 2,
                    "steps": a.steps,
                    "lora_rank": 16,
                    "liger": True,
                    "gradient_checkpointing": False,
                    "seed": 7,
                    "records": str(recs_path),
                    **prof_conf,
                }
                cfg.write_text(json.dumps(conf))
                rc, t0, t1 = run_logged(
                    [sys.executable, str(BENCH / "hf_peft_bench.py"), str(cfg)], log, env, a.run_timeout
                )
                recs = read_records(recs_path)
                info["config"] = conf
            elif run in THINKTUNE_VARIANTS:
                over = THINKTUNE_VARIANTS[run]
                job = thinktune_job(
                    f"bench-{run}".replace("_", "-"),
                    model_dir,
                    rdir / "out",
                    cutoff,
                    a.steps,
                    over,
                    a.global_batch,
                )
                rc, t0, t1, recs, plan_args = run_thinktune(job, rdir, ds, env, a.run_timeout)
                info["overrides"] = over
                if plan_args:
                    info["plan_args"] = plan_args
            else:
                wres["runs"][run] = {"error": f"unknown run {run!r}"}
                continue
            if prof_path.is_file():  # profiled steps run slower: their times stay out of the summary
                info["profile"] = json.loads(prof_path.read_text())
                recs = [r for r in recs if not r.get("profiled")]
            summ = summarize(recs, t_start=t0, t_end=t1, model_cfg=model_cfg, mean_seq=mean_seq, warm=None)
            wres["runs"][run] = {"exit_code": rc, **summ, **info}
            budget = (info.get("overrides") or {}).get("training", {}).get("memoryBudgetGiB")
            if budget is not None:
                # peak_gib is torch's max_memory_allocated (the callback's snapshot); the cap is on the allocator
                peak = summ.get("peak_gib")
                wres["runs"][run]["memory_budget_gib"] = budget
                wres["runs"][run]["under_budget"] = None if peak is None else peak <= budget
                plan = rdir / "out" / "plan" / "plan.json"
                if plan.is_file():
                    try:
                        pj = json.loads(plan.read_text())
                        wres["runs"][run]["plan_memory_budget_gib"] = pj.get("memory_budget_gib")
                        wres["runs"][run]["plan_memory_estimate_gib"] = pj.get("memory_estimate_gib")
                    except (OSError, ValueError):
                        pass
                # an OOM under the cap shows up as a retry (attempt-1.json ...) with a smaller micro-batch
                wres["runs"][run]["attempts"] = len(
                    list((rdir / "out" / ".thinktune").glob("attempt-*.json"))
                )
            if rc != 0 or "error" in summ:
                wres["runs"][run]["log_tail"] = tail(log, 40)
            print(
                f"[gpu_train] {wname}/{run}: rc={rc} tokens/s={summ.get('tokens_per_s')} "
                f"peak={summ.get('peak_gib')} first_step={summ.get('time_to_first_step_s')}s",
                flush=True,
            )
            save()
        runs_done = wres["runs"]
        c = runs_done.get("thinktune", {}).get("tokens_per_s")
        wa = runs_done.get("lf_default", {}).get("tokens_per_s")
        wb = runs_done.get("hf_peft", {}).get("tokens_per_s")
        wres["thinktune_tokens_per_s"] = c
        la = runs_done.get("lf_default", {}).get("losses")
        lc = runs_done.get("thinktune_lf_recipe", {}).get("losses")
        if la and lc:  # the same recipe, data and seed: the curves should agree within bf16 noise
            diffs = [abs(x - y) for x, y in zip(la, lc, strict=False)]
            wres["lf_recipe_loss_max_abs_diff"] = round(max(diffs), 4)
        wres["ratio_vs_lf_default"] = round(c / wa, 3) if c and wa else None
        wres["ratio_vs_hf_peft"] = round(c / wb, 3) if c and wb else None
        wcb = runs_done.get(LF_DEFAULT_WITH_CALLBACKS, {}).get("tokens_per_s")
        if wcb and wa:  # < 1: thinktune's worker callbacks cost (a) that much at its micro-batch 1
            wres["lf_default_callbacks_ratio"] = round(wcb / wa, 3)
        best = max(
            (
                (k, v["tokens_per_s"])
                for k, v in runs_done.items()
                if k.startswith("thinktune") and v.get("tokens_per_s")
            ),
            key=lambda kv: kv[1],
            default=(None, None),
        )
        wres["best_thinktune_variant"] = {"run": best[0], "tokens_per_s": best[1]}
        save()
    print_table(result)
    return 0


def print_table(result: dict[str, Any]) -> None:
    print("\nworkload  run                   rc  tokens/s  step_s  MFU    peak_GiB  first_step_s  wall_s")
    for wname, w in result["workloads"].items():
        for run, r in w["runs"].items():
            print(
                f"{wname:9s} {run:21s} {r.get('exit_code', '-')!s:3s} {r.get('tokens_per_s')!s:9s} "
                f"{r.get('step_s_median')!s:7s} {r.get('mfu_vs_989')!s:6s} {r.get('peak_gib')!s:9s} "
                f"{r.get('time_to_first_step_s')!s:13s} {r.get('wall_s')!s}"
            )
        print(
            f"{wname}: ratio_vs_lf_default={w.get('ratio_vs_lf_default')} ratio_vs_hf_peft={w.get('ratio_vs_hf_peft')}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
