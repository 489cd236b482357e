"""The expert review's criteria and rubric, and the summary rendered as Markdown.

Kept apart from thinktune.evaluate.review (sheets, the SQLite store, aggregation) so the evaluation report
(thinktune.evaluate.report) can render a review without importing the code that writes reports.
"""

from __future__ import annotations

from typing import Any

CRITERIA = ("accuracy", "fluency", "professionalism")
# Domain-accuracy rubric: yes/no checks a cryptography expert answers per answer (bilingual: reviewers are
# Chinese-speaking, the project's docs are English). The pass rate per check is reported per model.
RUBRIC = (
    ("terms", "术语使用正确 · terms used correctly (SM2/SM3/SM4, 分组密码, 消息认证码 …)"),
    ("facts", "事实与参数正确 · facts and parameters right (key, block, digest sizes; GM/T, NIST standards)"),
    ("secure", "无不安全建议 · no insecure advice (ECB, MD5/SHA-1 signatures, hard-coded keys, nonce reuse)"),
    ("consistent", "思考支持结论 · the reasoning supports the answer"),
)
RUBRIC_KEYS = tuple(k for k, _ in RUBRIC)


def review_markdown(summary: dict[str, Any], *, level: int = 1) -> list[str]:
    """The summary as Markdown lines (``level``: heading level of its title; the evaluation report embeds it
    one level down)."""

    def f(v):
        return "–" if v is None else f"{v:.2f}"

    h = "#" * level
    lines = [
        f"{h} Expert review",
        "",
        f"{summary['items']} items, {summary['rows']} scored rows, "
        f"{summary['pending']} pending; reviewers: {', '.join(r or '(blank)' for r in summary['reviewers'])}",
        "",
        "| criterion | mean | exact agreement | within one | Krippendorff α |",
        "|---|---|---|---|---|",
    ]
    for c in CRITERIA:
        a = summary["agreement"][c]
        lines.append(
            f"| {c} | {f(summary['means'][c])} | {f(a['exact'])} | {f(a['withinOne'])} | "
            f"{f(a['krippendorffAlpha'])} |"
        )
    by_model = summary.get("byModel") or {}
    if "base" in by_model:
        lines += ["", f"{h}# Fine-tuned vs base (blind)", "", "| | " + " | ".join(by_model) + " |"]
        lines.append("|---" * (len(by_model) + 1) + "|")
        for c in CRITERIA:
            lines.append(f"| {c} | " + " | ".join(f(m["means"][c]) for m in by_model.values()) + " |")
        for k, label in RUBRIC:
            lines.append(
                f"| rubric: {label} | "
                + " | ".join(f(m["rubric"][k]["rate"]) for m in by_model.values())
                + " |"
            )
    pref = summary.get("preference") or {}
    if pref.get("votes"):
        lines += [
            "",
            f"A/B preference over {pref['items']} items ({pref['votes']} votes): fine-tuned {pref['finetuned']}, "
            f"base {pref['base']}, tie {pref['tie']}; fine-tuned win rate **{f(pref['finetunedWinRate'])}** "
            "(ties count half).",
        ]
    if summary["flagged"]:
        lines += [
            "",
            f"{h}# Items below {summary['threshold']:g}",
            "",
            "| item | accuracy | fluency | professionalism | comments |",
            "|---|---|---|---|---|",
        ]
        for i in summary["flagged"]:
            lines.append(
                f"| {i['item_id']} | {f(i['accuracy'])} | {f(i['fluency'])} | {f(i['professionalism'])} | "
                f"{' / '.join(i['comments'])} |"
            )
    return lines
