"""Output files: LLaMA Factory dataset_info.json + train/val/test.json, rejects.jsonl, report.json, report.md.

dataset_info.json uses ``formatting: sharegpt`` with OpenAI-style role/content tags and the system prompt as
the first message (``system_tag: system``); LLaMA Factory 0.9.5's SharegptDatasetConverter takes a leading
system message as the system prompt. Extra metadata columns in the rows (type, terms, source, ...) are dropped
by LLaMA Factory's ``align_dataset`` (it maps with ``remove_columns`` = all original columns).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thinktune.data.leakage import MEASURES as LEAK_MEASURES
from thinktune.data.split import SPLITS


def dataset_info(name: str) -> dict[str, Any]:
    entry = {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
    return {f"{name}_{s}": {"file_name": f"{s}.json", **entry} for s in SPLITS}


def write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")
    tmp.replace(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def plots(out: Path, report: dict) -> list[str]:
    """PNG plots for report.md (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []
    # 1. samples per type and split
    types = list(report["per_type"].keys())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0] * len(types)
    for s in SPLITS:
        vals = [report["per_type"][t].get(s, 0) for t in types]
        ax.bar(types, vals, bottom=bottom, label=s)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("samples")
    ax.set_title("Samples per type and split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "samples_per_type.png", dpi=90)
    plt.close(fig)
    files.append("samples_per_type.png")
    # 2. token-length histogram
    lengths = report["token_lengths"].get("values", [])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if lengths:
        ax.hist(lengths, bins=min(40, max(5, len(lengths) // 5)), color="#4c72b0")
    cutoff = report["token_lengths"].get("cutoff_len")
    if cutoff:
        ax.axvline(cutoff, color="red", linestyle="--", label=f"cutoff_len={cutoff}")
        ax.legend()
    ax.set_xlabel("tokens per sample (qwen3 chat format)")
    ax.set_ylabel("samples")
    ax.set_title("Token-length distribution")
    fig.tight_layout()
    fig.savefig(out / "token_lengths.png", dpi=90)
    plt.close(fig)
    files.append("token_lengths.png")
    # 3. term coverage per split
    cov = report["term_coverage"]["per_split"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(cov.keys()), [cov[s]["terms"] for s in cov], color=["#4c72b0", "#dd8452", "#55a868"])
    ax.axhline(
        report["term_coverage"]["terms_total"], color="gray", linestyle=":", label="distinct terms (all)"
    )
    ax.set_ylabel("distinct glossary terms")
    ax.set_title("Term coverage per split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "term_coverage.png", dpi=90)
    plt.close(fig)
    files.append("term_coverage.png")
    return files


def report_markdown(report: dict, images: list[str]) -> str:
    c = report["counts"]
    tl = report["token_lengths"]
    th = report["thinking"]
    lines = [
        f"# Dataset report: {report['dataset_name']}",
        "",
        f"Built from `{report['input_dir']}` ({c['documents']} documents, {report['bytes']} bytes) into "
        f"`{report['output_dir']}` in {report['timing']['total_s']:.2f} s.",
        "",
        "| documents | samples | train | val | test | rejects | duplicates | generated thinking | warnings |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {c['documents']} | {c['samples']} | {c['train']} | {c['val']} | {c['test']} | {c['rejects']} | "
        f"{c['duplicates']} | {c['generated_thinking']} | {c['warnings']} |",
        "",
        "## Samples per type",
        "",
        "| type | train | val | test | total |",
        "|---|---|---|---|---|",
    ]
    for t, row in report["per_type"].items():
        lines.append(
            f"| {t} | {row.get('train', 0)} | {row.get('val', 0)} | {row.get('test', 0)} | {row.get('total', 0)} |"
        )
    lines += [
        "",
        "![samples per type](samples_per_type.png)",
        "",
        *_split_markdown(report),
        "## Token lengths",
        "",
        f"Tokenizer `{tl.get('tokenizer')}`, cutoff_len {tl.get('cutoff_len')}: min {tl.get('min')}, p50 "
        f"{tl.get('p50')}, p90 {tl.get('p90')}, p99 {tl.get('p99')}, max {tl.get('max')}. Samples over the "
        f"cutoff are rejected (never truncated): {tl.get('over_cutoff', 0)}.",
        "",
        "![token lengths](token_lengths.png)",
        "",
        "## Terms",
        "",
        f"{report['term_coverage']['terms_total']} distinct glossary terms; "
        f"{report['term_coverage']['in_all_splits']} appear in every split.",
        "",
        "| split | distinct terms | share of all terms |",
        "|---|---|---|",
    ]
    for s, v in report["term_coverage"]["per_split"].items():
        lines.append(f"| {s} | {v['terms']} | {v['coverage']:.0%} |")
    lines += [
        "",
        "![term coverage](term_coverage.png)",
        "",
        "## Thinking",
        "",
        f"From the documents: {th['source']} samples ({th['blocks']} blocks, max nesting depth "
        f"{th['max_depth']}); generated: {th['generated']} (template {th['template']}, model {th['model']}). "
        f"Mean quality {th['quality_mean']}, {th['below_min_quality']} below minQuality {th['min_quality']}.",
        "",
        f"Share of samples with the author's thinking: {th.get('author_share', 0):.1%}; generated: "
        f"{th.get('generated_share', 0):.1%} (mean restatement of the answer {th.get('restatement_mean')}, "
        f"mean grounding in the source {th.get('grounding_mean')}); generated thinking rejected by the "
        f"quality gate: {th.get('rejected_by_quality_gate', 0)}. Rejects by reason below.",
        "",
    ]
    if report["rejects_by_reason"]:
        lines += ["## Rejects", "", "| reason | count |", "|---|---|"]
        for r, n in sorted(report["rejects_by_reason"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {r} | {n} |")
        lines += ["", "Details (file, line, fix) in `rejects.jsonl`.", ""]
    if report["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"][:200]] + [""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"][:200]]
        if len(report["warnings"]) > 200:
            lines.append(f"- … {len(report['warnings']) - 200} more in report.json")
        lines.append("")
    return "\n".join(lines)


def _split_markdown(report: dict) -> list[str]:
    """How the split was drawn and how much val/test overlap train (data/leakage.py defines the measures)."""
    sp, leak = report.get("split"), report.get("leakage")
    if not sp or not leak:
        return []
    fr = sp["fractions"]
    lines = [
        "## Split and leakage",
        "",
        f"Split by {sp['by']}: realised fractions train {fr['train']:.1%}, val {fr['val']:.1%}, test "
        f"{fr['test']:.1%}; documents per split "
        + ", ".join(f"{s} {n}" for s, n in sp["documents"].items())
        + ".",
        "",
        "| split | samples | from a training document | sharing a "
        f"{next(iter(leak.values()))['ngram']}-gram with train | ≥ half the answer paragraphs verbatim in train |",
        "|---|---|---|---|---|",
    ]
    for s, v in leak.items():
        cells = [f"{v[k]['count']} ({v[k]['share']:.0%})" for k in LEAK_MEASURES]
        lines.append(f"| {s} | {v['samples']} | " + " | ".join(cells) + " |")
    lines += ["", "Sample ids of each case (first few) in `report.json` under `leakage`.", ""]
    return lines
