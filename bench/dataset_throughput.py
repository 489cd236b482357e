"""DatasetBuild throughput: MB/s of markdown processed end to end vs raw jieba segmentation of the same text.

The sample corpus (examples/crypto/corpus) is replicated into a temporary directory until it reaches
--target-mb; then, on the same text:

* raw jieba: ``jieba.lcut`` (default dictionary, HMM on) over every document, one process, after
  ``jieba.initialize()`` (dictionary load not timed);
* pipeline: ``build_dataset`` end to end (parse, thinking, OpenCC, punctuation, jieba + glossary terms,
  template thinking, validation with the real Qwen3 tokenizer, dedup, split, writing files and plots) with
  ``spec.workers`` = all cores. The tokenizer is loaded once before timing (its load time is reported
  separately) — the same thing a long-running pod does.

Usage: uv run --no-sync python bench/dataset_throughput.py [--target-mb 4] [--repeat 2] [--out bench/results/dataset_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "crypto" / "corpus"


# Copy k applies the substitutions selected by the bits of k, so every copy's paragraphs are different text
# (no cache can short-cut jieba) while staying natural Chinese with the same markdown structure; the copies
# are near-duplicates of each other, which the pipeline's MinHash/LSH de-duplication has to find.
SUBSTITUTIONS = [
    ("的", "之"),
    ("是", "乃"),
    ("在", "于"),
    ("和", "与"),
    ("这", "此"),
    ("可以", "能够"),
    ("使用", "采用"),
    ("一个", "某个"),
    ("如果", "若是"),
    ("因为", "由于"),
    ("所以", "因而"),
    ("需要", "须要"),
]


def variant(text: str, k: int) -> str:
    for bit, (a, b) in enumerate(SUBSTITUTIONS):
        if k >> bit & 1:
            text = text.replace(a, b)
    return text


def replicate(dst: Path, target_bytes: int) -> tuple[int, int]:
    files = sorted(CORPUS.glob("*.md"))
    texts = {f.name: f.read_text(encoding="utf-8") for f in files}
    total = 0
    n = 0
    k = 0
    while total < target_bytes:
        d = dst / f"copy{k:04d}"
        d.mkdir(parents=True)
        for name, text in texts.items():
            data = variant(text, k).encode("utf-8")
            (d / name).write_bytes(data)
            total += len(data)
            n += 1
        k += 1
    return n, total


def summary(r: dict) -> dict:
    """The headline numbers of an earlier result (kept in the new result's ``earlier_runs``)."""
    if "raw_jieba_s" in r:  # already a summary
        return r
    return {
        "date": r["date"],
        "git_head": r.get("git_head"),
        "loadavg_before": r["machine"].get("loadavg_before"),
        "megabytes": r["corpus"]["megabytes"],
        "raw_jieba_s": r["raw_jieba"]["seconds"],
        "pipeline_s": r["pipeline"]["seconds"],
        "raw_jieba_mb_per_s": r["raw_jieba"]["mb_per_s"],
        "pipeline_mb_per_s": r["pipeline"]["mb_per_s"],
        "ratio_pipeline_over_jieba": r["ratio_pipeline_over_jieba"],
    }


def git_head() -> str | None:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-mb", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dataset_throughput.json"))
    args = ap.parse_args()
    load_before = list(os.getloadavg())

    import jieba
    from thinktune.data.build import build_dataset
    from thinktune.qwen_tokenizer import load_tokenizer
    from thinktune.spec import DatasetBuildSpec

    with tempfile.TemporaryDirectory(prefix="tt-bench-") as tmp:
        src = Path(tmp) / "corpus"
        n_docs, n_bytes = replicate(src, int(args.target_mb * 1024 * 1024))
        texts = [p.read_text(encoding="utf-8") for p in sorted(src.rglob("*.md"))]
        mb = n_bytes / 1024 / 1024

        jieba.setLogLevel(60)
        jieba.initialize()
        jieba_runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            n_tokens = sum(len(jieba.lcut(t)) for t in texts)
            jieba_runs.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        tok = load_tokenizer("builtin:qwen3")
        tok_load = time.perf_counter() - t0

        runs = []
        reports = []
        for i in range(args.repeat):
            out = Path(tmp) / f"out{i}"
            spec = DatasetBuildSpec.model_validate(
                {"source": {"path": str(src)}, "output": {"path": str(out)}}
            )
            t0 = time.perf_counter()
            reports.append(build_dataset(spec, src, out, progress=False, tokenizer=tok))
            runs.append(time.perf_counter() - t0)

    best_j, best_p = min(jieba_runs), min(runs)
    report = reports[runs.index(best_p)]
    result = {
        "benchmark": "dataset_throughput",
        "command": "uv run --no-sync python bench/dataset_throughput.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_head": git_head(),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": list(os.getloadavg()),
            "note": "shared machine: other processes' load (loadavg) slows the 2-worker pipeline more "
            "than single-process jieba; best of --repeat runs is reported",
        },
        "corpus": {
            "source": "examples/crypto/corpus replicated; copy k rewrites common words by the bits of k "
            "(every copy is different text, near-duplicate of the others)",
            "documents": n_docs,
            "bytes": n_bytes,
            "megabytes": round(mb, 3),
        },
        "raw_jieba": {
            "what": "jieba.lcut per document, default dictionary, 1 process",
            "seconds": round(best_j, 3),
            "runs_s": [round(x, 3) for x in jieba_runs],
            "mb_per_s": round(mb / best_j, 3),
            "tokens": n_tokens,
        },
        "pipeline": {
            "what": "build_dataset end to end, workers = all cores, tokenizer preloaded",
            "seconds": round(best_p, 3),
            "runs_s": [round(x, 3) for x in runs],
            "mb_per_s": round(mb / best_p, 3),
            "workers": report["timing"]["workers"],
            "stage_seconds": {k: v for k, v in report["timing"].items() if k.endswith("_s")},
            "tokenizer_load_s_not_timed": round(tok_load, 3),
            "samples_written": report["counts"]["samples"],
            "duplicates_removed": report["counts"]["duplicates"],
        },
        "ratio_pipeline_over_jieba": round(best_p / best_j, 3),
        "goal": "pipeline time <= 2x raw jieba time",
        "goal_met": best_p <= 2 * best_j,
    }
    out_path = Path(args.out)
    # keep a short history: the load on this shared machine moves the numbers a lot
    earlier: list[dict] = []
    if out_path.is_file():
        try:
            prev = json.loads(out_path.read_text(encoding="utf-8"))
            earlier = [summary(prev)] + prev.get("earlier_runs", [])
        except (ValueError, KeyError):
            earlier = []
    result["earlier_runs"] = earlier[:6]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
