"""Where ``thinktune train`` spends its time before the first optimizer step, against LLaMA Factory run directly
with the same arguments (issue 14's "~11 s on top"): on CPU with thinktune's tiny model, or on the GPU machine
with bench/gpu_train.py's model and fixed-length dataset.

    python bench/startup.py OUT_DIR [--attempts 2] [--model DIR --dataset DIR] [--cutoff 256] [--global-batch 4]
        [--micro-batch 2 | 0 = planner] [--no-direct] [--profile] [--keep-kernel-cache] [--tag T]

Phases of the thinktune run, from the wall clock of this script and the files the run writes:
``parent`` (CLI start -> the launcher writes ``.thinktune/attempt-0.json``: imports, tokenizer, token counting,
planner), ``worker`` (-> the callback's ``begin`` record in ``metrics.jsonl``: torch/LLaMA Factory import, model
load, dataset preprocessing), ``first_step`` (-> the first ``train`` record). The direct run: ``run_exp`` on the
resolved arguments of the same plan through bench/gpu_lf_run.py, its first step record from process start. The first attempt fails at step 2
with an injected GPU failure (``THINKTUNE_INJECT_FAILURE``, exit 75); the second is what a gang restart does:
the same job resumes in the same output, finding the tokenized dataset under ``.thinktune/tokenized`` and the
kernel caches under ``.thinktune/kernel-cache``. With ``THINKTUNE_KERNEL_CACHE`` set (the operator's shared
kernel cache), every run's kernels go there, so a second invocation on a fresh OUT_DIR is a fresh job that finds an
earlier job's kernels. Writes OUT_DIR/startup[-T].json (and to $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
sys.path.insert(0, str(REPO / "trainer"))
from thinktune.contract import ENV_KERNEL_CACHE  # noqa: E402
from thinktune.hardware import detect_hardware  # noqa: E402


def run_context(model: Path) -> dict:
    """What the timings were taken on: the GPU (thinktune's own hardware view, which asks nvidia-smi and so opens no
    CUDA context in this process; "cpu" without one) and the model's shape, so a reader (bench/gpu_goals.py) can
    tell a 4B run on a GPU from a tiny CPU one."""
    gpus = detect_hardware(model).gpus
    cfg = json.loads((model / "config.json").read_text())
    return {
        "device": gpus[0].name if gpus else "cpu",
        "model_shape": {k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers")},
    }


def write_inputs(root: Path, a: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The model and dataset (given, or the tiny model and the e2e tier's dataset) and a FineTuneJob (YAML is
    JSON)."""
    ds, model = a.dataset, a.model
    if ds is None:
        sys.path.insert(0, str(REPO / "tests" / "e2e"))
        from test_train_e2e import write_dataset  # the e2e tier's LLaMA Factory dataset dir

        ds = write_dataset(root / "ds")
    if model is None:
        from thinktune.tiny_model import make_tiny_model

        model = root / "model"
        if not (model / "config.json").is_file():
            make_tiny_model(model)
    training = {
        "maxSteps": a.steps,
        "globalBatchSize": a.global_batch,
        "cutoffLen": a.cutoff,
        "saveSteps": 1,
        "loggingSteps": 1,
        "evalSteps": 100_000,
        "seed": 7,
        **({"microBatchSize": a.micro_batch} if a.micro_batch else {}),
    }
    job = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "startup"},
        "spec": {
            "model": {"nameOrPath": str(Path(model).resolve())},
            "dataset": {"path": str(Path(ds).resolve())},
            "output": {"path": str(root / "out")},
            "training": training,
            "evaluation": {"enabled": False},
        },
    }
    path = root / "job.yaml"
    path.write_text(json.dumps(job))
    return path, Path(ds).resolve(), Path(model).resolve()


