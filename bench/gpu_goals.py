"""Issue 14's goals read from the benchmark's own JSON: one line per goal with the measured value, whether it is met,
and the file (and run) it came from.

    python bench/gpu_goals.py bench/results/gpu-train-*.json bench/results/startup*.json [--json OUT.json]

Reads what ``bench/gpu_train.py`` (``gpu-train-*.json``) and ``bench/startup.py`` (``startup*.json``) write. A goal
no given file measured is reported as not measured, never as met. Where several files measure a goal, the newest
file (by its ``date``, then by its name) decides and the others are listed, so an older run cannot hide a newer one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

H200 = "H200"


def _fixed(doc: dict, cutoff: int) -> dict | None:
    w = doc.get("workloads", {}).get("fixed")
    return w if w and w.get("cutoff") == cutoff else None


def _gpu(doc: dict) -> str:
    return str(doc.get("versions", {}).get("gpu", ""))


def _tokens_2048_h200(doc: dict) -> tuple[float, str] | None:
    w = _fixed(doc, 2048)
    if w and H200 in _gpu(doc) and w.get("thinktune_tokens_per_s"):
        return w["thinktune_tokens_per_s"], "thinktune"
    return None


def _ratio(key: str, workload: str, h200_only: bool) -> Callable[[dict], tuple[float, str] | None]:
    def read(doc: dict) -> tuple[float, str] | None:
        w = doc.get("workloads", {}).get(workload)
        if not w or (workload == "fixed" and w.get("cutoff") != 2048):
            return None
        if h200_only and H200 not in _gpu(doc):
            return None
        return (w[key], "thinktune") if w.get(key) else None

    return read


def _budget48(doc: dict) -> tuple[float, str] | None:
    w = _fixed(doc, 2048)
    r = (w or {}).get("runs", {}).get("thinktune_budget48", {})
    if r.get("tokens_per_s") and r.get("peak_gib") is not None:
        # both halves of the goal: the speed, and the plan staying under the budget
        return (r["tokens_per_s"] if r["peak_gib"] <= 48 else 0.0), "thinktune_budget48"
    return None


def _peak_8192_budget24(doc: dict) -> tuple[float, str] | None:
    w = _fixed(doc, 8192)
    r = (w or {}).get("runs", {}).get("thinktune_budget24", {})
    if r.get("peak_gib") is not None and r.get("exit_code") == 0:
        return r["peak_gib"], "thinktune_budget24"
    return None


QWEN3_4B_SHAPE = {"hidden_size": 2560, "num_hidden_layers": 36}


def _startup_runs(doc: dict) -> Iterable[tuple[str, list]]:
    """(job, its attempts) in both shapes bench/startup.py results take: one job per file (``thinktune`` at the
    top), or several jobs of one device call gathered in one file (call13's ``job1``, ``job2``)."""
    if isinstance(doc.get("thinktune"), list):
        yield "thinktune", doc["thinktune"]
    for job, entry in doc.items():
        if isinstance(entry, dict) and isinstance(entry.get("thinktune"), list):
            yield job, entry["thinktune"]


def _first_step(doc: dict) -> tuple[float, str] | None:
    """bench/startup.py: the fastest fresh job (a new output: nothing tokenized, no checkpoint) of the file, on a
    GPU and the 4B model's shape; a file that does not say it ran there (a CPU or tiny-model run) measures
    nothing here."""
    device = str(doc.get("device", "cpu"))
    if device.lower() == "cpu" or doc.get("model_shape", QWEN3_4B_SHAPE) != QWEN3_4B_SHAPE:
        return None
    fresh = [
        (r["time_to_first_step_s"], job)
        for job, runs in _startup_runs(doc)
        for r in runs
        if r.get("exit") == 0 and not r.get("tokenized_cache_hit") and r.get("time_to_first_step_s")
    ]
    return min(fresh) if fresh else None


def _loss_match(doc: dict) -> tuple[float, str] | None:
    w = doc.get("workloads", {}).get("fixed") or {}
    d = w.get("lf_recipe_loss_max_abs_diff")
    return (d, "thinktune_lf_recipe vs lf_default") if d is not None else None


# (name, target, comparison, reader): each reader returns (value, run) or None when the file does not measure it
GOALS: list[tuple[str, float, str, Callable[[dict], tuple[float, str] | None]]] = [
    ("(c) tokens/s at 2048, one H200", 25_000, ">=", _tokens_2048_h200),
    ("(c) / (a) at 2048, one H200", 4.4, ">=", _ratio("ratio_vs_lf_default", "fixed", True)),
    ("(c) / (b) at 2048, one H200", 1.25, ">=", _ratio("ratio_vs_hf_peft", "fixed", True)),
    ("tokens/s within memoryBudgetGiB 48 (peak under it)", 20_000, ">=", _budget48),
    ("peak GiB, 8192-token rows under memoryBudgetGiB 24", 24, "<=", _peak_8192_budget24),
    ("(c) / (a), real lengths", 1.5, ">=", _ratio("ratio_vs_lf_default", "real", False)),
    ("time to first step of a fresh job, s", 30, "<=", _first_step),
    ("loss curve of (c) on (a)'s recipe vs (a), max |diff|", 0.01, "<=", _loss_match),
]


def evaluate(docs: Iterable[tuple[str, dict]]) -> list[dict[str, Any]]:
    ordered = sorted(docs, key=lambda nd: (str(nd[1].get("date", "")), nd[0]))
    out = []
    for name, target, cmp, read in GOALS:
        seen = [(path, hit) for path, doc in ordered if (hit := read(doc)) is not None]
        row: dict[str, Any] = {"goal": name, "target": f"{cmp} {target}"}
        if not seen:
            row.update({"measured": None, "met": None, "file": None})
        else:
            path, (value, run) = seen[-1]
            met = value >= target if cmp == ">=" else value <= target
            row.update({"measured": value, "met": met, "file": path, "run": run})
            if len(seen) > 1:
                row["older"] = [{"file": p, "measured": h[0]} for p, h in seen[:-1]]
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    docs = []
    for f in a.files:
        try:
            docs.append((str(f), json.loads(f.read_text())))
        except (OSError, ValueError) as e:
            print(
                f"gpu_goals: {f}: not a benchmark JSON ({e}); give gpu_train.py or startup.py output",
                file=sys.stderr,
            )
            return 2
    rows = evaluate(docs)
    for r in rows:
        state = "not measured" if r["met"] is None else ("met" if r["met"] else "NOT met")
        print(f"{r['goal']:55s} {r['target']:>9s}  {r['measured']!s:>9s}  {state:12s} {r['file'] or ''}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
