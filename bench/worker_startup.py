"""The worker's start-up shortcuts (thinktune/train/worker_startup.py) timed: importing LLaMA Factory's tuner, its
``load_tokenizer`` and ``get_dataset`` with and without them, each setting in a fresh process (fresh datasets
cache, nothing tokenized), alternating, on rows of ~``cutoff`` tokens in the qwen3 chat format with the Qwen3 tokenizer.

    python bench/worker_startup.py OUT.json [--rows 160] [--cutoff 2048] [--repeat 3] [--model DIR] [--leave-out NAME]

With ``--leave-out NAME`` the "without" side is every shortcut but NAME (one of skip_redundant_startup_work's
names), so the difference is that one shortcut's alone.

Without ``--model`` a tiny Qwen3 with the real Qwen3 tokenizer is built (thinktune.tiny_model): the tokenizer and
the dataset are what is timed, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
if sys.argv[2] != "-":  # as the worker: before LLaMA Factory's tuner is imported, less the ones named
    from thinktune.train.worker_startup import skip_redundant_startup_work
    skip_redundant_startup_work(args, leave_out=tuple(n for n in sys.argv[2].split(",") if n))
import llamafactory.train.tuner  # the worker's import
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model_args, data_args, training_args, *_ = get_train_args(args)
t1 = time.perf_counter()
tm = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
t2 = time.perf_counter()
dm = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)
t3 = time.perf_counter()
print("RESULT " + json.dumps({"imports_s": round(t1 - t0, 3), "tokenizer_s": round(t2 - t1, 3),
      "dataset_s": round(t3 - t2, 3), "rows": len(dm["train_dataset"]), "scipy_optimize_imported": "scipy.optimize" in sys.modules,
      "tokens": sum(len(x) for x in dm["train_dataset"]["input_ids"])}))
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--cutoff", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--leave-out", default="", help="the 'without' side: every shortcut but this one")
    a = ap.parse_args()
    from gpu_bench_lib import child_result, make_fixed_dataset, make_model

    work = Path(tempfile.mkdtemp(prefix="worker-startup-"))
    model = a.model or make_model(work / "model", "tiny")[0]
    ds = make_fixed_dataset(work / "ds", n=a.rows, chars=3 * a.cutoff, tokenizer_dir=model, cutoff=a.cutoff)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for i in range(a.repeat):
        for name, flag in (("without", a.leave_out or "-"), ("with", "")):
            out = work / f"{name}-{i}"
            args = {
                "model_name_or_path": str(model),
                "stage": "sft",
                "do_train": True,
                "finetuning_type": "lora",
                "template": "qwen3",
                "dataset": "bench_train",
                "dataset_dir": str(ds),
                "cutoff_len": a.cutoff,
                "output_dir": str(out),
                "tokenized_path": str(out / "tokenized"),
                "per_device_train_batch_size": 1,
                "max_steps": 1,
                "report_to": "none",
                "use_cpu": True,
            }
            child_env = {**env, "HF_DATASETS_CACHE": str(out / "datasets-cache")}
            runs[name].append(child_result(CHILD, json.dumps(args), flag, env=child_env))
            print(name, runs[name][-1], flush=True)
    summary = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("tokenizer_s", "dataset_s", "imports_s")}
        for name, rs in runs.items()
    }
    same = {k: {r[k] for rs in runs.values() for r in rs} for k in ("rows", "tokens")}
    without = f"with every shortcut but {a.leave_out}" if a.leave_out else "without"
    result = {
        "what": f"importing LLaMA Factory's tuner, its load_tokenizer and get_dataset, {without} and with thinktune's "
        "worker start-up shortcuts (skip_redundant_startup_work, called before the import as the worker does)",
        "leave_out": a.leave_out or None,
        "scipy_optimize_imported": {
            name: sorted({r.get("scipy_optimize_imported") for r in rs}) for name, rs in runs.items()
        },
        "command": "python bench/worker_startup.py OUT " + " ".join(sys.argv[2:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs",
        "rows": a.rows,
        "cutoff": a.cutoff,
        "same_rows_and_tokens": all(len(v) == 1 for v in same.values()),
        "median": summary,
        "saved_s": round(
            sum(
                summary["without"][k] - summary["with"][k] for k in ("imports_s", "tokenizer_s", "dataset_s")
            ),
            2,
        ),
        "runs": runs,
    }
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["median"]), "saved", result["saved_s"], "s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