def records(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def thinktune_run(job: Path, ds: Path, out: Path, env: dict[str, str], fail_at: int | None) -> dict:
    run_env = (
        {**env, "THINKTUNE_INJECT_FAILURE": f"{fail_at}:CUDA error: unspecified launch failure"}
        if fail_at
        else env
    )
    t0 = time.time()
    cmd = [PY, "-m", "thinktune.cli", "train", "-f", str(job), "--dataset", str(ds), "--no-progress"]
    p = subprocess.run(cmd, env=run_env, capture_output=True, text=True, cwd=REPO)
    wall = time.time() - t0
    if p.returncode != (75 if fail_at else 0):
        raise SystemExit(f"thinktune train: exit {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    recs = [r for r in records(out) if r.get("time", 0) >= t0]
    begin = next(r["time"] for r in recs if r.get("type") == "begin")
    first = next(r["time"] for r in recs if r.get("type") == "train")
    launched = (out / ".thinktune" / "attempt-0.json").stat().st_mtime
    log = (out / "logs" / "attempt-0.log").read_text(errors="replace")
    return {
        "parent_s": round(launched - t0, 2),
        "worker_s": round(begin - launched, 2),
        "first_step_s": round(first - begin, 2),
        "time_to_first_step_s": round(first - t0, 2),
        "wall_s": round(wall, 2),
        "tokenized_cache_hit": "Loading dataset from disk" in log,
        "exit": p.returncode,
    }


def direct_run(out: Path, env: dict[str, str], profiled: bool = False) -> dict:
    """LLaMA Factory's run_exp on the same plan's resolved arguments through bench/gpu_lf_run.py (its step records
    give the first step's time; with ``profiled``, its last 2 steps run under gpu_bench_lib.ProfileWindow)."""
    args = json.loads((out / "plan" / "plan.json").read_text())["args"]
    args = {**args, "output_dir": str(out.parent / "direct"), "tokenized_path": None}
    if profiled:  # no checkpoint inside the profiled steps (the thinktune runs save every step to resume)
        args["save_strategy"] = "no"
    records, profile = out.parent / "direct-steps.jsonl", out.parent / "direct-profile.json"
    records.unlink(missing_ok=True)
    profile.unlink(missing_ok=True)
    cfg = out.parent / "direct.json"
    cfg.write_text(
        json.dumps(
            {
                "args": {k: v for k, v in args.items() if v is not None},
                "records": str(records),
                "profile_last": 2 if profiled else 0,
                "profile_out": str(profile),
            }
        )
    )
    t0 = time.time()
    p = subprocess.run(
        [PY, str(REPO / "bench" / "gpu_lf_run.py"), str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    steps = (
        [json.loads(x) for x in records.read_text().splitlines() if x.strip()] if records.is_file() else []
    )
    if p.returncode != 0 or not steps:
        raise SystemExit(f"direct run_exp failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    res = {"time_to_first_step_s": round(steps[0]["time"] - t0, 2), "wall_s": round(time.time() - t0, 2)}
    if profiled:
        res["profile"] = json.loads(profile.read_text()) if profile.is_file() else None
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--cutoff", type=int, default=256)
    ap.add_argument("--global-batch", type=int, default=4)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--no-direct", action="store_true")
    ap.add_argument(
        "--profile", action="store_true", help="profile the direct run's last 2 steps (needs --steps 3+)"
    )
    ap.add_argument("--keep-kernel-cache", action="store_true", help="use the caller's TRITON_CACHE_DIR")
    ap.add_argument("--tag", default="", help="suffix of the JSON name: startup<-TAG>.json")
    a = ap.parse_args()
    root = a.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    job, ds, model = write_inputs(root, a)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "THINKTUNE_METRICS_PORT": "0"}
    if not a.keep_kernel_cache:
        env.pop("TRITON_CACHE_DIR", None)  # cold = thinktune's default under the (fresh) output dir
    result: dict = {"loadavg_before": os.getloadavg(), "cpu_count": os.cpu_count(), **run_context(model)}
    result["thinktune"] = []
    result["args"] = {k: str(v) for k, v in vars(a).items()}
    # the operator's shared kernel cache (cache.kernel_cache_env): a fresh output finds an earlier job's kernels
    result["shared_kernel_cache"] = env.get(ENV_KERNEL_CACHE)
    for i in range(a.attempts):
        fail_at = 2 if i < a.attempts - 1 else None
        result["thinktune"].append(thinktune_run(job, ds, root / "out", env, fail_at))
        print("thinktune", result["thinktune"][-1], flush=True)
    if not a.no_direct:
        result["direct_run_exp"] = direct_run(root / "out", env, profiled=a.profile)
        print("direct", result["direct_run_exp"], flush=True)
    result["loadavg_after"] = os.getloadavg()
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else root
    dest.mkdir(parents=True, exist_ok=True)
    (dest / (f"startup-{a.tag}.json" if a.tag else "startup.json")).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
