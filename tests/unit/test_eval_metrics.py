"""Evaluation's text metrics on known strings (no model; thinktune.evaluate.metrics)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sacrebleu")
pytest.importorskip("rouge_chinese")

from thinktune.data.glossary import term_aliases  # noqa: E402
from thinktune.evaluate import metrics as M  # noqa: E402

REF = "<think>\n用户问SM2。SM2基于椭圆曲线。\n</think>\n\nSM2是国密非对称算法，基于椭圆曲线，用于数字签名。因此SM2可替代RSA。"


def test_bleu_rouge_identical_and_disjoint():
    text = "SM2是国密非对称算法，基于椭圆曲线，用于数字签名。"
    assert M.bleu(text, text) == pytest.approx(100.0)
    assert M.rouge_l(text, text) == pytest.approx(1.0, abs=1e-6)
    assert M.char_accuracy(text, text) == 1.0
    other = "今天天气很好我们去公园散步吧"
    assert M.bleu(other, text) < 1.0
    assert M.rouge_l(other, text) < 0.05
    assert M.char_accuracy(other, text) < 0.2
    assert M.corpus_bleu([text, text], [text, text]) == pytest.approx(100.0)
    assert M.bleu("", text) == 0.0 and M.rouge_l("", text) == 0.0


def test_char_accuracy_is_one_minus_cer():
    assert M.char_accuracy("密码学", "密码学家") == pytest.approx(0.75)
    assert M.char_accuracy("密 码\n学", "密码学") == 1.0  # whitespace ignored
    assert M.edit_distance("kitten", "sitting") == 3


def test_split_thinking_and_compliance():
    assert M.split_thinking(REF)[2] is True
    think, ans, closed = M.split_thinking("分析。\n</think>\n\n答案。<|im_end|>")  # pre-filled <think>
    assert (think, ans, closed) == ("分析。", "答案。", True)
    assert M.thinking_compliant("x</think>\n\n答案")
    assert not M.thinking_compliant("<think>\n想了很久但被截断")
    assert not M.thinking_compliant("<think>\n想</think>\n\n  ")
    assert M.split_thinking("只有答案") == ("只有答案", "", False)


def test_term_matching_counts():
    m = M.TermMatcher({"SM2": [], "AES": [], "椭圆曲线": ["橢圓曲線"], "数字签名": [], "RSA": []})
    assert m.find("aes-gcm 与 SM2 和橢圓曲線") == {"AES", "SM2", "椭圆曲线"}
    assert m.find("CHAES") == set()  # latin terms need word boundaries
    ref_terms, hits = M.term_hits("SM2用椭圆曲线", "SM2基于椭圆曲线，用于数字签名，可替代RSA", m)
    assert ref_terms == {"SM2", "椭圆曲线", "数字签名", "RSA"} and hits == {"SM2", "椭圆曲线"}
    assert M.term_accuracy("SM2用椭圆曲线", "SM2基于椭圆曲线，用于数字签名，可替代RSA", m) == 0.5
    assert M.term_accuracy("任何", "没有术语", m) is None


def test_glossary_loads_real_terms():
    g = term_aliases()
    assert len(g) > 100 and "SM2" in g
    assert "SM4" in M.TermMatcher(g).find("SMS4 分组密码")  # alias


def test_concept_accuracy_uses_conclusion():
    m = M.TermMatcher(["SM2", "RSA"])
    ref = "SM2是国密算法。因此SM2可替代RSA。"
    assert M.conclusion_sentence(ref) == "因此SM2可替代RSA。"
    assert M.concept_accuracy(ref, ref, m) == 1.0
    half = M.concept_accuracy("SM2和RSA都很好。", ref, m)  # all terms, weak conclusion
    assert 0.5 <= half < 1.0
    assert M.concept_accuracy("无关内容", ref, m) < 0.1


def test_score_and_aggregate_separate_parts():
    m = M.TermMatcher(term_aliases())
    pred_good = "用户问SM2。SM2基于椭圆曲线。\n</think>\n\nSM2是国密非对称算法，基于椭圆曲线，用于数字签名。因此SM2可替代RSA。"
    pred_bad_answer = "用户问SM2。SM2基于椭圆曲线。\n</think>\n\n不知道。"
    s1 = M.score_prediction(pred_good, REF, m)
    s2 = M.score_prediction(pred_bad_answer, REF, m)
    assert s1["answer"]["rougeL"] == pytest.approx(1.0, abs=1e-6) and s1["thinkingCompliant"]
    assert s2["thinking"]["bleu"] == pytest.approx(100.0) and s2["answer"]["bleu"] < 5
    agg = M.aggregate_scores([s1, s2], [pred_good, pred_bad_answer], [REF, REF])
    assert agg["thinking"]["rougeL"] == pytest.approx(1.0, abs=1e-6)
    assert 0.4 < agg["answer"]["rougeL"] < 0.6
    assert agg["thinkingCompliance"] == 1.0
    n_terms = len(s1["answerTerms"]["reference"])
    assert agg["answer"]["termAccuracy"] == pytest.approx(0.5)  # micro: n hits of 2n
    assert n_terms >= 3
    table = M.per_term_table([s1, s2])
    assert all(r["references"] == 2 and r["hits"] == 1 for r in table)


def test_load_samples_formats(tmp_path):
    msgs = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "<think>\nT\n</think>\n\nA"},
            ]
        }
    ]
    conv = [
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "system": "S"}
    ]
    alpaca = [{"instruction": "Q", "input": "x", "output": "A"}]
    (tmp_path / "a.json").write_text(json.dumps(msgs))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in conv))
    (tmp_path / "c.json").write_text(json.dumps(alpaca))
    (a,) = M.load_samples(tmp_path / "a.json")
    assert a.messages[0]["role"] == "system" and a.question == "Q" and a.reference.endswith("A")
    (b,) = M.load_samples(tmp_path / "b.jsonl")
    assert [m["role"] for m in b.messages] == ["system", "user"] and b.reference == "A"
    (c,) = M.load_samples(tmp_path / "c.json")
    assert c.question == "Q\nx"


def test_text_metrics_import_without_torch():
    """The pure side stays pure: scoring generated text needs no torch (the model side is evaluate.inference)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import thinktune.evaluate.metrics\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
