"""The evaluation report from a real evaluation: the tiny Qwen3 (real tokenizer) with a LoRA adapter trained a
few steps, evaluate_model with base-model answers on; then the expert review (a filled sheet and a review store)
imported into that report. Offline; about 10-20 s on 2 CPU cores."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import csv
import json
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from thinktune.evaluate.review import (  # noqa: E402
    ReviewStore,
    export_review_sheet,
    import_review_sheet,
    write_review_summary,
)
from thinktune.spec import EvaluationSpec  # noqa: E402

N_TEST, N_BASE = 4, 3


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from thinktune.evaluate.run import evaluate_model
    from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset
    from thinktune.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("evalreport")
    model = make_tiny_model(root / "model", num_layers=1, log=lambda _: None)
    adapter = make_tiny_adapter(model, root / "adapter", steps=4)
    test = write_tiny_dataset(root / "ds", n_test=N_TEST) / "test.json"
    spec = EvaluationSpec(max_samples=N_TEST, max_new_tokens=6, base_samples=N_BASE)
    out = root / "eval"
    report = evaluate_model(str(model), adapter_path=str(adapter), test_file=test, spec=spec, output_dir=out)
    return report, out


def test_report_has_base_comparison_examples_and_html(evaluated):
    report, out = evaluated
    cmp_ = report["baseComparison"]
    assert cmp_["samples"] == N_BASE and set(cmp_) >= {"base", "finetuned", "chart"}
    assert cmp_["base"]["perplexity"]["full"] != pytest.approx(cmp_["finetuned"]["perplexity"]["full"])
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [("base" in p) for p in preds] == [True] * N_BASE + [False] * (N_TEST - N_BASE)
    assert preds[0]["base"]["newTokens"] <= 6 and "answer" in preds[0]["base"]["scores"]

    labels = [e["label"] for e in report["examples"]]
    assert labels == ["best", "worst", "typical"]
    scores = {e["label"]: e["score"] for e in report["examples"]}
    assert scores["best"] >= scores["typical"] >= scores["worst"]

    md = (out / "eval_report.md").read_text(encoding="utf-8")
    assert "## Base vs fine-tuned" in md and "## Examples" in md
    for ex in report["examples"]:
        assert f"`{ex['id']}`" in md
    first = report["examples"][0]
    assert "| | fine-tuned | base |" in md or "base" not in first  # side by side where the base answered
    assert first["question"] in md

    html = (out / "eval_report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2  # metrics + base-vs-fine-tuned plots, inline
    assert "<table>" in html and "<details>" in html and "<h2>Examples</h2>" in html
    # model output is untrusted: a generated tag shows as text in both reports, never as markup
    from thinktune.evaluate.report import markdown_lines, render_html

    hostile = {**report, "examples": [{**first, "predictionAnswer": "<script>alert(1)</script>\n| x |"}]}
    page = render_html("\n".join(markdown_lines(hostile)), out)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/script&gt;<br>| x |</td>" in page  # line break kept, a pipe does not split the cell


def test_review_import_joins_the_report(evaluated, tmp_path):
    report, out = evaluated
    # a store as the review page writes it (the page's own test drives the browser): two reviewers
    store = ReviewStore(out / "review.sqlite")
    ids = [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    for reviewer, ft, base, pref in (("alice", 4, 2, "finetuned"), ("bob", 5, 2, "tie")):
        for item in ids[:2]:
            for model, v in (("finetuned", ft), ("base", base)):
                for c in ("accuracy", "fluency", "professionalism"):
                    store.save(reviewer, item, model, c, v)
                store.save(reviewer, item, model, "rubric_facts", "yes" if model == "finetuned" else "no")
            store.save(reviewer, item, "", "preference", pref)
    store.save("alice", ids[2], "finetuned", "accuracy", 3)  # still at it: pending, not an error
    store.close()
    summary = import_review_sheet(out / "review.sqlite")
    assert summary["reviewers"] == ["alice", "bob"] and summary["pending"] == 1
    assert summary["means"]["accuracy"] == pytest.approx(4.5)
    assert summary["byModel"]["base"]["means"]["fluency"] == 2
    assert summary["byModel"]["finetuned"]["rubric"]["facts"]["rate"] == 1.0
    assert summary["byModel"]["base"]["rubric"]["facts"]["rate"] == 0.0
    assert summary["preference"] == {
        "votes": 4,
        "items": 2,
        "finetuned": 2,
        "base": 0,
        "tie": 2,
        "finetunedWinRate": pytest.approx(0.75),
    }
    assert summary["agreement"]["accuracy"]["pairs"] == 2
    write_review_summary(summary, out)
    joined = json.loads((out / "eval_report.json").read_text(encoding="utf-8"))
    assert joined["review"]["preference"]["votes"] == 4 and joined["examples"] == report["examples"]
    md = (out / "eval_report.md").read_text(encoding="utf-8")
    assert "## Expert review" in md and "fine-tuned win rate **0.75**" in md
    assert "### Fine-tuned vs base (blind)" in md
    assert "## Expert review" in (out / "eval_report.html").read_text(encoding="utf-8").replace(
        "<h2>Expert review</h2>", "## Expert review"
    )


def test_label_studio_tasks_and_config(evaluated):
    _, out = evaluated
    tasks_path = export_review_sheet(out / "predictions.jsonl", out / "ls" / "tasks.json")
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    assert len(tasks) == N_TEST + N_BASE  # one per item and model
    assert {t["meta"]["model"] for t in tasks} == {"finetuned", "base"}
    assert set(tasks[0]["data"]) == {
        "item_id",
        "question",
        "reference_answer",
        "model_thinking",
        "model_answer",
    }
    config = (out / "ls" / "tasks.label_config.xml").read_text(encoding="utf-8")
    import xml.etree.ElementTree as ET

    root = ET.fromstring(config)  # well-formed
    names = {e.get("name") for e in root.iter() if e.get("name")}
    assert {"accuracy", "fluency", "professionalism", "comment", "rubric_facts"} <= names
    # every $variable the interface reads is a key of the tasks' data
    assert set(re.findall(r"\$(\w+)", config)) <= set(tasks[0]["data"])
    # the CSV sheet stays as it was: the fine-tuned model's answers, one row per item
    sheet = export_review_sheet(out / "predictions.jsonl", out / "ls" / "sheet.csv")
    with sheet.open(encoding="utf-8-sig") as f:
        assert len(list(csv.DictReader(f))) == N_TEST
