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

   A review store (``review.sqlite``, written by the review page of ``thinktune.evaluate.review_server``) is
   read the same way: there an answer scored on only some criteria counts as pending (the reviewer is still
   at it), and the store adds what a sheet cannot hold: the domain rubric, the blind A/B preference between the
   fine-tuned and the base model's answer, and the base model's scores.
3. ``export_review_sheet(predictions, "tasks.json")`` writes Label Studio tasks (one per item and model) and
   ``tasks.label_config.xml``, the labeling interface with the same criteria, rubric and comment.

``write_review_summary(summary, out_dir)`` writes ``review_summary.json`` and ``review_summary.md``, and when
``out_dir`` holds an evaluation report (``eval_report.json``) adds the summary to it and renders it again.

CLI wiring (owned by the CLI): ``thinktune review export PREDICTIONS.jsonl -o SHEET.csv [--reviewer NAME ...]``,
``thinktune review serve PREDICTIONS.jsonl`` and ``thinktune review import SHEET.csv|review.sqlite [--threshold
3] [-o DIR]`` map one-to-one onto these functions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from itertools import combinations
from pathlib import Path
from typing import Any

# the review's shape and its rendering live in review_summary (the evaluation report renders it too)
from thinktune.evaluate.review_summary import CRITERIA, RUBRIC, RUBRIC_KEYS, review_markdown

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
# The two answers an item can have: the fine-tuned model's (predictions.jsonl "prediction") and the base model's
# on the same question ("base", written when evaluation.baseSamples > 0). Sheets without a model column are the
# fine-tuned model's.
MODELS = ("finetuned", "base")
PREFERENCES = ("finetuned", "base", "tie")
RUBRIC_VALUES = ("yes", "no")
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
MAX_COMMENT = 20_000


