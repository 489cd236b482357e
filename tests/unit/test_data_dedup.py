"""Exact and near-duplicate removal (character 5-gram Jaccard, MinHash/LSH candidates, exact verification)."""

from __future__ import annotations

import random
import time

from thinktune.data.dedup import dedup_text, deduplicate, exact_key, jaccard, normalise, shingles

BASE = "GCM 模式下同一密钥的 nonce 一旦重复，攻击者就能得到两段明文的异或，并解出认证密钥 H，从而伪造任意消息的认证标签。"


def test_normalise_ignores_case_space_punctuation_and_width():
    assert normalise("ＳＭ４ 是，分组 密码!") == normalise("sm4是分组密码")
    assert exact_key("SM4 是分组密码。") == exact_key("sm4是分组密码")


def test_exact_duplicates_dropped_first_wins():
    r = deduplicate(["甲乙丙丁戊己庚辛", "其他完全不同的内容文本", "甲乙丙丁戊己庚辛！"], 0.9)
    assert r.keep == [0, 1]
    assert r.dropped == [(2, 0, "exact", 1.0)]


def test_near_duplicates_by_5gram_jaccard_threshold():
    near = BASE.replace("任意消息", "任意一条消息")
    other = "SM2 签名前要计算 ZA，把用户标识、曲线参数和公钥绑定进杂凑，防止签名被挪用到别的身份。"
    sim = jaccard(shingles(normalise(BASE)), shingles(normalise(near)))
    assert 0.8 < sim < 1.0
    r = deduplicate([BASE, near, other], threshold=0.8)
    assert r.keep == [0, 2] and r.dropped[0][:3] == (1, 0, "near")
    # above the pair's similarity: both kept
    r2 = deduplicate([BASE, near, other], threshold=min(1.0, sim + 0.05))
    assert r2.keep == [0, 1, 2]


def test_dedup_is_deterministic_and_fast_on_thousands():
    rng = random.Random(1)
    alphabet = "密码分组序列杂凑签名证书密钥协商认证加密解密随机数椭圆曲线模式填充攻击防护实现漏洞侧信道"
    texts = ["".join(rng.choice(alphabet) for _ in range(200)) for _ in range(3000)]
    texts += [t[:-3] + "附加的" for t in texts[:300]]  # 300 near duplicates
    t0 = time.perf_counter()
    r = deduplicate(texts, 0.9)
    dt = time.perf_counter() - t0
    assert len(r.keep) == 3000 and {d[0] for d in r.dropped} == set(range(3000, 3300))
    assert all(d[1] == d[0] - 3000 for d in r.dropped)
    assert deduplicate(texts, 0.9).keep == r.keep
    assert dt < 20, dt


def test_same_answer_under_different_instructions_is_a_duplicate():
    rng = random.Random(2)
    alphabet = "密码分组序列杂凑签名证书密钥协商认证加密解密随机数椭圆曲线模式填充攻击防护实现漏洞侧信道"
    answers = ["".join(rng.choice(alphabet) for _ in range(80)) for _ in range(15)]  # 15 distinct answers
    questions = [f"问题变体 {k}：请解释 GCM nonce 重用的后果？" for k in range(1966 // 15 + 1)]
    samples = [(questions[k], answers[i]) for k in range(len(questions)) for i in range(15)][:1966]
    r = deduplicate([dedup_text(q, a) for q, a in samples], 0.9)
    assert len(r.keep) == 15 and len(r.dropped) == 1966 - 15
    # the old key (instruction + answer) let every one of them through
    assert len(deduplicate([f"{q}\n{a}" for q, a in samples], 0.9, near=False).keep) == 1966


def test_short_answers_are_told_apart_by_their_question():
    assert dedup_text("SM4 安全吗？", "安全。") == "SM4 安全吗？\n安全。"
    assert dedup_text("问", BASE) == BASE
    r = deduplicate([dedup_text("ECB 安全吗？", "不安全。"), dedup_text("RC4 还能用吗？", "不安全。")], 0.9)
    assert r.keep == [0, 1]
