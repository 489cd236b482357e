"""Expert review sheet round trip: export, fill, import; bad rows are rejected by row number."""

from __future__ import annotations

import csv
import json

import pytest
from thinktune.evaluate.review import (
    ReviewSheetError,
    export_review_sheet,
    import_review_sheet,
    write_review_summary,
)

PREDS = [
    {
        "id": f"q{i}",
        "question": f"问题{i}",
        "reference": "<think>\nR\n</think>\n\n参考答案",
        "prediction": f"思考{i}\n</think>\n\n回答{i}",
    }
    for i in range(3)
]


def _fill(path, scores):
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, sc in zip(rows, scores, strict=True):
        row.update(dict(zip(("accuracy", "fluency", "professionalism", "comment"), sc, strict=False)))
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_round_trip_with_agreement(tmp_path):
    sheet = export_review_sheet(PREDS, tmp_path / "review.csv", reviewers=["alice", "bob"])
    with sheet.open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[0]["model_answer"] == "回答0" and rows[0]["reference_answer"] == "参考答案"
    assert rows[0]["model_thinking"] == "思考0" and rows[0]["accuracy"] == ""
    # rows: q0 alice, q0 bob, q1 alice, q1 bob, q2 alice, q2 bob
    _fill(
        sheet,
        [
            ("5", "4", "5"),
            ("5", "4", "4"),
            ("2", "3", "2", "术语错误"),
            ("3", "3", "2"),
            ("", "", ""),
            ("", "", ""),
        ],
    )
    s = import_review_sheet(sheet, threshold=3.0)
    assert s["rows"] == 4 and s["pending"] == 2 and s["items"] == 2
    assert s["means"]["accuracy"] == pytest.approx((5 + 5 + 2 + 3) / 4)
    assert s["agreement"]["accuracy"]["exact"] == pytest.approx(0.5)
    assert s["agreement"]["accuracy"]["withinOne"] == 1.0
    assert s["agreement"]["fluency"]["exact"] == 1.0
    assert s["agreement"]["accuracy"]["krippendorffAlpha"] is not None
    flagged = {i["item_id"]: i for i in s["flagged"]}
    assert set(flagged) == {"q1"} and "accuracy" in flagged["q1"]["below"]
    assert flagged["q1"]["comments"] == ["术语错误"]
    md = write_review_summary(s, tmp_path / "out")
    assert "q1" in md.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "out" / "review_summary.json").read_text())["items"] == 2


def test_bad_rows_are_named(tmp_path):
    sheet = export_review_sheet(PREDS, tmp_path / "review.csv")
    _fill(sheet, [("6", "4", "5"), ("4", "", "3"), ("x", "3.5", "3")])
    with pytest.raises(ReviewSheetError) as e:
        import_review_sheet(sheet)
    msg = str(e.value)
    assert "row 2 (item q0): accuracy 6 is outside 1-5" in msg
    assert "row 3 (item q1): fluency missing" in msg
    assert "row 4 (item q2): accuracy 'x' is not a number; fluency 3.5 is not a whole number" in msg
    assert len(e.value.errors) == 3


def test_jsonl_sheet_and_duplicate_reviewer(tmp_path):
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PREDS), encoding="utf-8")
    sheet = export_review_sheet(preds, tmp_path / "review.jsonl", reviewers=["a"])
    rows = [json.loads(x) for x in sheet.read_text(encoding="utf-8").splitlines()]
    for r in rows:
        r.update(accuracy=4, fluency=4, professionalism=4)
    rows.append(dict(rows[0]))
    sheet.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(
        ReviewSheetError, match=r"row 4 \(item q0\): reviewer a already scored this item in row 1"
    ):
        import_review_sheet(sheet)
    sheet.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:3]), encoding="utf-8")
    s = import_review_sheet(sheet)
    assert s["means"]["accuracy"] == 4 and not s["flagged"] and s["agreement"]["accuracy"]["pairs"] == 0


def test_gbk_csv_from_excel(tmp_path):
    sheet = export_review_sheet(PREDS[:1], tmp_path / "review.csv")
    _fill(sheet, [("4", "5", "3", "很好")])
    text = sheet.read_text(encoding="utf-8-sig")
    sheet.write_bytes(text.encode("gb18030"))
    s = import_review_sheet(sheet)
    assert s["means"]["fluency"] == 5 and s["perItem"][0]["comments"] == ["很好"]


def test_missing_sheet_or_store_is_one_clear_error(tmp_path):
    for name in ("review.csv", "review.sqlite"):
        with pytest.raises(
            ReviewSheetError, match=r"does not exist: pass a sheet written by `thinktune review export`"
        ):
            import_review_sheet(tmp_path / name)
    bad = tmp_path / "notes.db"
    bad.write_text("not sqlite", encoding="utf-8")
    with pytest.raises(ReviewSheetError, match=r"row 1: not a review store \(file is not a database\)"):
        import_review_sheet(bad)