class ReviewSheetError(ValueError):
    """A review sheet with invalid rows; ``errors`` lists them ("row N: ...")."""

    def __init__(self, path: str | Path, errors: list[str], *, message: str | None = None):
        self.errors = errors
        shown = "\n".join(f"  {e}" for e in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(
            message
            or f"{path}: {len(errors)} invalid row(s) (scores must be integers {SCORE_MIN}-{SCORE_MAX}; "
            f"leave all three empty for an item not reviewed yet):\n{shown}{more}"
        )

    @classmethod
    def missing(cls, path: str | Path) -> ReviewSheetError:
        message = (
            f"{path} does not exist: pass a sheet written by `thinktune review export` or the review.sqlite "
            "that `thinktune review serve` writes"
        )
        return cls(path, [f"{path} does not exist"], message=message)


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


def review_items(predictions: str | Path | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a reviewer sees per item: id, question, reference thinking/answer, and per model (MODELS) the
    thinking and the answer. The one reading of predictions.jsonl for sheets, Label Studio and the page."""
    from thinktune.evaluate.metrics import split_thinking

    items = []
    for i, p in enumerate(_load_predictions(predictions)):
        ref_think, ref_answer, _ = split_thinking(p.get("reference", p.get("label", "")))
        think, ans = _split(p)
        answers = {"finetuned": {"thinking": think, "answer": ans}}
        if isinstance(p.get("base"), dict):
            b_think, b_ans = _split(p["base"])
            answers["base"] = {"thinking": b_think, "answer": b_ans}
        items.append(
            {
                "id": str(p.get("id", i)),
                "question": p.get("question", p.get("prompt", "")),
                "referenceThinking": ref_think,
                "referenceAnswer": ref_answer,
                "answers": answers,
            }
        )
    return items


def blind_order(item_id: str, reviewer: str, models: Sequence[str]) -> list[str]:
    """The models in the order answers A, B, ... are shown to ``reviewer`` for ``item_id``: a hash, so it is the
    same on every reload and differs between items and reviewers (no position bias, nothing to learn)."""
    models = list(models)
    if len(models) > 1 and hashlib.sha256(f"{reviewer}\0{item_id}".encode()).digest()[0] % 2:
        models.reverse()
    return models


def label_studio_config() -> str:
    """Label Studio labeling interface for the tasks of :func:`export_label_studio`: the same 1-5 criteria,
    rubric checks and comment as the review page."""
    ratings = "\n".join(
        f'  <Header value="{c}"/>\n  <Rating name="{c}" toName="answer" maxRating="{SCORE_MAX}" required="true"/>'
        for c in CRITERIA
    )
    rubric = "\n".join(
        f'  <Choices name="rubric_{k}" toName="answer" choice="single" showInline="true">\n'
        f'    <Header value="{escape(label)}"/>\n    <Choice value="yes"/>\n    <Choice value="no"/>\n  </Choices>'
        for k, label in RUBRIC
    )
    return f"""<View>
  <Header value="Question"/>
  <Text name="question" value="$question"/>
  <Header value="Reference answer"/>
  <Text name="reference" value="$reference_answer"/>
  <Collapse>
    <Panel value="Model thinking">
      <Text name="thinking" value="$model_thinking"/>
    </Panel>
  </Collapse>
  <Header value="Model answer"/>
  <Text name="answer" value="$model_answer"/>
{ratings}
{rubric}
  <TextArea name="comment" toName="answer" placeholder="comment" rows="3"/>
</View>
"""


def export_label_studio(predictions: str | Path | Iterable[dict[str, Any]], out_path: str | Path) -> Path:
    """Label Studio tasks JSON (one task per item and model; the model sits in ``meta``, which the labeling
    interface does not show) and ``<name>.label_config.xml`` beside it."""
    tasks = []
    for item in review_items(predictions):
        for model, ans in item["answers"].items():
            tasks.append(
                {
                    "data": {
                        "item_id": item["id"],
                        "question": item["question"],
                        "reference_answer": item["referenceAnswer"],
                        "model_thinking": ans["thinking"],
                        "model_answer": ans["answer"],
                    },
                    "meta": {"model": model},
                }
            )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    out.with_suffix(".label_config.xml").write_text(label_studio_config(), encoding="utf-8")
    return out


def export_review_sheet(
    predictions: str | Path | Iterable[dict[str, Any]],
    out_path: str | Path,
    *,
    reviewers: Sequence[str] = ("",),
) -> Path:
    """Write a review sheet for ``predictions`` (predictions.jsonl of an evaluation, or its records). One row per
    item and reviewer (the fine-tuned model's answers); score columns empty. CSV (UTF-8 with BOM) or JSONL by
    file suffix; ``.json`` is Label Studio (:func:`export_label_studio`)."""
    if Path(out_path).suffix == ".json":
        return export_label_studio(predictions, out_path)
    rows = []
    for item in review_items(predictions):
        ans = item["answers"]["finetuned"]
        for reviewer in reviewers or ("",):
            rows.append(
                {
                    "item_id": item["id"],
                    "reviewer": reviewer,
                    "question": item["question"],
                    "reference_answer": item["referenceAnswer"],
                    "model_thinking": ans["thinking"],
                    "model_answer": ans["answer"],
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


# ------------------------------------------------------------------------------------------------------------
# The review store: what the review page writes, one field at a time


class ReviewValueError(ValueError):
    """A score the store refuses (unknown field, model or value); the message says what is allowed."""


class ReviewStore:
    """Scores as they are given: one SQLite row per (reviewer, item, model, field), committed on every save, so
    closing the browser or killing the server loses nothing; every change is also appended to ``history``.
    Item-level fields (the A/B preference) have model ``""``. Several reviewers write concurrently through one
    server; the lock serialises them on its single connection."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS scores (
        reviewer TEXT NOT NULL, item_id TEXT NOT NULL, model TEXT NOT NULL, field TEXT NOT NULL,
        value TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (reviewer, item_id, model, field));
    CREATE TABLE IF NOT EXISTS history (
        at TEXT NOT NULL, reviewer TEXT NOT NULL, item_id TEXT NOT NULL, model TEXT NOT NULL,
        field TEXT NOT NULL, value TEXT);
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise ReviewSheetError(
                self.path, ["row 1: no such review store (thinktune review serve writes it)"]
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(self.SCHEMA)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def check(model: str, field: str, value: Any) -> str | None:
        """The value as stored (None clears the field), or ReviewValueError naming what is allowed."""
        if field == "preference":
            if model:
                raise ReviewValueError("preference is per item: send it without a model")
            allowed: tuple[str, ...] = PREFERENCES
        elif model not in MODELS:
            raise ReviewValueError(f"model {model!r} is not one of {', '.join(MODELS)}")
        elif field in CRITERIA:
            if value in (None, ""):
                return None
            parsed = _parse_score(value)
            if not isinstance(parsed, int):
                raise ReviewValueError(f"{field}: {parsed}; scores are integers {SCORE_MIN}-{SCORE_MAX}")
            return str(parsed)
        elif field == "comment":
            text = "" if value is None else str(value)
            if len(text) > MAX_COMMENT:
                raise ReviewValueError(f"comment is {len(text)} characters; at most {MAX_COMMENT}")
            return text or None
        elif field.startswith("rubric_") and field.removeprefix("rubric_") in RUBRIC_KEYS:
            allowed = RUBRIC_VALUES
        else:
            known = [*CRITERIA, "comment", "preference", *(f"rubric_{k}" for k in RUBRIC_KEYS)]
            raise ReviewValueError(f"unknown field {field!r} (known: {', '.join(known)})")
        if value in (None, ""):
            return None
        if value not in allowed:
            raise ReviewValueError(f"{field}: {value!r} is not one of {', '.join(allowed)}")
        return str(value)

    def save(self, reviewer: str, item_id: str, model: str, field: str, value: Any) -> str:
        """Store one field now; returns the time it was saved (UTC, ISO 8601)."""
        stored = self.check(model, field, value)
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        key = (reviewer, item_id, model, field)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            if stored is None:
                self._db.execute(
                    "DELETE FROM scores WHERE reviewer=? AND item_id=? AND model=? AND field=?", key
                )
            else:
                self._db.execute(
                    "INSERT INTO scores VALUES (?,?,?,?,?,?) ON CONFLICT (reviewer, item_id, model, field) "
                    "DO UPDATE SET value=excluded.value, updated=excluded.updated",
                    (*key, stored, at),
                )
            self._db.execute("INSERT INTO history VALUES (?,?,?,?,?,?)", (at, *key, stored))
            self._db.execute("COMMIT")
        return at

    def fields(self, reviewer: str | None = None) -> list[tuple[str, str, str, str, str]]:
        """(reviewer, item_id, model, field, value) rows, ordered."""
        sql = "SELECT reviewer, item_id, model, field, value FROM scores"
        args: tuple[str, ...] = ()
        if reviewer is not None:
            sql, args = sql + " WHERE reviewer=?", (reviewer,)
        with self._lock:
            return list(self._db.execute(sql + " ORDER BY reviewer, item_id, model, field", args))

    def reviewers(self) -> list[str]:
        with self._lock:
            return [r for (r,) in self._db.execute("SELECT DISTINCT reviewer FROM scores ORDER BY reviewer")]

    def records(self) -> list[dict[str, Any]]:
        """One record per (reviewer, item, model) in the shape of a sheet row (item_id, reviewer, model, the
        criteria, comment, rubric_*), and per (reviewer, item) with a preference one with ``preference``."""
        recs: dict[tuple[str, str, str], dict[str, Any]] = {}
        for reviewer, item, model, field, value in self.fields():
            rec = recs.setdefault((reviewer, item, model), {"item_id": item, "reviewer": reviewer})
            if model:
                rec["model"] = model
            rec[field] = value
        return list(recs.values())


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number as a spreadsheet shows it / line number for JSONL / record number of a store, record)."""
    if path.suffix in STORE_SUFFIXES:
        try:
            store = ReviewStore(path, create=False)
            try:
                return list(enumerate(store.records(), 1))
            finally:
                store.close()
        except sqlite3.DatabaseError as e:
            raise ReviewSheetError(
                path, [f"row 1: not a review store ({e}); pass the review.sqlite of `thinktune review serve`"]
            ) from None
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


def _validate(
    path: Path, rows: list[tuple[int, dict[str, Any]]], *, in_progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(scored answers, preferences, pending). ``in_progress`` (a store): an answer scored on some criteria only
    is pending, the reviewer is still at it; in a sheet it is an error."""
    errors: list[str] = []
    scored: list[dict[str, Any]] = []
    prefs: list[dict[str, Any]] = []
    pending = 0
    seen: dict[tuple[str, str, str], int] = {}
    for rownum, rec in rows:
        item = str(rec.get("item_id", "") or "").strip()
        reviewer = str(rec.get("reviewer", "") or "").strip()
        model = str(rec.get("model", "") or "").strip() or "finetuned"
        if not item:
            errors.append(f"row {rownum}: item_id is empty")
            continue
        if rec.get("preference"):
            if rec["preference"] not in PREFERENCES:
                errors.append(
                    f"row {rownum} (item {item}): preference must be one of {', '.join(PREFERENCES)}"
                )
            else:
                prefs.append({"item_id": item, "reviewer": reviewer, "preference": rec["preference"]})
            if not any(c in rec for c in CRITERIA):
                continue
        if model not in MODELS:
            errors.append(f"row {rownum} (item {item}): model {model!r} is not one of {', '.join(MODELS)}")
            continue
        parsed = {c: _parse_score(rec.get(c)) for c in CRITERIA}
        bad = [f"{c} {v}" for c, v in parsed.items() if isinstance(v, str)]
        rubric = {k: str(rec.get(f"rubric_{k}") or "").strip().lower() for k in RUBRIC_KEYS}
        bad += [f"rubric_{k} {v!r} is not yes/no" for k, v in rubric.items() if v and v not in RUBRIC_VALUES]
        if bad:
            errors.append(f"row {rownum} (item {item}): " + "; ".join(bad))
            continue
        empty = [c for c, v in parsed.items() if v is None]
        if len(empty) == len(CRITERIA) or (empty and in_progress):
            pending += 1
            continue
        if empty:
            errors.append(f"row {rownum} (item {item}): {', '.join(empty)} missing (score all three or none)")
            continue
        key = (item, reviewer, model)
        if key in seen:
            errors.append(
                f"row {rownum} (item {item}): reviewer {reviewer or '(blank)'} already scored this item "
                f"in row {seen[key]}" + (f" ({model} model)" if model != "finetuned" else "")
            )
            continue
        seen[key] = rownum
        scored.append(
            {
                "row": rownum,
                "item_id": item,
                "reviewer": reviewer,
                "model": model,
                **parsed,
                "rubric": {k: v for k, v in rubric.items() if v},
                "comment": str(rec.get("comment", "") or "").strip(),
            }
        )
    if errors:
        raise ReviewSheetError(path, errors)
    return scored, prefs, pending


def _rubric_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for k in RUBRIC_KEYS:
        yes = sum(1 for r in rows if r["rubric"].get(k) == "yes")
        no = sum(1 for r in rows if r["rubric"].get(k) == "no")
        out[k] = {"yes": yes, "no": no, "rate": yes / (yes + no) if yes + no else None}
    return out


def _preference_summary(prefs: list[dict[str, Any]]) -> dict[str, Any]:
    votes = {p: sum(1 for x in prefs if x["preference"] == p) for p in PREFERENCES}
    n = len(prefs)
    return {
        "votes": n,
        "items": len({x["item_id"] for x in prefs}),
        **votes,
        # a tie counts half for each side, the usual win rate of pairwise comparisons
        "finetunedWinRate": (votes["finetuned"] + 0.5 * votes["tie"]) / n if n else None,
    }


def import_review_sheet(path: str | Path, *, threshold: float = 3.0) -> dict[str, Any]:
    """Validate and summarise a filled review sheet or a review store. Raises ReviewSheetError listing every
    bad row. Means, per-item figures, agreement and flags are the fine-tuned model's answers (what a sheet
    holds); ``byModel`` compares both models and ``preference`` counts the blind A/B choices."""
    path = Path(path)
    if not path.is_file():
        raise ReviewSheetError.missing(path)
    scored_all, prefs, pending = _validate(path, _read_rows(path), in_progress=path.suffix in STORE_SUFFIXES)
    scored = [r for r in scored_all if r["model"] == "finetuned"]

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
    by_model = {}
    for model in MODELS:
        rows = [r for r in scored_all if r["model"] == model]
        if rows:
            by_model[model] = {
                "rows": len(rows),
                "means": {c: sum(r[c] for r in rows) / len(rows) for c in CRITERIA},
                "rubric": _rubric_rates(rows),
            }
    return {
        "sheet": str(path),
        "threshold": threshold,
        "rows": len(scored),
        "pending": pending,
        "items": len(by_item),
        "reviewers": sorted({r["reviewer"] for r in scored_all} | {p["reviewer"] for p in prefs}),
        "means": means,
        "itemMeans": {c: (sum(i[c] for i in items) / len(items) if items else None) for c in CRITERIA},
        "agreement": agreement,
        "byModel": by_model,
        "preference": _preference_summary(prefs),
        "flagged": [i for i in items if i["flagged"]],
        "perItem": items,
    }


def write_review_summary(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """review_summary.json + review_summary.md in out_dir; returns the Markdown path. When out_dir holds an
    evaluation report (eval_report.json), the summary joins it and its Markdown/HTML are rendered again."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "review_summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    md = out / "review_summary.md"
    md.write_text("\n".join(review_markdown(summary)) + "\n", encoding="utf-8")
    from thinktune.evaluate.report import REPORT_JSON, write_reports

    if (out / REPORT_JSON).is_file():
        report = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
        report["review"] = summary
        write_reports(report, out)
    return md
