"""The training report: ``report.json`` + ``report.md`` + PNG plots in ``output_dir/plots/``.

Built from ``metrics.jsonl`` (written by the monitoring callback; it spans every attempt, so records are
de-duplicated by step keeping the latest: a resumed attempt overwrites the steps it repeated), the plan and
the launcher's attempts/OOM retries. Plots: ``loss.png`` (train + validation loss), ``lr.png``,
``tokens_per_second.png``, ``memory.png`` (per rank: GPU allocated/peak, or process RSS on CPU),
``teacher_forced_accuracy.png`` (term and Chinese character accuracy on validation).

The accuracies here are the teacher-forced ones of ``thinktune.train.scoring`` (``teacher_forced_char_accuracy``,
``teacher_forced_term_accuracy``), not evaluation's ``char_accuracy`` / ``term_accuracy`` of generated text.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def read_metrics(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(output_dir) / "metrics.jsonl"
    out = []
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _by_step(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for r in records:
        if r.get("type") == kind and r.get("step") is not None:
            latest[int(r["step"])] = r
    return [latest[k] for k in sorted(latest)]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# Below this relative drop of the training loss (first -> last) a run has not learned anything worth reporting,
# whatever direction the loss moved in.
LEARNING_MIN_DROP = 0.10


def convergence(train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, Any]:
    losses = [(r["step"], r["loss"]) for r in train if _finite(r.get("loss"))]
    ev = [(r["step"], r["eval_loss"]) for r in evals if _finite(r.get("eval_loss"))]
    out: dict[str, Any] = {"train_logs": len(losses), "evals": len(ev)}
    if losses:
        k = max(1, min(3, len(losses) // 3 or 1))
        first = sum(v for _, v in losses[:k]) / k
        last = sum(v for _, v in losses[-k:]) / k
        out.update(
            {
                "first_loss": round(first, 5),
                "last_loss": round(last, 5),
                "min_loss": round(min(v for _, v in losses), 5),
                "loss_drop": round(first - last, 5),
                "loss_drop_ratio": round((first - last) / first, 5) if first else None,
                "loss_decreased": last < first,
            }
        )
    if ev:
        best = min(ev, key=lambda x: x[1])
        out.update(
            {
                "first_eval_loss": round(ev[0][1], 5),
                "final_eval_loss": round(ev[-1][1], 5),
                "best_eval_loss": round(best[1], 5),
                "best_eval_step": best[0],
                "eval_loss_decreased": ev[-1][1] < ev[0][1] if len(ev) > 1 else None,
            }
        )
    verdict = "unknown"
    if "loss_decreased" in out:
        drop = out["loss_drop_ratio"] or 0.0
        if drop < LEARNING_MIN_DROP:
            verdict = (
                f"not learning: training loss {out['first_loss']:.4g} -> {out['last_loss']:.4g} "
                f"({drop:+.1%}, under {LEARNING_MIN_DROP:.0%}); raise learningRate or the number of steps, "
                "or check that the base model can represent the data (a random model cannot)"
            )
        elif len(ev) >= 3 and ev[-1][1] > best[1] * 1.02:
            verdict = (
                "overfitting: validation loss rose after its best; use the best checkpoint or fewer epochs"
            )
        elif out.get("eval_loss_decreased") is False:
            verdict = "training loss fell but validation loss did not"
        else:
            verdict = "converging"
    out["verdict"] = verdict
    return out


MEMORY_MIN_SPAN_GIB = 1.0  # the memory axis spans at least this much, so MB-scale drift reads as flat


def memory_ylim(values: list[float]) -> tuple[float, float]:
    """Y-axis limits (GiB) of the memory plot: from 0, so a line's height is its share of the peak, and at
    least MEMORY_MIN_SPAN_GIB tall. Matplotlib's autoscale zooms onto the data range instead, which draws an
    8 MB drift on 8 GiB as a steep climb: it looks like a leak."""
    top = max((v for v in values if _finite(v)), default=0.0)
    return 0.0, max(MEMORY_MIN_SPAN_GIB, top * 1.1)


def _plot(
    path: Path,
    title: str,
    series: list[tuple[str, list[float], list[float]]],
    ylabel: str,
    logy: bool = False,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    series = [(n, xs, ys) for n, xs, ys in series if xs]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, xs, ys in series:
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def make_plots(output_dir: Path, train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, str]:
    d = output_dir / "plots"
    d.mkdir(parents=True, exist_ok=True)

    def xy(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
        return [p[0] for p in pts], [p[1] for p in pts]

    plots: dict[str, str] = {}
    made = _plot(
        d / "loss.png",
        "Loss",
        [("train loss", *xy(train, "loss")), ("validation loss", *xy(evals, "eval_loss"))],
        "loss",
    )
    if made:
        plots["loss"] = f"plots/{made}"
    made = _plot(
        d / "lr.png", "Learning-rate schedule", [("lr", *xy(train, "learning_rate"))], "learning rate"
    )
    if made:
        plots["lr"] = f"plots/{made}"
    made = _plot(
        d / "tokens_per_second.png",
        "Throughput (all ranks)",
        [("tokens/s", *xy(train, "tokens_per_second"))],
        "tokens / s",
    )
    if made:
        plots["tokens_per_second"] = f"plots/{made}"
    mem_series = []
    ranks = sorted({m.get("rank", 0) for r in train for m in r.get("memory", []) or []})
    for rank in ranks:
        for key, label in (("allocated_bytes", "allocated"), ("peak_bytes", "peak"), ("rss_bytes", "RSS")):
            xs, ys = [], []
            for r in train:
                for m in r.get("memory", []) or []:
                    if m.get("rank", 0) == rank and _finite(m.get(key)):
                        xs.append(r["step"])
                        ys.append(m[key] / 2**30)
            if xs and (
                key != "rss_bytes"
                or not any(
                    _finite(m.get("allocated_bytes")) for r in train for m in r.get("memory", []) or []
                )
            ):
                mem_series.append((f"rank {rank} {label}", xs, ys))
    made = _plot(
        d / "memory.png",
        "Memory per rank",
        mem_series,
        "GiB",
        ylim=memory_ylim([y for _, _, ys in mem_series for y in ys]),
    )
    if made:
        plots["memory"] = f"plots/{made}"
    made = _plot(
        d / "teacher_forced_accuracy.png",
        "Validation accuracy (teacher-forced)",
        [
            ("term accuracy (exact term)", *xy(evals, "teacher_forced_term_accuracy")),
            ("term token accuracy", *xy(evals, "term_token_accuracy")),
            ("Chinese character accuracy", *xy(evals, "teacher_forced_char_accuracy")),
        ],
        "accuracy",
    )
    if made:
        plots["teacher_forced_accuracy"] = f"plots/{made}"
    return plots


def build_report(
    output_dir: str | os.PathLike[str],
    *,
    plan: dict[str, Any] | None = None,
    attempts: list[dict[str, Any]] | None = None,
    oom_retries: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
    outcome: str = "Succeeded",
    job: str = "local",
    namespace: str = "default",
    adapter_path: str | None = None,
    extra: dict[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    out = Path(output_dir)
    records = read_metrics(out)
    train = _by_step(records, "train")
    evals = _by_step(records, "eval")
    anomalies = [r for r in records if r.get("type") == "warning"]
    summary = next((r for r in reversed(records) if r.get("type") == "train_summary"), {})
    conv = convergence(train, evals)
    final_eval = evals[-1] if evals else {}
    zh = {
        k: final_eval.get(k)
        for k in (
            "teacher_forced_char_accuracy",
            "teacher_forced_term_accuracy",
            "term_token_accuracy",
            "token_accuracy",
            "cjk_chars",
            "term_occurrences",
        )
    }
    zh["terms"] = final_eval.get("terms", {})
    if len(evals) > 1:
        first = evals[0]
        zh["teacher_forced_char_accuracy_first"] = first.get("teacher_forced_char_accuracy")
        zh["teacher_forced_term_accuracy_first"] = first.get("teacher_forced_term_accuracy")
        zh["term_token_accuracy_first"] = first.get("term_token_accuracy")
    plots = make_plots(out, train, evals) if write else {}
    tps = [r["tokens_per_second"] for r in train if _finite(r.get("tokens_per_second"))]
    peaks = [
        m.get("peak_bytes") or m.get("rss_bytes")
        for r in train
        for m in r.get("memory", []) or []
        if _finite(m.get("peak_bytes") or m.get("rss_bytes"))
    ]
    metrics: dict[str, float] = {}
    for k, v in (
        ("trainLoss", conv.get("last_loss")),
        ("evalLoss", conv.get("final_eval_loss")),
        ("bestEvalLoss", conv.get("best_eval_loss")),
        ("teacherForcedCharAccuracy", zh.get("teacher_forced_char_accuracy")),
        ("teacherForcedTermAccuracy", zh.get("teacher_forced_term_accuracy")),
        ("termTokenAccuracy", zh.get("term_token_accuracy")),
        ("tokenAccuracy", zh.get("token_accuracy")),
        ("tokensPerSecond", round(sum(tps) / len(tps), 2) if tps else None),
    ):
        if _finite(v):
            metrics[k] = float(v)
    all_warnings = list(warnings or []) + [a["message"] for a in anomalies]
    oom_retries = oom_retries or []
    last_step = train[-1]["step"] if train else 0
    total = (plan or {}).get("total_steps") or (plan or {}).get("totalSteps")
    status = {
        "phase": outcome,
        "message": conv.get("verdict"),
        "progress": {
            "step": last_step,
            "totalSteps": total,
            "percent": round(100 * last_step / total, 2) if total else None,
            "loss": conv.get("last_loss"),
            "evalLoss": conv.get("final_eval_loss"),
            "summary": f"{last_step}/{total} ({100 * last_step / total:.0f}%)" if total else str(last_step),
        },
        "restarts": {"application": 0, "infrastructure": 0, "oom": len(oom_retries)},
        "plan": _plan_summary(plan),
        "adapterPath": adapter_path,
        "metrics": metrics,
        "reportPath": str(out / "report.json"),
    }
    report: dict[str, Any] = {
        "kind": "FineTuneJobReport",
        "job": job,
        "namespace": namespace,
        "created": datetime.now(UTC).isoformat(),
        "outcome": outcome,
        "output_dir": str(out),
        "adapter_path": adapter_path,
        "plan": plan,
        "convergence": conv,
        "chinese": zh,
        "metrics": metrics,
        "throughput": {
            "mean_tokens_per_second": metrics.get("tokensPerSecond"),
            "max_tokens_per_second": max(tps) if tps else None,
            "peak_memory_gib": round(max(peaks) / 2**30, 3) if peaks else None,
            "train_runtime_s": summary.get("train_runtime"),
        },
        "attempts": attempts or [],
        "oom_retries": oom_retries,
        "warnings": all_warnings,
        "anomalies": anomalies,
        "plots": plots,
        "status": status,
    }
    if extra:
        report.update(extra)
    if write:
        (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
        (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


# the planner's decisions the report shows, in this order (report.json's "plan" and report.md's "Plan")
PLAN_KEYS = (
    "strategy",
    "device",
    "precision",
    "method",
    "world_size",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "global_batch_size",
    "gradient_checkpointing",
    "liger_kernel",
    "lora_rank",
    "lora_alpha",
    "learning_rate",
    "cutoff_len",
    "total_steps",
)


def _plan_summary(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    if not plan:
        return None
    return {k: plan.get(k) for k in PLAN_KEYS if k in plan}


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def render_markdown(r: dict[str, Any]) -> str:
    c = r["convergence"]
    zh = r["chinese"]
    plan = r.get("plan") or {}
    lines = [
        f"# Training report: {r['job']}",
        "",
        f"Outcome: **{r['outcome']}** · output `{r['output_dir']}` · adapter `{r.get('adapter_path') or 'n/a'}`",
        "",
        "## Convergence",
        "",
        f"- verdict: **{c.get('verdict')}**",
        f"- training loss: {_fmt(c.get('first_loss'))} → {_fmt(c.get('last_loss'))} "
        f"(drop {_fmt(c.get('loss_drop'))}, {_fmt((c.get('loss_drop_ratio') or 0) * 100, 1)}%)",
        f"- validation loss: {_fmt(c.get('first_eval_loss'))} → {_fmt(c.get('final_eval_loss'))}; best "
        f"{_fmt(c.get('best_eval_loss'))} at step {c.get('best_eval_step', 'n/a')}",
        "",
    ]
    if "loss" in r["plots"]:
        lines += [f"![loss]({r['plots']['loss']})", ""]
    lines += [
        "## Chinese-specific metrics (validation, teacher-forced)",
        "",
        "| metric | first eval | final eval |",
        "|---|---|---|",
        f"| Chinese character accuracy | {_fmt(zh.get('teacher_forced_char_accuracy_first'))} | "
        f"{_fmt(zh.get('teacher_forced_char_accuracy'))} |",
        f"| glossary term accuracy (whole term right) | {_fmt(zh.get('teacher_forced_term_accuracy_first'))} | "
        f"{_fmt(zh.get('teacher_forced_term_accuracy'))} |",
        f"| glossary term token accuracy | {_fmt(zh.get('term_token_accuracy_first'))} | "
        f"{_fmt(zh.get('term_token_accuracy'))} |",
        f"| next-token accuracy | | {_fmt(zh.get('token_accuracy'))} |",
        "",
        f"{zh.get('cjk_chars') or 0} Chinese characters and {zh.get('term_occurrences') or 0} term occurrences "
        "scored.",
        "",
    ]
    terms = zh.get("terms") or {}
    if terms:
        lines += ["| term | occurrences | accuracy |", "|---|---|---|"]
        lines += [f"| {t} | {v['occurrences']} | {v['accuracy']:.2f} |" for t, v in list(terms.items())[:15]]
        lines.append("")
    if "teacher_forced_accuracy" in r["plots"]:
        lines += [f"![teacher-forced accuracy]({r['plots']['teacher_forced_accuracy']})", ""]
    lines += ["## Plan", ""]
    for k in PLAN_KEYS:
        if k in plan:
            lines.append(f"- {k}: `{plan[k]}`")
    if plan.get("explanations"):
        lines += ["", "Why:", ""] + [f"- {e}" for e in plan["explanations"]]
    lines.append("")
    lines += [
        "## Throughput and memory",
        "",
        f"- mean tokens/s: {_fmt(r['throughput'].get('mean_tokens_per_second'), 1)}; peak memory: "
        f"{_fmt(r['throughput'].get('peak_memory_gib'), 2)} GiB",
        "",
    ]
    for key, title in (("lr", "learning rate"), ("tokens_per_second", "tokens/s"), ("memory", "memory")):
        if key in r["plots"]:
            lines += [f"![{title}]({r['plots'][key]})", ""]
    lines += ["## Attempts and retries", ""]
    for a in r.get("attempts", []):
        lines.append(
            f"- attempt {a.get('attempt')}: {a.get('outcome')} (exit {a.get('returncode')}, "
            f"{_fmt(a.get('duration_s'), 0)} s){', resumed from ' + a['resumed_from'] if a.get('resumed_from') else ''}"
        )
    for o in r.get("oom_retries", []):
        lines.append(
            f"- OOM retry {o['attempt']} at step {o.get('at_step')}: micro-batch {o['from']['micro_batch']} → "
            f"{o['to']['micro_batch']}, accumulation {o['from']['grad_accum']} → {o['to']['grad_accum']}, "
            f"gradient checkpointing {'on' if o['to']['gradient_checkpointing'] else 'off'}"
        )
    if not r.get("attempts") and not r.get("oom_retries"):
        lines.append("- none")
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in r.get("warnings", [])] or ["- none"]
    lines.append("")
    return "\n".join(lines)
