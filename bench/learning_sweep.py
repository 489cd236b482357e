"""How fast the CPU demo's tiny model learns under other training settings (issue 11): each variant re-runs the
FineTuneJob of a kept main-job directory (`bench/main_job.py --keep DIR`: its dataset and warm-started tiny
model are reused, or a tiny model of another shape is made) without the generation evaluation, and records the
validation loss at the start and the end, the teacher-forced character/term accuracy and tokens/s.

    uv run --no-sync python bench/learning_sweep.py --base DIR [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# name -> overrides of the example FineTuneJob's spec (training / finetuning) and of the tiny model's shape
VARIANTS: dict[str, dict] = {
    "batch4_2ep": {"training": {"globalBatchSize": 4, "numTrainEpochs": 2, "evalSteps": 30}},
    "batch4_2ep_rank64": {
        "training": {"globalBatchSize": 4, "numTrainEpochs": 2, "evalSteps": 30},
        "finetuning": {"lora": {"rank": 64}},
    },
    "batch4_2ep_mlp512_4layers": {
        "training": {"globalBatchSize": 4, "numTrainEpochs": 2, "evalSteps": 30},
        "shape": {"intermediate": 512, "num_layers": 4},
    },
    "batch2_2ep": {"training": {"globalBatchSize": 2, "numTrainEpochs": 2, "evalSteps": 30}},
    "batch2_4ep": {"training": {"globalBatchSize": 2, "numTrainEpochs": 4, "evalSteps": 60}},
    "batch1_2ep": {"training": {"globalBatchSize": 1, "numTrainEpochs": 2, "evalSteps": 60}},
    "batch1_3ep": {"training": {"globalBatchSize": 1, "numTrainEpochs": 3, "evalSteps": 120}},
    "batch1_3ep_lr5e-3": {
        "training": {"globalBatchSize": 1, "numTrainEpochs": 3, "learningRate": 5e-3, "evalSteps": 120}
    },
    "batch1_3ep_lr2e-2": {
        "training": {"globalBatchSize": 1, "numTrainEpochs": 3, "learningRate": 2e-2, "evalSteps": 120}
    },
    "batch1_4ep": {"training": {"globalBatchSize": 1, "numTrainEpochs": 4, "evalSteps": 120}},
}


def run_variant(base: Path, name: str, cfg: dict, env: dict) -> dict:
    work = base.parent / f"{base.name}-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copy(base / "01-datasetbuild.yaml", work)
    shutil.copytree(base / "corpus", work / "corpus")
    shutil.copytree(base / "out/dataset", work / "out/dataset")
    job = yaml.safe_load((base / "02-finetunejob.yaml").read_text())
    for section in ("training", "finetuning"):
        job["spec"][section].update(cfg.get(section, {}))
    job["spec"]["training"].setdefault("saveSteps", job["spec"]["training"].get("evalSteps"))
    job["spec"]["evaluation"]["enabled"] = False  # the generation evaluation is the same for every variant
    (work / "02-finetunejob.yaml").write_text(yaml.safe_dump(job, allow_unicode=True))
    if "shape" in cfg:
        from thinktune.tiny_model import make_tiny_model

        make_tiny_model(work / "out/tiny-qwen3", warm_start=work / "out/dataset/train.json", **cfg["shape"])
    else:
        shutil.copytree(base / "out/tiny-qwen3", work / "out/tiny-qwen3")
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "thinktune.cli", "run", "-f", str(work), "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        return {"name": name, "error": (res.stdout + res.stderr)[-2000:]}
    records = [json.loads(x) for x in (work / "out/lora/metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [r for r in records if r.get("type") == "eval"]
    train = [r for r in records if r.get("type") == "train"]
    tps = sorted(r["tokens_per_second"] for r in train if r.get("tokens_per_second"))
    end = next((r for r in records if r.get("type") == "end"), {})
    shutil.rmtree(work, ignore_errors=True)
    return {
        "name": name,
        "overrides": cfg,
        "steps": train[-1].get("step") if train else None,
        "wall_s": round(time.monotonic() - t0, 1),
        "training_s": end.get("elapsed_s"),
        "tokens_per_second_median": tps[len(tps) // 2] if tps else None,
        "val_loss": [[e.get("step"), round(e["eval_loss"], 3)] for e in evals if "eval_loss" in e],
        "val_loss_ratio": round(evals[-1]["eval_loss"] / evals[0]["eval_loss"], 3) if evals else None,
        "teacher_forced_char_accuracy_last": evals[-1].get("teacher_forced_char_accuracy") if evals else None,
        "teacher_forced_term_accuracy_last": evals[-1].get("teacher_forced_term_accuracy") if evals else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="a directory kept by bench/main_job.py --keep")
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/tiny_learning_sweep.json")
    a = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    runs = []
    for name in a.only or list(VARIANTS):
        runs.append(run_variant(a.base.resolve(), name, VARIANTS[name], env))
        print(json.dumps(runs[-1], ensure_ascii=False), flush=True)
    result = {
        "benchmark": "tiny_learning_sweep",
        "command": "uv run --no-sync python bench/learning_sweep.py --base DIR",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": list(os.getloadavg())},
        "runs": runs,
    }
    a.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
