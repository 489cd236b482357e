"""Q&A detection in every style, on real markdown parsed by markdown-it-py."""

from __future__ import annotations

from pathlib import Path

import pytest
from thinktune.data.document import DocOptions, process_text
from thinktune.data.markdown_parse import parse_markdown
from thinktune.data.qa import detect_pairs, is_question

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "crypto" / "corpus"


def pairs_of(md: str):
    p = parse_markdown(md)
    return detect_pairs(p, p.title or "doc")


@pytest.mark.parametrize(
    "q,a", [("问：", "答："), ("问:", "答:"), ("Q:", "A:"), ("Q：", "A："), ("**问：**", "**答：**")]
)
def test_marker_pairs_all_colon_widths(q, a):
    md = f"# 标题\n\n{q}SM4 的分组长度是多少？\n{a}128 位。\n\n补充说明一段。\n\n{q}SM3 输出多长？\n\n{a}256 位。\n"
    pairs, warns = pairs_of(md)
    marker = [p for p in pairs if p.style == "marker"]
    assert [(p.question, p.answer_markdown(), p.line) for p in marker] == [
        ("SM4 的分组长度是多少？", "128 位。\n\n补充说明一段。", 3),
        ("SM3 输出多长？", "256 位。", 8),
    ]
    assert not warns


def test_question_heading_answered_by_section_text():
    pairs, _ = pairs_of(
        "# 文档\n\n## 为什么 ECB 不安全？\n\n相同明文分组得到相同密文。\n\n## 如何选择模式\n\n优先选择 GCM。\n"
    )
    qh = [p for p in pairs if p.style == "question_heading"]
    assert [(p.question, p.answer_markdown(), p.line) for p in qh] == [
        ("为什么 ECB 不安全？", "相同明文分组得到相同密文。", 3),
        ("如何选择模式", "优先选择 GCM。", 7),
    ]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("什么是 SM2", True),
        ("为什么要加盐", True),
        ("是否需要 IV", True),
        ("How does GCM work?", True),
        ("SM4 的密钥扩展", False),
        ("整体结构", False),
        ("**这样对吗？**", True),
    ],
)
def test_is_question(text, expected):
    assert is_question(text) is expected


def test_faq_list_styles():
    md = """# FAQ

- **C1C3C2 是什么？**
  密文拼接顺序。
- 什么是 CRL？

  证书吊销列表。

  它由 CA 签发。
- 附注：以上内容适用于一般场景，具体以标准为准。
1. 问：盐要保密吗？
   答：不需要。
- 这不是问题
"""
    pairs, _ = pairs_of(md)
    faq = [p for p in pairs if p.style == "faq_list"]
    assert [(p.question, p.answer_markdown(), p.line) for p in faq[:2]] == [
        ("C1C3C2 是什么？", "密文拼接顺序。", 3),
        ("什么是 CRL？", "证书吊销列表。\n\n它由 CA 签发。", 5),
    ]
    # the ordered list is a separate FAQ list; the question marker and answer marker are stripped
    assert [(p.question, p.answer_markdown()) for p in faq[2:]] == [("盐要保密吗？", "不需要。")]
    # a non-question item of a FAQ list is not lost: it goes to the section sample
    section = [p for p in pairs if p.style == "section"]
    assert section and "附注：以上内容适用于一般场景" in section[0].answer_markdown()


def test_faq_item_without_answer_is_a_problem_not_silently_dropped():
    pairs, _ = pairs_of("# F\n\n- 什么是 KDF？\n  派生密钥的函数。\n- 什么是 info？\n")
    probs = [p for p in pairs if p.problems]
    assert len(probs) == 1 and probs[0].line == 5 and "no nested answer" in probs[0].problems[0]


def test_explain_section_and_explain_code_for_documents_without_qa():
    md = """# 常数时间比较

普通比较在第一个不同字节处返回，耗时会泄露信息。

下面的代码使用标准库做常数时间比较：

```python
import hmac
ok = hmac.compare_digest(a, b)
```

`compare_digest` 的耗时只取决于长度，与内容无关，所以不会泄露前缀。
"""
    pairs, _ = pairs_of(md)
    styles = [p.style for p in pairs]
    assert styles.count("section") == 1 and styles.count("code") == 1
    code = next(p for p in pairs if p.style == "code")
    # the code is in the instruction, byte-exact; the explanation is the text before and after it
    assert "```python\nimport hmac\nok = hmac.compare_digest(a, b)\n```" in code.question
    assert code.answer_markdown().startswith("下面的代码使用标准库")
    assert "只取决于长度" in code.answer_markdown()
    section = next(p for p in pairs if p.style == "section")
    assert "常数时间比较" in section.question
    assert "```python\nimport hmac" in section.answer_markdown()  # code stays attached to its explanation


def test_answer_marker_without_question_warns():
    pairs, warns = pairs_of("# t\n\n答：没有问题的回答，单独一段话。\n")
    assert warns and warns[0][0] == 3 and "without a preceding question" in warns[0][1]
    assert any(p.style == "section" for p in pairs)  # kept as section text


def test_heading_context_in_system_prompt_and_custom_system_prompt():
    md = "# 国密\n\n## SM3\n\n问：SM3 输出多长？\n答：256 位。\n"
    s = [x for x in process_text(md, "d.md", DocOptions()).samples if x.style == "marker"][0]
    assert "国密 › SM3" in s.system
    s2 = process_text(md, "d.md", DocOptions(system_prompt="你是助手。")).samples[0]
    assert s2.system == "你是助手。"


def test_every_style_occurs_in_the_sample_corpus():
    styles = set()
    for f in sorted(CORPUS.glob("*.md")):
        res = process_text(f.read_text(encoding="utf-8"), f.name, DocOptions())
        assert not res.errors, res.errors
        styles |= {s.style for s in res.samples}
    assert styles == {"marker", "faq_list", "question_heading", "section", "code"}
