"""The evaluation report: ``eval_report.json`` (the data), ``eval_report.md`` and ``eval_report.html`` (the same
text; the HTML carries its plots inline, so the one file can be mailed or attached to a ticket).

It shows the metrics per part, the fine-tuned model against the base model on the same test samples (when
evaluation generated base answers), the best, worst and typical examples in full (question, reference, thinking,
answer; both models side by side), and the expert review once ``thinktune review import`` has added it.
The report dict is built by ``thinktune.evaluate.run``; this module only renders it.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path
from typing import Any

REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
REPORT_HTML = "eval_report.html"
CHART = "eval_metrics.png"
CHART_BASE = "eval_base_vs_finetuned.png"

_METRICS = ("bleu", "rougeL", "charAccuracy", "termAccuracy", "conceptAccuracy")
_LABELS = ("BLEU/100", "ROUGE-L", "char acc", "term acc", "concept acc")


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# ------------------------------------------------------------------------------------------------------------
# Examples


def _decoding_line(gen: dict[str, Any]) -> str:
    """How the answers were generated, e.g. `sampled (temperature 0.6, top_p 0.95, top_k 20, seed 0)`."""
    if gen.get("decoding", "greedy") == "greedy":
        return "greedy"
    return (
        f"sampled (temperature {gen.get('temperature')}, top_p {gen.get('top_p')}, top_k {gen.get('top_k')}, "
        f"seed {gen.get('seed')})"
    )


def example_score(scores: dict[str, Any]) -> float:
    """One number to rank a sample by: the mean of the answer's ROUGE-L and character accuracy and the full
    text's term accuracy (a missing term accuracy, no glossary term in the reference, counts as 0)."""
    a, full = scores.get("answer", {}), scores.get("full", {})
    vals = [a.get("rougeL"), a.get("charAccuracy"), full.get("termAccuracy")]
    return sum(v or 0.0 for v in vals) / len(vals)


