"""Expert (human) review of generated answers.

Workflow:

1. ``export_review_sheet(predictions, "review.csv", reviewers=["alice", "bob"])`` writes one row per item and
   reviewer (CSV with a UTF-8 BOM so spreadsheet programs show Chinese correctly, or JSONL when the path ends in
   ``.jsonl``). Reviewers fill ``accuracy``, ``fluency`` and ``professionalism`` with integers 1-5 and may write a
   ``comment``. Rows left completely unscored count as pending, not as errors.
2. ``import_review_sheet("review.csv", threshold=3.0)`` validates every row (all errors at once, each naming its
   row number as a spreadsheet shows it: the header is row 1) and returns a summary: per-criterion means,
   per-item means, inter-reviewer agreement for items scored by several reviewers (exact and within-one
   agreement of pairs, mean absolute difference, Krippendorff's alpha (interval)), and the items whose mean on
   any criterion is below the threshold.

``write_review_summary(summary, out_dir)`` writes ``review_summary.json`` and ``review_summary.md``.

CLI wiring (owned by the CLI): ``thinktune review export PREDICTIONS.jsonl -o SHEET.csv [--reviewer NAME ...]``
and ``thinktune review import SHEET.csv [--threshold 3] [-o DIR]`` map one-to-one onto these functions.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

CRITERIA = ("accuracy", "fluency", "professionalism")
COLUMNS = (
    "item_id",
    "reviewer",
    "question",
    "reference_answer",
    "model_thinking",
    "model_answer",
    *CRITERIA,
    "comment",
)
SCORE_MIN, SCORE_MAX = 1, 5


class ReviewSheetError(ValueError):
    """A review sheet with invalid rows; ``errors`` lists them ("row N: ...")."""

    def __init__(self, path: str | Path, errors: list[str]):
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(
            f"{path}: {len(errors)} invalid row(s) (scores must be integers {SCORE_MIN}-{SCORE_MAX}; "
            f"leave all three empty for an item not reviewed yet):\n{shown}{more}"
        )


def _load_predictions(predictions: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(predictions, (str, Path)):
        lines = Path(predictions).read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    return list(predictions)


def _split(pred: dict[str, Any]) -> tuple[str, str]:
    if "predictionAnswer" in pred:
        return pred.get("predictionThinking", ""), pred["predictionAnswer"]
    from thinktune.evaluate.metrics import split_thinking

    think, ans, _ = split_thinking(pred.get("prediction", pred.get("predict", "")))
    return think, ans


def export_review_sheet(
    predictions: str | Path | Iterable[dict[str, Any]],
    out_path: str | Path,
    *,
    reviewers: Sequence[str] = ("",),
) -> Path:
    """Write a review sheet for ``predictions`` (predictions.jsonl of an evaluation, or its records). One row per
    item and reviewer; score columns empty. CSV (UTF-8 with BOM) or JSONL by file suffix."""
    from thinktune.evaluate.metrics import split_thinking

    preds = _load_predictions(predictions)
    rows = []
    for i, p in enumerate(preds):
        _, ref_answer, _ = split_thinking(p.get("reference", p.get("label", "")))
        think, ans = _split(p)
        for reviewer in reviewers or ("",):
            rows.append(
                {
                    "item_id": str(p.get("id", i)),
                    "reviewer": reviewer,
                    "question": p.get("question", p.get("prompt", "")),
                    "reference_answer": ref_answer,
                    "model_thinking": think,
                    "model_answer": ans,
                    **{c: "" for c in CRITERIA},
                    "comment": "",
                }
            )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with out.open("w", encoding="utf-8-sig", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    return out


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number as a spreadsheet shows it / line number for JSONL, record)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # Excel on Chinese Windows saves CSV as GBK
        try:
            text = raw.decode("gb18030")
        except UnicodeDecodeError:
            raise ReviewSheetError(
                path, ["row 1: the file is neither UTF-8 nor GBK/GB18030 text; save it as CSV UTF-8"]
            ) from None
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ReviewSheetError(path, [f"row {n}: not valid JSON ({e.msg})"]) from None
        return out
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("item_id", *CRITERIA) if c not in (reader.fieldnames or [])]
    if missing:
        raise ReviewSheetError(path, [f"row 1: header lacks column(s) {', '.join(missing)}"])
    # DictReader's line_num counts physical lines (multi-line cells); count records instead: header = row 1
    return [(n, rec) for n, rec in enumerate(reader, 2)]


def _parse_score(value: Any) -> int | None | str:
    """int score, None for empty, or an error string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return f"{value!r} is not a number"
    if isinstance(value, (int, float)):
        num = float(value)
    else:
        try:
            num = float(str(value).strip())
        except ValueError:
            return f"{str(value)!r} is not a number"
    if num != int(num):
        return f"{value} is not a whole number"
    if not SCORE_MIN <= num <= SCORE_MAX:
        return f"{int(num)} is outside {SCORE_MIN}-{SCORE_MAX}"
    return int(num)


