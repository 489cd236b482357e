"""build_dataset end to end on the real sample corpus (real tokenizer, real files) and on the malformed one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from thinktune.data import build as build_mod
from thinktune.data.build import (
    DatasetBuildError,
    build_dataset,
    content_hash,
    find_documents,
    status_from_report,
)
from thinktune.spec import DatasetBuildSpec, DatasetBuildStatus, DatasetCounts

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "crypto" / "corpus"
BAD = ROOT / "examples" / "crypto" / "corpus-bad"


def spec(**kw) -> DatasetBuildSpec:
    return DatasetBuildSpec.model_validate({"source": {"path": "in"}, "output": {"path": "out"}, **kw})


@pytest.fixture(scope="module")
def tok():
    from thinktune.qwen_tokenizer import load_tokenizer

    return load_tokenizer("builtin:qwen3")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tok):
    out = tmp_path_factory.mktemp("ds")
    report = build_dataset(spec(datasetName="crypto"), CORPUS, out, progress=False, tokenizer=tok)
    return out, report


def rows(out: Path, split: str) -> list[dict]:
    return json.loads((out / f"{split}.json").read_text(encoding="utf-8"))


def test_output_files_and_dataset_info_schema(built):
    out, _ = built
    for f in (
        "dataset_info.json",
        "train.json",
        "val.json",
        "test.json",
        "rejects.jsonl",
        "report.json",
        "report.md",
    ):
        assert (out / f).is_file(), f
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"crypto_train", "crypto_val", "crypto_test"}
    e = info["crypto_train"]
    assert e["file_name"] == "train.json" and e["formatting"] == "sharegpt"
    assert e["columns"] == {"messages": "messages"}
    assert e["tags"] == {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }


def test_rows_messages_and_metadata(built):
    out, _ = built
    all_rows = rows(out, "train") + rows(out, "val") + rows(out, "test")
    assert len(all_rows) >= 120
    for r in all_rows:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant"]
        a = r["messages"][2]["content"]
        assert a.startswith("<think>\n") and "\n</think>\n\n" in a and a.count("</think>") == 1
        assert r["type"] in ("qa", "code", "thinking", "section")
        assert r["source"] == f"{r['source_file']}:{r['source_line']}"
        assert (CORPUS / r["source_file"]).is_file()
        assert isinstance(r["generated_thinking"], bool) and isinstance(r["terms"], list)
        assert 0 < r["n_tokens"] <= 4096
    # Traditional text converted, code kept byte-exact
    zuc = [r for r in all_rows if r["source_file"] == "06-zuc-stream.md"]
    assert zuc and all(
        "祖冲之" in r["messages"][0]["content"] + r["messages"][1]["content"] + r["messages"][2]["content"]
        or "ZUC" in r["terms"]
        for r in zuc
    )
    assert not any("金鑰" in r["messages"][2]["content"] for r in zuc)
    code = [r for r in all_rows if r["source_file"] == "16-rsa-pitfalls-c.md" and r["style"] == "code"]
    assert (
        code
        and "    memset(key, 0, sizeof key);   /* 可能被编译器优化掉！ */\n"
        in code[0]["messages"][1]["content"]
    )
    gmssl = [r for r in all_rows if r["source_file"] == "35-gmssl-usage.md"]
    assert any(
        "```sh\ngmssl sm3 < data.bin\n```" in r["messages"][2]["content"] + r["messages"][1]["content"]
        for r in gmssl
    )


def test_report_counts_match_status_contract(built):
    out, rep = built
    assert set(rep["counts"]) == set(DatasetCounts.model_fields)
    c = DatasetCounts.model_validate(rep["counts"])
    DatasetBuildStatus(counts=c)  # the operator can copy counts into the status
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["counts"] == rep["counts"]
    assert c.documents == 44
    assert (
        c.train == len(rows(out, "train"))
        and c.val == len(rows(out, "val"))
        and c.test == len(rows(out, "test"))
    )
    assert c.samples == c.train + c.val + c.test
    assert c.rejects == len((out / "rejects.jsonl").read_text().splitlines())
    assert c.warnings == len(rep["warnings"])
    assert c.generated_thinking == sum(
        r["generated_thinking"] for s in ("train", "val", "test") for r in rows(out, s)
    )
    assert abs(c.train / c.samples - 0.7) < 0.02 and abs(c.val / c.samples - 0.15) < 0.02


def test_report_sections(built):
    out, rep = built
    assert set(rep["per_type"]) == {"qa", "code", "thinking", "section"}
    assert all(rep["per_type"][t]["total"] > 0 for t in rep["per_type"])
    for row in rep["per_type"].values():
        assert row["total"] == row["train"] + row["val"] + row["test"]
    tl = rep["token_lengths"]
    assert tl["min"] <= tl["p50"] <= tl["p90"] <= tl["p99"] <= tl["max"] <= 4096
    assert tl["tokenizer"] and tl["cutoff_len"] == 4096
    th = rep["thinking"]
    assert th["source"] >= 30 and th["max_depth"] >= 3 and th["nested_samples"] >= 2
    assert th["generated"] == th["template"] == rep["generated_thinking"]
    cov = rep["term_coverage"]
    assert cov["terms_total"] > 100 and all(
        cov["per_split"][s]["terms"] > 20 for s in ("train", "val", "test")
    )
    assert isinstance(rep["warnings"], list) and isinstance(rep["errors"], list) and rep["errors"] == []
    md = (out / "report.md").read_text()
    assert len(rep["plots"]) >= 2
    for img in rep["plots"]:
        assert f"({img})" in md and (out / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terms_spread_across_splits(built):
    out, rep = built
    from collections import Counter

    cov = {s: Counter(t for r in rows(out, s) for t in set(r["terms"])) for s in ("train", "val", "test")}
    total = sum(cov.values(), Counter())
    # split by document: a term can reach every split only through different documents
    docs: dict[str, set[str]] = {}
    for s in cov:
        for r in rows(out, s):
            for t in r["terms"]:
                docs.setdefault(t, set()).add(r["source_file"])
    frequent = [t for t, d in docs.items() if len(d) >= 6]
    everywhere = [t for t in frequent if all(cov[s][t] for s in cov)]
    assert len(frequent) >= 20 and everywhere == frequent, set(frequent) - set(everywhere)
    d3 = [t for t, d in docs.items() if len(d) >= 3]
    assert sum(all(cov[s][t] for s in cov) for t in d3) >= 0.7 * len(d3)
    f3 = [t for t, n in total.items() if n >= 3]
    # type shares hold too
    for t, row in rep["per_type"].items():
        assert abs(row["val"] - 0.15 * row["total"]) <= max(2, 0.25 * 0.15 * row["total"]), (t, row)
    assert set(rep["term_coverage"]["frequent_terms_missing_from_a_split"]) == {
        t for t in f3 if not all(cov[s][t] for s in cov)
    }


def test_split_by_document_and_leakage_report(built):
    out, rep = built
    docs = {s: {r["source_file"] for r in rows(out, s)} for s in ("train", "val", "test")}
    assert (
        not docs["train"] & docs["test"]
        and not docs["train"] & docs["val"]
        and not docs["val"] & docs["test"]
    )
    assert rep["split"]["by"] == "document"
    assert rep["split"]["documents"] == {s: len(d) for s, d in docs.items()}
    for s, f in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(rep["split"]["fractions"][s] - f) < 0.02, rep["split"]
    leak = json.loads((out / "report.json").read_text())["leakage"]
    assert set(leak) == {"val", "test"} and leak["test"]["samples"] == len(rows(out, "test"))
    assert leak["test"]["from_train_documents"]["count"] == 0
    assert leak["test"]["half_paragraphs_in_train"]["count"] <= 1  # 3 of 26 with the per-sample split
    md = (out / "report.md").read_text()
    t = leak["test"]
    assert "## Split and leakage" in md and (
        f"| test | {t['samples']} | 0 (0%) | {t['sharing_ngram']['count']} (" in md
    )


def test_deterministic_and_parallel_equals_sequential(built, tmp_path, tok, monkeypatch):
    out, _ = built
    monkeypatch.setattr(build_mod, "PARALLEL_MIN_BYTES", 0)  # force the process pool on the small corpus
    rep2 = build_dataset(
        spec(datasetName="crypto", workers=2), CORPUS, tmp_path, progress=True, tokenizer=tok
    )
    assert rep2["timing"]["workers"] == 2
    for s in ("train", "val", "test"):
        assert (tmp_path / f"{s}.json").read_bytes() == (out / f"{s}.json").read_bytes(), s
    assert (tmp_path / "rejects.jsonl").read_bytes() == (out / "rejects.jsonl").read_bytes()


def test_seed_changes_split(built, tmp_path, tok):
    out, _ = built
    build_dataset(
        spec(datasetName="crypto", split={"seed": 7}), CORPUS, tmp_path, progress=False, tokenizer=tok
    )
    assert (tmp_path / "test.json").read_bytes() != (out / "test.json").read_bytes()


def test_malformed_corpus_everything_traced(tmp_path, tok):
    src = tmp_path / "src"
    shutil.copytree(BAD, src)
    shutil.copy(CORPUS / "05-sm3-hash.md", src / "05-sm3-hash.md")  # something valid to build
    rep = build_dataset(spec(), src, tmp_path / "out", progress=False, tokenizer=tok)
    rej = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    by_file = {}
    for r in rej:
        by_file.setdefault(r["source_file"], []).append(r)
    expected = {
        "unclosed-thinking.md": (5, "never closed"),
        "stray-close.md": (5, "no matching <thinking>"),
        "misplaced-close.md": (8, "misplaced"),
        "crossing-heading.md": (11, "across the heading"),
        "nested-unclosed.md": (5, "never closed"),
        "empty-answer.md": (3, "no answer"),
        "empty-thinking.md": (5, "empty <thinking>"),
        "faq-missing-answers.md": (5, "no nested answer"),
        "over-long.md": (3, "too long"),
    }
    for f, (line, needle) in expected.items():
        assert f in by_file, f
        assert any(
            r["line"] == line
            and needle in r["reason"]
            and r["source"].startswith(f"{f}:{line}")
            and r.get("fix")
            for r in by_file[f]
        ), (f, by_file[f])
    # over-long: rejected, reported with its token count, never truncated into the dataset
    over = next(r for r in by_file["over-long.md"] if "too long" in r["reason"])
    assert over["sample"]["tokens"] > 4096
    assert rep["token_lengths"]["over_cutoff"] == 1
    data = sum(
        (json.loads((tmp_path / "out" / f"{s}.json").read_text()) for s in ("train", "val", "test")), []
    )
    assert not any(r["source_file"] == "over-long.md" for r in data)
    # the valid parts of partly-bad files survive; errors listed in the report with file:line:col
    assert any(r["source_file"] == "empty-answer.md" for r in data)
    # an unclosed fence is closed before the next heading with a warning; the rest of the document is kept
    assert "broken-fence.md" not in by_file
    # a GBK line in a UTF-8 file is converted with a warning naming the line, not a reject of the whole file
    assert "bad-encoding.md" not in by_file
    assert "bad-encoding.md:3: not UTF-8, decoded as GBK/GB18030 and converted (1 line(s): 3)" in " ".join(
        rep["warnings"]
    )
    assert any(
        w.startswith("broken-fence.md:5:1: code fence ``` opened here is never closed")
        for w in rep["warnings"]
    )
    assert any(
        r["source_file"] == "broken-fence.md" and "后面的章节" in r["messages"][1]["content"] for r in data
    )
    assert any(e.startswith("unclosed-thinking.md:5:1: ") for e in rep["errors"])
    assert "unclosed-thinking.md" in rep["documents_with_errors"]
    assert rep["counts"]["rejects"] == len(rej)


def test_nothing_usable_raises_with_clear_message(tmp_path, tok):
    with pytest.raises(DatasetBuildError, match="no markdown documents"):
        build_dataset(spec(), tmp_path, tmp_path / "o", progress=False, tokenizer=tok)
    with pytest.raises(DatasetBuildError, match="does not exist"):
        build_dataset(spec(), tmp_path / "missing", tmp_path / "o", progress=False, tokenizer=tok)
    src = tmp_path / "bad"
    src.mkdir()
    shutil.copy(BAD / "unclosed-thinking.md", src)
    with pytest.raises(DatasetBuildError, match=r"no usable samples.*never closed.*rejects.jsonl"):
        build_dataset(spec(), src, tmp_path / "o2", progress=False, tokenizer=tok)
    assert "unclosed-thinking.md" in (tmp_path / "o2" / "rejects.jsonl").read_text()


def test_cutoff_len_and_generate_none_and_flatten(tmp_path, tok):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("01-sm4-basics.md", "09-cbc-padding-oracle.md", "18-ecdsa-nonce.md"):
        shutil.copy(CORPUS / f, src / f)
    rep = build_dataset(
        spec(validation={"cutoffLen": 330}, thinking={"generate": "none", "nested": "flatten"}),
        src,
        tmp_path / "o",
        progress=False,
        tokenizer=tok,
    )
    data = sum((json.loads((tmp_path / "o" / f"{s}.json").read_text()) for s in ("train", "val", "test")), [])
    assert data and all(r["thinking_method"] == "source" and not r["generated_thinking"] for r in data)
    assert all(r["n_tokens"] <= 330 for r in data)
    assert all("<thinking>" not in r["messages"][2]["content"] for r in data)
    assert any("2.2.1. " in r["messages"][2]["content"] for r in data)  # 3 nested levels numbered
    reasons = rep["rejects_by_reason"]
    assert reasons.get("too long for cutoffLen", 0) >= 1
    assert any("generate is 'none'" in k for k in reasons)
    assert rep["counts"]["generated_thinking"] == 0
    assert any("overfit" in w for w in rep["warnings"])


def test_find_documents_include_exclude(tmp_path):
    (tmp_path / "a.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("x")
    (tmp_path / "sub" / "c.txt").write_text("x")
    (tmp_path / "drafts").mkdir()
    (tmp_path / "drafts" / "d.md").write_text("x")
    got = [p.relative_to(tmp_path).as_posix() for p in find_documents(tmp_path, ["**/*.md"], ["drafts/*"])]
    assert got == ["a.md", "sub/b.md"]
    got = find_documents(tmp_path, ["**/*.md"], [], skip_dir=tmp_path / "sub")  # output inside the input
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a.md", "drafts/d.md"]


def test_status_and_content_hash(built, tmp_path):
    out, rep = built
    st = status_from_report(rep)
    assert st.counts.samples == rep["counts"]["samples"] and st.output_path == str(out)
    assert st.report_path.endswith("report.json") and st.content_hash == rep["content_hash"]
    sp = spec(datasetName="crypto")
    assert content_hash(sp, CORPUS) == rep["content_hash"]
    assert content_hash(spec(datasetName="crypto", split={"seed": 1}), CORPUS) != rep["content_hash"]
    src = tmp_path / "c"
    shutil.copytree(CORPUS, src)
    assert content_hash(sp, src) == rep["content_hash"]  # same bytes, other location
    (src / "01-sm4-basics.md").write_text((src / "01-sm4-basics.md").read_text() + "\n补充。\n")
    assert content_hash(sp, src) != rep["content_hash"]


class CharTok:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}


def test_dedup_switch_and_punctuation_switch(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    doc = "# 盐\n\n问：为什么要加盐,而且要随机?\n答：盐让相同口令得到不同杂凑值,彩虹表因此失效.\n"
    (src / "a" / "x.md").write_text(doc, encoding="utf-8")
    (src / "b" / "x.md").write_text(doc, encoding="utf-8")  # an exact copy
    on = build_dataset(spec(), src, tmp_path / "on", progress=False, tokenizer=CharTok())
    assert on["counts"]["duplicates"] == 1 and on["counts"]["samples"] == 1
    rej = [json.loads(x) for x in (tmp_path / "on" / "rejects.jsonl").read_text().splitlines()]
    assert rej[0]["kind"] == "duplicate" and rej[0]["source"] == "b/x.md:3" and "a/x.md:3" in rej[0]["reason"]
    off = build_dataset(
        spec(dedup={"enabled": False}, chinese={"normalizePunctuation": False}),
        src,
        tmp_path / "off",
        progress=False,
        tokenizer=CharTok(),
    )
    assert off["counts"]["duplicates"] == 0 and off["counts"]["samples"] == 2
    data = sum(
        (json.loads((tmp_path / "off" / f"{s}.json").read_text()) for s in ("train", "val", "test")), []
    )
    assert data[0]["messages"][1]["content"] == "为什么要加盐,而且要随机?"
    data_on = sum(
        (json.loads((tmp_path / "on" / f"{s}.json").read_text()) for s in ("train", "val", "test")), []
    )
    assert data_on[0]["messages"][1]["content"] == "为什么要加盐，而且要随机？"
