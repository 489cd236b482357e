"""Long sections are chunked at block boundaries (never inside code, math, a table or a thinking block), and an
unclosed code fence is closed at the next heading with a warning instead of rejecting the document."""

from __future__ import annotations

from thinktune.data.document import DocOptions, process_text


def _doc() -> str:
    para = "差分分析统计明文对的差分在各轮中如何传播，并据此区分正确的子密钥。" * 2
    math = "$$\nE(x) = x \\oplus k\n\n\\Delta y = S(x) \\oplus S(x \\oplus \\Delta)\n$$"
    code = "```python\n" + "\n".join(f"x{i} = sbox[x{i - 1}]  # 第 {i} 轮" for i in range(1, 12)) + "\n```"
    table = "| 输入差分 | 输出差分 | 概率 |\n|---|---|---|\n" + "\n".join(
        f"| {i} | {i * 3} | 1/4 |" for i in range(8)
    )
    think = "<thinking>\n先看差分分布表。\n\n再把高概率差分连起来。\n</thinking>"
    return "\n\n".join(
        [
            "# 差分分析",
            "## 过程",
            para,
            math,
            para,
            "下面的代码计算各轮差分：",
            code,
            para,
            table,
            think,
            para,
        ]
    )


def test_long_section_is_chunked_between_blocks_only():
    res = process_text(_doc(), "d.md", DocOptions(max_answer_chars=300))
    chunks = [s for s in res.samples if s.style == "section"]
    assert len(chunks) >= 3 and all("部分）" in s.question for s in chunks)
    joined = "\n\n".join(s.answer for s in chunks)
    for s in chunks:
        assert s.answer.count("$$") % 2 == 0  # math never cut
        assert s.answer.count("```") % 2 == 0  # code never cut
        assert not s.answer.rstrip().endswith(("：", ":"))  # a lead-in stays with what it introduces
        rows = [ln for ln in s.answer.split("\n") if ln.startswith("| ")]
        assert not rows or len(rows) == 9  # the table (header + 8 rows) whole or absent
    assert joined.count("差分分析统计明文对") == 8  # nothing lost, nothing repeated
    # the thinking block is kept whole, on the chunk it sits in
    with_thinking = [s for s in chunks if s.thinking_method == "source"]
    assert len(with_thinking) == 1 and "先看差分分布表。" in with_thinking[0].reasoning
    assert "再把高概率差分连起来。" in with_thinking[0].reasoning


def test_section_with_one_oversized_block_stays_whole():
    table = "| a | b |\n|---|---|\n" + "\n".join(f"| {i:040d} | x |" for i in range(40))
    res = process_text(f"# T\n\n## 表\n\n这张表很长。\n\n{table}\n", "d.md", DocOptions(max_answer_chars=300))
    sections = [s for s in res.samples if s.style == "section"]
    assert len(sections) == 1 and "部分" not in sections[0].question and "39 | x |" in sections[0].answer


def test_unclosed_fence_closed_at_next_heading_rest_kept():
    md = "# 比较\n\n下面的代码用常数时间比较两个标签：\n\n```python\nok = hmac.compare_digest(a, b)\n\n## 为什么\n\n因为 == 会提前返回，泄露前缀长度。\n"
    res = process_text(md, "f.md", DocOptions())
    assert not res.errors and not res.rejects
    assert any(
        w.startswith("f.md:5:1: code fence ``` opened here is never closed; closed it at line 7")
        for w in res.warnings
    )
    qs = {s.question: s.answer for s in res.samples}
    assert qs.get("为什么") == "因为 == 会提前返回，泄露前缀长度。"
    assert any("ok = hmac.compare_digest(a, b)\n```" in a for a in qs.values())
