"""Wall time of the README's main job (`thinktune run -f examples/crypto/`) on this machine, per stage.

Copies examples/crypto (CRs + corpus) to a temp dir so the repo's own out/ is untouched, runs the pipeline
from scratch, and reads each stage's outputs for the numbers that matter.

    uv run --no-sync python bench/main_job.py [--out bench/results/main_job_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/main_job_cpu.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "crypto"
        shutil.copytree(ROOT / "examples/crypto", work, ignore=shutil.ignore_patterns("out"))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        t0 = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "thinktune.cli", "run", "-f", str(work), "--no-progress"],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - t0
        if res.returncode != 0:
            print(res.stdout[-3000:], res.stderr[-3000:])
            return res.returncode
        ds = json.loads((work / "out/dataset/report.json").read_text())
        tr = json.loads((work / "out/lora/report.json").read_text())
        ex = json.loads((work / "out/export/report.json").read_text())
    result = {
        "benchmark": "main_job_cpu",
        "command": "uv run --no-sync python bench/main_job.py",
        "what": "thinktune run -f examples/crypto/ from scratch (tiny Qwen3 with the real tokenizer, CPU)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before_end": list(os.getloadavg()),
        },
        "wall_s": round(wall, 1),
        "dataset": {
            "samples": ds["counts"]["samples"],
            "rejects": ds["counts"]["rejects"],
            "seconds": ds.get("timing", {}).get("total_s"),
        },
        "training": {
            k: tr.get("convergence", {}).get(k)
            for k in ("first_loss", "last_loss", "first_eval_loss", "final_eval_loss", "verdict")
        },
        "training_steps": tr.get("status", {}).get("progress", {}).get("step"),
        "export_artifacts": [x.get("name") for x in ex.get("status", {}).get("artifacts", [])],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
