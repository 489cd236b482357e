"""LLaMA Factory's dataset preprocessing ("Running tokenizer on dataset") against ``preprocessing_num_workers``.

On the H100 (2026-12-07, bench/results/lf_default_startup_h100.log) LLaMA Factory spent 50 s tokenizing 160
rows of 2k tokens with 16 workers, 3.2 rows/s; in one process the same rows take ~2 s (the JSON). The suspected
cause: ``datasets.map(num_proc=N)`` sends every shard's job to a process pool with the function pickled (dill),
and the function holds the tokenizer (``tokenizer_pickle`` in the JSON: its size and the time to dill and load it),
so small datasets pay N pickles in the parent and N loads in the workers. This measures it: each setting in a
fresh process, ``overwrite_cache`` on, the same model directory and dataset.

    python bench/preprocess_workers.py OUT_DIR [--rows 160,2000] [--workers none,2,4,16] [--chars 6144]
        [--model DIR (default: the real Qwen3 tokenizer, built offline, in a config-only model dir)]

Writes OUT_DIR/preprocess_workers.json: per (rows, workers) the wall time of ``get_dataset`` and rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "trainer"))

CHILD = r"""
import json, sys, time
t0 = time.time()
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
args = json.loads(sys.argv[1])
model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
tok = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tok["tokenizer"], data_args)
t1 = time.time()
ds = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok)
t2 = time.time()
print("@@" + json.dumps({"setup_s": round(t1 - t0, 2), "preprocess_s": round(t2 - t1, 2),
                         "rows_out": len(ds["train_dataset"])}))
"""


def model_dir(root: Path) -> Path:
    """A directory LLaMA Factory can load a tokenizer from: the real Qwen3 tokenizer and a tiny config."""
    d = root / "model"
    if not (d / "tokenizer.json").is_file():
        from thinktune.tiny_model import make_tiny_model

        make_tiny_model(d)
    return d


def tokenizer_pickle(model: Path) -> dict:
    """What each worker of ``datasets.map(num_proc=N)`` is sent: the tokenizer, dill-pickled (datasets' pickler),
    and what loading it back costs."""
    import pickle
    import time

    import dill
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    t = time.time()
    blob = dill.dumps(tok)
    dumped = time.time() - t
    t = time.time()
    pickle.loads(blob)
    return {"bytes": len(blob), "dill_dumps_s": round(dumped, 2), "loads_s": round(time.time() - t, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", default="160,2000")
    ap.add_argument("--workers", default="none,2,4,16")
    ap.add_argument("--chars", type=int, default=6144)
    ap.add_argument("--cutoff", type=int, default=2048)
    ap.add_argument("--model", type=Path)
    a = ap.parse_args()
    from gpu_bench_lib import make_fixed_dataset

    a.out.mkdir(parents=True, exist_ok=True)
    model = a.model or model_dir(a.out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "trainer"), env.get("PYTHONPATH")]))
    results = []
    for n in [int(x) for x in a.rows.split(",")]:
        ds = make_fixed_dataset(a.out / f"ds_{n}", n=n, chars=a.chars, tokenizer_dir=model, cutoff=a.cutoff)
        for w in a.workers.split(","):
            workers = None if w == "none" else int(w)
            args = {
                "model_name_or_path": str(model),
                "stage": "sft",
                "do_train": True,
                "finetuning_type": "lora",
                "dataset": "bench_train",
                "dataset_dir": str(ds),
                "template": "qwen3",
                "cutoff_len": a.cutoff,
                "overwrite_cache": True,
                "preprocessing_num_workers": workers,
                "output_dir": str(a.out / "lf_out"),
                "report_to": "none",
                "use_cpu": True,
            }
            t = time.time()
            p = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True, text=True
            )
            wall = time.time() - t
            rec = {"rows": n, "workers": workers, "wall_s": round(wall, 2), "exit": p.returncode}
            line = next((x for x in p.stdout.splitlines() if x.startswith("@@")), None)
            if line:
                rec.update(json.loads(line[2:]))
                rec["rows_per_s"] = round(n / max(rec["preprocess_s"], 1e-9), 1)
            else:
                rec["stderr_tail"] = p.stderr[-800:]
            print(json.dumps(rec), flush=True)
            results.append(rec)
    out = {
        "what": __doc__.splitlines()[0],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine()},
        "chars_per_row": a.chars,
        "cutoff": a.cutoff,
        "tokenizer_pickle": tokenizer_pickle(model),
        "results": results,
    }
    (a.out / "preprocess_workers.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
