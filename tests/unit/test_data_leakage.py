"""Leakage of val/test into train: shared documents, shared 13-grams, answer paragraphs copied verbatim."""

from __future__ import annotations

from thinktune.data.leakage import Held, leakage_report, paragraphs, split_leakage

P1 = "SM4 是分组长度和密钥长度均为 128 位的分组密码，轮函数迭代 32 轮。"
P2 = "GCM 模式下同一密钥的 nonce 一旦重复，认证密钥 H 就会泄露，攻击者可以伪造认证标签。"
P3 = "SM2 签名要先计算 ZA，把用户标识、曲线参数和公钥绑定进杂凑值里，防止签名被挪用。"
P4 = "口令要用 Argon2 或 scrypt 这样的慢杂凑，并为每个用户配一个随机盐，彩虹表因此失效。"


def test_paragraphs_are_normalised_and_short_ones_ignored():
    assert paragraphs(f"{P1}\n\n例如：\n\n  {P2}  ") == [paragraphs(P1)[0], paragraphs(P2)[0]]


def test_each_measure_counts_what_it_says():
    train = [Held("t1", "a.md", P1 + "\n\n" + P2)]
    held = [
        Held("same-doc", "a.md", P4),  # same document, nothing copied
        Held("half", "b.md", P2 + "\n\n" + P3),  # 1 of 2 paragraphs verbatim: half
        Held("third", "c.md", P2.replace("。", "") + "\n\n" + P3 + "\n\n" + P4),  # 1 of 3: ngram only
        Held("clean", "d.md", P3 + "\n\n" + P4),
    ]
    r = split_leakage(train, held)
    assert r["samples"] == 4 and r["ngram"] == 13
    assert r["from_train_documents"]["examples"] == ["same-doc"]
    assert r["sharing_ngram"]["examples"] == ["half", "third"]
    assert r["half_paragraphs_in_train"]["examples"] == ["half"]
    assert r["half_paragraphs_in_train"]["share"] == 0.25


def test_a_12_character_overlap_is_not_a_13_gram():
    train = [Held("t", "a.md", "前缀文字一二三四五六七八九十甲乙后缀")]
    held = [Held("h", "b.md", "完全不同一二三四五六七八九十甲乙的结尾")]  # 12 shared characters
    assert split_leakage(train, held)["sharing_ngram"]["count"] == 0
    held13 = [Held("h", "b.md", "完全不同一二三四五六七八九十甲乙后的结尾")]
    assert split_leakage(train, held13)["sharing_ngram"]["count"] == 1


def test_report_covers_every_held_out_split():
    rep = leakage_report({"train": [Held("t", "a.md", P1)], "val": [], "test": [Held("x", "a.md", P1)]})
    assert set(rep) == {"val", "test"}
    assert rep["val"]["samples"] == 0 and rep["val"]["sharing_ngram"]["share"] == 0.0
    assert rep["test"]["half_paragraphs_in_train"]["count"] == 1


class CharTok:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}


def test_build_drops_a_repeated_answer_under_another_instruction(tmp_path):
    from thinktune.data.build import build_dataset
    from thinktune.spec import DatasetBuildSpec

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text(f"# 盐\n\n问：为什么口令要加盐？\n答：{P4}\n", encoding="utf-8")
    (src / "b.md").write_text(f"# 口令\n\n问：如何安全地存储用户口令？\n答：{P4}\n", encoding="utf-8")
    sp = DatasetBuildSpec.model_validate({"source": {"path": "in"}, "output": {"path": "out"}})
    rep = build_dataset(sp, src, tmp_path / "out", progress=False, tokenizer=CharTok())
    assert rep["counts"]["duplicates"] == 1 and rep["counts"]["samples"] == 1
    assert rep["rejects_by_reason"] == {"exact duplicate": 1}