def pick_examples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best, worst and typical (median) records of predictions.jsonl by :func:`example_score`, each at most
    once (fewer when there are fewer than three samples), as {"label", "score", **record}. Drawn from the
    samples the base model answered too when there are any, so every example shows both models."""
    pool = [r for r in records if "base" in r] or records
    ranked = sorted(range(len(pool)), key=lambda i: (example_score(pool[i]["scores"]), -i))
    picks: list[tuple[str, int]] = []
    for label, idx in (("best", -1), ("worst", 0), ("typical", len(ranked) // 2)):
        if ranked and ranked[idx] not in {i for _, i in picks}:
            picks.append((label, ranked[idx]))
    return [{"label": label, "score": example_score(pool[i]["scores"]), **pool[i]} for label, i in picks]


def _cell(text: str) -> str:
    """Model text as one Markdown table cell: HTML-escaped (model output is untrusted: the HTML report renders
    raw HTML), line breaks as <br>, pipes escaped."""
    return escape(text or "").replace("|", "&#124;").replace("\n", "<br>") or "*(empty)*"


def _collapsed(summary: str, text: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{_cell(text)}</details>"


def _example_lines(ex: dict[str, Any]) -> list[str]:
    from thinktune.evaluate.metrics import split_thinking

    ref_think, ref_answer, _ = split_thinking(ex["reference"])
    base = ex.get("base")
    models = [("fine-tuned", ex)] + ([("base", base)] if base else [])
    header = "| | " + " | ".join(name for name, _ in models) + " |"
    rows = [header, "|---" * (len(models) + 1) + "|"]
    rows.append(
        "| thinking | "
        + " | ".join(
            _collapsed(f"{len(m['predictionThinking'])} characters", m["predictionThinking"])
            for _, m in models
        )
        + " |"
    )
    rows.append("| answer | " + " | ".join(_cell(m["predictionAnswer"]) for _, m in models) + " |")
    rows.append(
        "| ROUGE-L / char acc / term acc | "
        + " | ".join(
            " / ".join(
                fmt(v, 2)
                for v in (
                    m["scores"]["answer"]["rougeL"],
                    m["scores"]["answer"]["charAccuracy"],
                    m["scores"]["full"]["termAccuracy"],
                )
            )
            for _, m in models
        )
        + " |"
    )
    rows.append(
        "| stopped | "
        + " | ".join(
            f"{m['newTokens']} new tokens" + (", hit the limit" if m["hitLimit"] else "") for _, m in models
        )
        + " |"
    )
    return [
        f"### {ex['label'].capitalize()} (score {fmt(ex['score'], 2)}): `{ex['id']}`",
        "",
        f"**Question.** {_cell(ex['question'])}",
        "",
        f"**Reference answer.** {_cell(ref_answer)}",
        "",
        _collapsed(f"Reference thinking ({len(ref_think)} characters)", ref_think),
        "",
        *rows,
        "",
    ]


# ------------------------------------------------------------------------------------------------------------
# Charts


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _bar_values(metrics: dict[str, Any], part: str) -> list[float]:
    vals = []
    for n in _METRICS:
        v = metrics.get(part, {}).get(n)
        vals.append(0.0 if v is None else (v / 100 if n == "bleu" else v))
    return vals


def write_chart(metrics: dict[str, Any], path: Path) -> Path | None:
    """Grouped bar chart of the 0..1 metrics per part (BLEU scaled to 0..1). None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.25
    for i, part in enumerate(("answer", "thinking", "full")):
        ax.bar([x + i * width for x in range(len(_METRICS))], _bar_values(metrics, part), width, label=part)
    ax.set_xticks([x + width for x in range(len(_METRICS))], _LABELS)
    ax.set_ylim(0, 1)
    ax.set_title(f"Evaluation (thinking compliance {fmt(metrics.get('thinkingCompliance'), 2)})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_base_chart(comparison: dict[str, Any], path: Path) -> Path | None:
    """Answer metrics and thinking compliance, base vs fine-tuned on the same samples."""
    plt = _pyplot()
    if plt is None:
        return None
    labels = [*_LABELS, "compliance"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for i, who in enumerate(("base", "finetuned")):
        m = comparison[who]
        vals = [*_bar_values(m, "answer"), m.get("thinkingCompliance") or 0.0]
        ax.bar([x + i * width for x in range(len(labels))], vals, width, label=who)
    ax.set_xticks([x + width / 2 for x in range(len(labels))], labels)
    ax.set_ylim(0, 1)
    ax.set_title(f"Answer metrics, base vs fine-tuned ({comparison['samples']} test samples)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------------
# Markdown and HTML


def markdown_lines(report: dict[str, Any]) -> list[str]:
    m = report["metrics"]
    ppl = m.get("perplexity", {})
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{report['model']}`"
        + (f" + adapter `{report['adapter']}`" if report.get("adapter") else ""),
        f"- test file: `{report['testFile']}` ({report['samples']} samples)",
        f"- generation: {_decoding_line(report['generation'])}, maxNewTokens "
        f"{report['generation']['maxNewTokens']}, prompt "
        f"{'pre-fills <think>' if report['generation']['prefill'] else 'without pre-fill'}",
        f"- finished: {report['finished']} ({report['seconds']:.0f} s)",
        "",
        "## Perplexity (assistant turn only)",
        "",
        "| full | thinking | answer | tokens |",
        "|---|---|---|---|",
        f"| {fmt(ppl.get('full'))} | {fmt(ppl.get('thinking'))} | {fmt(ppl.get('answer'))} | {ppl.get('tokens')} |",
        "",
        "## Generation metrics",
        "",
        "| part | BLEU | corpus BLEU | ROUGE-L | char acc | term acc | concept acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in ("answer", "thinking", "full"):
        p = m.get(part, {})
        lines.append(
            f"| {part} | {fmt(p.get('bleu'), 1)} | {fmt(p.get('corpusBleu'), 1)} | {fmt(p.get('rougeL'))} "
            f"| {fmt(p.get('charAccuracy'))} | {fmt(p.get('termAccuracy'))} | "
            f"{fmt(p.get('conceptAccuracy'))} |"
        )
    lines += [
        "",
        f"Thinking-format compliance (`</think>` + non-empty answer): "
        f"**{fmt(m.get('thinkingCompliance'), 2)}**; generations that hit the token limit: "
        f"{report['generation']['hitLimit']}",
        "",
    ]
    if report.get("chart"):
        lines += [f"![metrics]({Path(report['chart']).name})", ""]
    cmp_ = report.get("baseComparison")
    if cmp_:
        lines += [
            "## Base vs fine-tuned",
            "",
            f"The base model (`{report['model']}` without the adapter) answered the first {cmp_['samples']} test "
            "questions with the same prompt and settings; both columns are over those samples.",
            "",
            "| metric | base | fine-tuned |",
            "|---|---|---|",
            f"| perplexity (full) | {fmt(cmp_['base'].get('perplexity', {}).get('full'))} | "
            f"{fmt(cmp_['finetuned'].get('perplexity', {}).get('full'))} |",
        ]
        for name, label in zip(_METRICS, _LABELS, strict=True):
            digits = 1 if name == "bleu" else 3
            lines.append(
                f"| answer {label.replace('/100', '')} | {fmt(cmp_['base']['answer'].get(name), digits)} | "
                f"{fmt(cmp_['finetuned']['answer'].get(name), digits)} |"
            )
        lines += [
            f"| thinking compliance | {fmt(cmp_['base'].get('thinkingCompliance'), 2)} | "
            f"{fmt(cmp_['finetuned'].get('thinkingCompliance'), 2)} |",
            f"| hit the token limit | {cmp_['baseHitLimit']}/{cmp_['samples']} | "
            f"{cmp_['finetunedHitLimit']}/{cmp_['samples']} |",
            "",
        ]
        if cmp_.get("chart"):
            lines += [f"![base vs fine-tuned]({Path(cmp_['chart']).name})", ""]
    if report.get("failedChecks"):
        lines += ["## Below threshold", "", "| metric | value | threshold |", "|---|---|---|"]
        lines += [
            f"| {f['metric']} | {fmt(f['value'])} | {'≤' if f['direction'] == 'max' else '≥'} "
            f"{fmt(f['threshold'])} |"
            for f in report["failedChecks"]
        ]
        lines.append("")
    if report.get("recommendations"):
        lines += ["## Recommendations", ""] + [f"- {r}" for r in report["recommendations"]] + [""]
    if report.get("examples"):
        lines += [
            "## Examples",
            "",
            "Best, worst and typical (median) test samples by the mean of answer ROUGE-L, answer character "
            "accuracy and term accuracy"
            + (", among those the base model answered too" if report.get("baseComparison") else "")
            + f"; every sample is in `{Path(report['predictions']).name}`."
            + (
                " All samples score the same, so best and worst say nothing here."
                if len({round(e["score"], 6) for e in report["examples"]}) == 1
                and len(report["examples"]) > 1
                else ""
            ),
            "",
        ]
        for ex in report["examples"]:
            lines += _example_lines(ex)
    if report.get("review"):
        from thinktune.evaluate.review_summary import review_markdown

        lines += [*review_markdown(report["review"], level=2), ""]
    if report.get("perTerm"):
        lines += [
            "## Terms (answer part, weakest first)",
            "",
            "| term | in references | in predictions | accuracy |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['term']} | {r['references']} | {r['hits']} | {fmt(r['accuracy'], 2)} |"
            for r in report["perTerm"]
        ]
        lines.append("")
    return lines


_CSS = """
body { font-family: system-ui, "Noto Sans CJK SC", "PingFang SC", sans-serif; max-width: 78rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #1d2330; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccd3de; padding: .3rem .6rem; vertical-align: top; text-align: left; }
th { background: #eef2f7; }
td { max-width: 36rem; }
summary { cursor: pointer; color: #3558a8; }
img { max-width: 100%; }
code { background: #eef2f7; padding: 0 .2rem; }
"""


def _inline_images(html: str, base_dir: Path) -> str:
    """<img src="x.png"> of files next to the report become data: URIs, so the HTML stands alone."""

    def repl(m: re.Match) -> str:
        f = base_dir / m.group(1)
        if not f.is_file():
            return m.group(0)
        data = base64.b64encode(f.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([^":/]+\.png)"', repl, html)


def render_html(markdown: str, base_dir: Path) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # base install (no trainer extra): still a readable page, and it says why it is plain
        body = (
            "<p>markdown-it-py is not installed (trainer extra), so this is the Markdown report as text.</p>"
            f"<pre>{escape(markdown)}</pre>"
        )
    else:
        body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html lang="zh"><head><meta charset="utf-8"><title>Evaluation report</title>'
        f"<style>{_CSS}</style></head><body>\n{_inline_images(body, base_dir)}</body></html>\n"
    )


def write_reports(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """eval_report.json, .md and .html in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / REPORT_JSON, "md": out_dir / REPORT_MD, "html": out_dir / REPORT_HTML}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    md = "\n".join(markdown_lines(report))
    paths["md"].write_text(md, encoding="utf-8")
    paths["html"].write_text(render_html(md, out_dir), encoding="utf-8")
    return paths