def _alpha_interval(units: dict[str, list[float]]) -> float | None:
    """Krippendorff's alpha, interval metric, for units (items) with >= 2 values."""
    units = {k: v for k, v in units.items() if len(v) >= 2}
    values = [x for v in units.values() for x in v]
    n = len(values)
    if n < 2 or len(units) < 1:
        return None
    d_o = sum(sum((a - b) ** 2 for a, b in combinations(v, 2)) * 2 / (len(v) - 1) for v in units.values()) / n
    d_e = sum((a - b) ** 2 for a, b in combinations(values, 2)) * 2 / (n * (n - 1))
    if d_e == 0:
        return 1.0 if d_o == 0 else None
    return 1 - d_o / d_e


def import_review_sheet(path: str | Path, *, threshold: float = 3.0) -> dict[str, Any]:
    """Validate and summarise a filled review sheet. Raises ReviewSheetError listing every bad row."""
    path = Path(path)
    errors: list[str] = []
    scored: list[dict[str, Any]] = []
    pending = 0
    seen: dict[tuple[str, str], int] = {}
    for rownum, rec in _read_rows(path):
        item = str(rec.get("item_id", "") or "").strip()
        reviewer = str(rec.get("reviewer", "") or "").strip()
        if not item:
            errors.append(f"row {rownum}: item_id is empty")
            continue
        parsed = {c: _parse_score(rec.get(c)) for c in CRITERIA}
        bad = [f"{c} {v}" for c, v in parsed.items() if isinstance(v, str)]
        if bad:
            errors.append(f"row {rownum} (item {item}): " + "; ".join(bad))
            continue
        empty = [c for c, v in parsed.items() if v is None]
        if len(empty) == len(CRITERIA):
            pending += 1
            continue
        if empty:
            errors.append(f"row {rownum} (item {item}): {', '.join(empty)} missing (score all three or none)")
            continue
        key = (item, reviewer)
        if key in seen:
            errors.append(
                f"row {rownum} (item {item}): reviewer {reviewer or '(blank)'} already scored this item "
                f"in row {seen[key]}"
            )
            continue
        seen[key] = rownum
        scored.append(
            {
                "row": rownum,
                "item_id": item,
                "reviewer": reviewer,
                **parsed,
                "comment": str(rec.get("comment", "") or "").strip(),
            }
        )
    if errors:
        raise ReviewSheetError(path, errors)

    by_item: dict[str, list[dict[str, Any]]] = {}
    for r in scored:
        by_item.setdefault(r["item_id"], []).append(r)
    items = []
    for item, rows in by_item.items():
        means = {c: sum(r[c] for r in rows) / len(rows) for c in CRITERIA}
        low = [c for c in CRITERIA if means[c] < threshold]
        items.append(
            {
                "item_id": item,
                "reviewers": [r["reviewer"] for r in rows],
                **means,
                "overall": sum(means.values()) / len(CRITERIA),
                "flagged": bool(low),
                "below": low,
                "comments": [r["comment"] for r in rows if r["comment"]],
            }
        )
    agreement: dict[str, Any] = {}
    multi = {k: v for k, v in by_item.items() if len(v) >= 2}
    for c in CRITERIA:
        pairs = [(a[c], b[c]) for rows in multi.values() for a, b in combinations(rows, 2)]
        agreement[c] = {
            "items": len(multi),
            "pairs": len(pairs),
            "exact": sum(1 for a, b in pairs if a == b) / len(pairs) if pairs else None,
            "withinOne": sum(1 for a, b in pairs if abs(a - b) <= 1) / len(pairs) if pairs else None,
            "meanAbsDiff": sum(abs(a - b) for a, b in pairs) / len(pairs) if pairs else None,
            "krippendorffAlpha": _alpha_interval({k: [float(r[c]) for r in v] for k, v in multi.items()}),
        }
    means = {c: (sum(r[c] for r in scored) / len(scored) if scored else None) for c in CRITERIA}
    return {
        "sheet": str(path),
        "threshold": threshold,
        "rows": len(scored),
        "pending": pending,
        "items": len(by_item),
        "reviewers": sorted({r["reviewer"] for r in scored}),
        "means": means,
        "itemMeans": {c: (sum(i[c] for i in items) / len(items) if items else None) for c in CRITERIA},
        "agreement": agreement,
        "flagged": [i for i in items if i["flagged"]],
        "perItem": items,
    }


def write_review_summary(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """review_summary.json + review_summary.md in out_dir; returns the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "review_summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
    )

    def f(v):
        return "–" if v is None else f"{v:.2f}"

    lines = [
        "# Expert review",
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
    if summary["flagged"]:
        lines += [
            "",
            f"## Items below {summary['threshold']:g}",
            "",
            "| item | accuracy | fluency | professionalism | comments |",
            "|---|---|---|---|---|",
        ]
        for i in summary["flagged"]:
            lines.append(
                f"| {i['item_id']} | {f(i['accuracy'])} | {f(i['fluency'])} | {f(i['professionalism'])} | "
                f"{' / '.join(i['comments'])} |"
            )
    md = out / "review_summary.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md
