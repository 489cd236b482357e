"""The expert review page (`thinktune review serve`) in real headless Chromium from Debian's packages, driven by
Playwright: two reviewers score with the keyboard, every value reaches the SQLite store as it is given, a reload
shows the scores again, a tab closed mid-comment loses nothing, and `review import` reads what the page wrote.

The predictions come from evaluation's own writer (prediction_records + write_predictions); only the generated
texts are made up, so the test needs no model. It skips only when /usr/bin/chromium is missing (tests/run.sh
installs Debian's chromium package)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from thinktune.evaluate.review import ReviewStore, blind_order, import_review_sheet
from thinktune.evaluate.review_server import start_in_thread

CHROMIUM = Path("/usr/bin/chromium")
# flags from the machine notes: without the background-networking ones Chromium keeps dialling out on a closed
# network; a fresh --user-data-dir per run (launch_persistent_context) so no profile state leaks between runs
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_ITEMS, N_BASE = 4, 3


@pytest.fixture
def predictions(tmp_path):
    from thinktune.data.glossary import term_aliases
    from thinktune.evaluate.metrics import TermMatcher, load_samples, score_prediction
    from thinktune.evaluate.run import prediction_records, write_predictions
    from thinktune.export.testing import write_tiny_dataset

    samples = load_samples(write_tiny_dataset(tmp_path / "ds", n_test=N_ITEMS) / "test.json")
    matcher = TermMatcher(term_aliases())

    def gen(text):
        return {"text": text, "new_tokens": len(text), "hit_limit": False}

    ft = [
        gen(f"<think>\n{s.question}的要点。\n</think>\n\n{s.reference.split('</think>')[1].strip()}")
        for s in samples
    ]
    base = [gen("<think>\nquiero quiero <b>quiero</b>") for _ in samples[:N_BASE]]
    per = [score_prediction(g["text"], s.reference, matcher) for g, s in zip(ft, samples, strict=True)]
    base_per = [
        score_prediction(g["text"], s.reference, matcher) for g, s in zip(base, samples, strict=False)
    ]
    records = prediction_records(
        samples, ft, per, {"samples": N_BASE, "generations": base, "perSample": base_per}
    )
    return write_predictions(records, tmp_path / "eval" / "predictions.jsonl"), [r["id"] for r in records]


@pytest.fixture
def server(predictions):
    path, ids = predictions
    srv, url = start_in_thread(path, path.with_name("review.sqlite"), port=0)
    yield url, path.with_name("review.sqlite"), ids
    srv.shutdown()
    srv.server_close()


def _wait_saved(page):
    page.wait_for_function("window.reviewPending === 0", timeout=10_000)


def _letters(item: str, reviewer: str) -> dict[str, str]:
    return dict(zip("AB", blind_order(item, reviewer, ["finetuned", "base"]), strict=True))


def _store_values(store_path, reviewer):
    store = ReviewStore(store_path, create=False)
    try:
        return {(i, m, f): v for _, i, m, f, v in store.fields(reviewer)}
    finally:
        store.close()


def test_review_page_in_chromium(server, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} missing: install Debian's chromium package (tests/run.sh does it with apt-get)"
        )
    from playwright.sync_api import sync_playwright

    url, store_path, ids = server
    started = time.monotonic()
    errors: list[str] = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        ctx.on("weberror", lambda e: errors.append(str(e.error)))

        def open_page(address):
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(address)
            return page

        # --- alice: name, then item 1 scored from the keyboard alone
        page = open_page(url)
        page.keyboard.type("alice")
        page.keyboard.press("Enter")
        page.wait_for_selector("fieldset.score.cursor")
        assert page.locator("section.answer").count() == 2
        assert page.locator("section.answer details.thinking[open]").count() == 0  # thinking starts collapsed
        page.locator("section.answer details.thinking summary").first.click()
        assert page.locator("section.answer details.thinking[open]").count() == 1
        text = page.inner_text("main").lower()
        assert "finetuned" not in text and "fine-tuned" not in text and "base" not in text  # blind
        assert "<b>quiero</b>" in page.inner_text("main")  # model text is shown as text, never as markup
        for key in ["4", "5", "3", "y", "n", "y", "y", "2", "2", "1"]:  # A: criteria + rubric, B: criteria
            page.keyboard.press(key)
        page.keyboard.press("c")  # comment on the answer the cursor is in (B)
        page.keyboard.type("术语错误：SM2 不是分组密码")
        page.keyboard.press("Escape")
        page.keyboard.press("a")  # A is better
        _wait_saved(page)
        assert page.inner_text("#status").startswith("saved")
        page.screenshot(path=str(tmp_path / "review_page.png"))

        letters = _letters(ids[0], "alice")
        saved = _store_values(store_path, "alice")
        assert saved[(ids[0], letters["A"], "accuracy")] == "4"
        assert saved[(ids[0], letters["A"], "professionalism")] == "3"
        assert saved[(ids[0], letters["A"], "rubric_facts")] == "no"
        assert saved[(ids[0], letters["B"], "fluency")] == "2"
        assert saved[(ids[0], letters["B"], "comment")] == "术语错误：SM2 不是分组密码"
        assert saved[(ids[0], "", "preference")] == letters["A"]

        # --- item 2: a comment typed and the tab closed at once (inside the page's 400 ms typing pause)
        page.keyboard.press("ArrowRight")
        page.wait_for_selector("text=Item 2 of")
        page.keyboard.press("5")
        page.keyboard.press("c")
        page.keyboard.type("关闭前的评语")
        page.close(run_before_unload=True)
        a2 = _letters(ids[1], "alice")["A"]
        deadline = time.monotonic() + 10
        while (ids[1], a2, "comment") not in _store_values(
            store_path, "alice"
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        saved = _store_values(store_path, "alice")
        assert saved[(ids[1], a2, "comment")] == "关闭前的评语" and saved[(ids[1], a2, "accuracy")] == "5"

        # --- reload: a new tab shows item 1 as alice left it
        page = open_page(url + "?reviewer=alice&item=1")
        page.wait_for_selector("fieldset.score.cursor")
        assert page.locator('input[name="A-accuracy"]:checked').get_attribute("value") == "4"
        assert page.locator('input[name="B-professionalism"]:checked').get_attribute("value") == "1"
        assert page.locator('input[name="A-rubric_terms"]:checked').get_attribute("value") == "yes"
        assert page.locator('textarea[data-slot="B"]').input_value() == "术语错误：SM2 不是分组密码"
        assert page.locator('input[name="item-preference"]:checked').get_attribute("value") == "A"
        assert page.inner_text("#progress").startswith("1/")  # item 1 complete
        page.close()

        # --- bob, a second reviewer on the same server: his own blank page and his own rows
        page = open_page(url + "?reviewer=bob")
        page.wait_for_selector("fieldset.score.cursor")
        assert page.locator("input:checked").count() == 0
        for key in ["3", "3", "3", "j", "j", "j", "j", "3", "4", "3", "t"]:  # skips A's rubric, B, tie
            page.keyboard.press(key)
        _wait_saved(page)
        page.close()
        ctx.close()
    seconds = time.monotonic() - started
    assert errors == [], errors

    summary = import_review_sheet(store_path)
    assert summary["reviewers"] == ["alice", "bob"]
    alice_ft = 4 if _letters(ids[0], "alice")["A"] == "finetuned" else 2
    bob_ft = 3  # bob gave both answers' accuracy 3
    assert summary["agreement"]["accuracy"]["pairs"] == 1
    assert summary["agreement"]["accuracy"]["exact"] == (1.0 if alice_ft == bob_ft else 0.0)
    assert (
        summary["byModel"]["base"]["rows"] == 2 and summary["pending"] == 1
    )  # alice's item 2: one criterion
    assert summary["preference"]["votes"] == 2 and summary["preference"]["tie"] == 1
    assert summary["preference"]["finetuned"] == (1 if _letters(ids[0], "alice")["A"] == "finetuned" else 0)
    print(f"browser test: {seconds:.1f} s wall (Chromium start, 2 reviewers, reload, closed tab)")


def test_server_refuses_bad_values_with_the_reason(server):
    url, _, ids = server

    def post(body):
        req = urllib.request.Request(
            url + "api/save", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    ok = {"reviewer": "carol", "item": ids[0], "slot": "A", "field": "accuracy", "value": 5}
    assert post(ok)[0] == 200
    assert post({**ok, "value": 7}) == (400, {"error": "accuracy: 7 is outside 1-5; scores are integers 1-5"})
    assert post({**ok, "slot": "C"})[1]["error"] == f"item {ids[0]} has no answer 'C' (answers: A, B)"
    assert post({**ok, "item": "nope"})[1]["error"] == "unknown item 'nope'"
    assert post({**ok, "reviewer": " "})[1]["error"] == "reviewer must be a name of 1-64 characters"
    assert "unknown field 'speed'" in post({**ok, "field": "speed"})[1]["error"]
    # the last item has no base answer: one answer, no A/B preference
    with urllib.request.urlopen(url + "api/items?reviewer=carol") as r:
        items = json.load(r)["items"]
    assert [len(i["answers"]) for i in items] == [2] * N_BASE + [1] * (N_ITEMS - N_BASE)
    assert post({**ok, "item": ids[-1], "field": "preference", "slot": "", "value": "B"})[0] == 400


def test_review_serve_bad_input_is_one_line(tmp_path, capsys):
    from thinktune.evaluate.review_server import serve

    assert serve(tmp_path / "missing.jsonl", tmp_path / "review.sqlite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl does not exist" in err
    empty = tmp_path / "predictions.jsonl"
    empty.write_text("", encoding="utf-8")
    assert serve(empty, tmp_path / "review.sqlite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no predictions to review" in err


def test_static_assets_ship_inside_the_package():
    """The page's files sit in the package directory that hatch's wheel target includes (pyproject:
    packages = ["trainer/thinktune", ...]), next to the module that serves them."""
    import thinktune.evaluate.review_server as rs

    names = {p.name for p in rs.STATIC.iterdir()}
    assert {"index.html", "app.js", "app.css"} <= names
    assert rs.STATIC.parent == Path(rs.__file__).parent
