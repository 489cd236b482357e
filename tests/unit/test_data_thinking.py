"""<thinking> trees, errors with file/line/col/fix, Qwen3 rendering, attachment, quality and generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from thinktune.data.document import DocOptions, process_file, process_text
from thinktune.data.markdown_parse import block_tokens, code_line_ranges, heading_lines
from thinktune.data.thinking import (
    MAX_RESTATEMENT,
    assess_quality,
    check_format,
    clean_generated,
    parse_thinking,
    render_assistant,
    render_reasoning,
    split_assistant,
)
from thinktune.data.trace import evidence_reasoning

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "examples" / "crypto" / "corpus-bad"
CORPUS = ROOT / "examples" / "crypto" / "corpus"


def parse(text):
    toks = block_tokens(text)
    return parse_thinking(text, code_line_ranges(toks), heading_lines(toks))


NESTED = """# t

问：为什么？
<thinking>
外层分析。
<thinking>
第二层。
<thinking>
第三层。
</thinking>
</thinking>
外层结论。
</thinking>
答：因为如此。
<thinking>第二个块：验证。</thinking>
"""


def test_nested_tree_and_multiple_blocks():
    roots, errs = parse(NESTED)
    assert errs == []
    assert len(roots) == 2
    r = roots[0]
    assert (r.line, r.col, r.end_line, r.max_depth()) == (4, 1, 13, 3)
    assert r.parts[0] == "外层分析。" and r.parts[2] == "外层结论。"
    inner = r.parts[1]
    assert inner.depth == 2 and inner.parts[0] == "第二层。" and inner.parts[1].parts == ["第三层。"]
    assert roots[1].parts == ["第二个块：验证。"] and roots[1].col == 1


def test_render_keep_and_flatten():
    roots, _ = parse(NESTED)
    keep = render_reasoning(roots, "keep")
    assert keep == (
        "外层分析。\n\n<thinking>\n第二层。\n\n<thinking>\n第三层。\n</thinking>\n</thinking>\n\n外层结论。"
        "\n\n第二个块：验证。"
    )
    flat = render_reasoning(roots, "flatten")
    assert (
        flat == "1.1. 外层分析。\n1.2.1. 第二层。\n1.2.2.1. 第三层。\n1.3. 外层结论。\n2.1. 第二个块：验证。"
    )
    assert "<thinking>" not in flat


def test_sample_attachment_and_exact_qwen3_format():
    res = process_text(NESTED, "n.md", DocOptions())
    s = [x for x in res.samples if x.style == "marker"][0]
    assert s.type == "thinking" and s.thinking_method == "source" and not s.generated_thinking
    assert s.thinking_blocks == 2 and s.thinking_depth == 3
    content = s.messages()[-1]["content"]
    assert content.startswith("<think>\n外层分析。") and content.endswith("\n</think>\n\n因为如此。")
    assert content.count("<think>") == 1 and content.count("</think>") == 1
    assert check_format(content) is None
    assert split_assistant(content)[1] == "因为如此。"


def test_thinking_inside_code_is_code_not_a_tag():
    md = "# t\n\n说明 `<thinking>` 标签的用法：\n\n```xml\n<thinking>\n不是标签\n```\n\n    <thinking>\n\n正文。\n"
    roots, errs = parse(md)
    assert roots == [] and errs == []
    res = process_text(md, "c.md", DocOptions())
    assert not res.errors
    assert any("```xml\n<thinking>\n不是标签\n```" in s.answer for s in res.samples)


def test_attached_to_the_pair_it_sits_in():
    md = """# 文档

## 第一节

问：问题一？
答：回答一。

问：问题二？
<thinking>
分析：只属于问题二。
</thinking>
答：回答二。

## 为什么是第二节？

<thinking>
分析：属于标题问题。
</thinking>

因为如此。
"""
    res = process_text(md, "a.md", DocOptions())
    by_q = {s.question: s for s in res.samples}
    assert by_q["问题一？"].thinking_method == "template"
    assert by_q["问题二？"].reasoning == "分析：只属于问题二。"
    assert by_q["为什么是第二节？"].reasoning == "分析：属于标题问题。"


@pytest.mark.parametrize(
    "name,line,col,msg,fix",
    [
        (
            "unclosed-thinking.md",
            5,
            1,
            "<thinking> opened here is never closed",
            "add </thinking> after line 7",
        ),
        (
            "stray-close.md",
            5,
            1,
            "</thinking> has no matching <thinking>",
            "add <thinking> on its own line before line 4",
        ),
        (
            "misplaced-close.md",
            8,
            1,
            "contains the answer marker at line 7",
            "move </thinking> to after line 6",
        ),
        ("crossing-heading.md", 11, 1, "across the heading at line 8", "add </thinking> after line 6"),
        ("nested-unclosed.md", 5, 1, "never closed", "add </thinking> after line 10"),
    ],
)
def test_malformed_files_errors_with_line_col_and_fix(name, line, col, msg, fix):
    res = process_file(str(BAD / name), name, DocOptions())
    assert res.samples == []
    assert len(res.errors) == 1, res.errors
    err = res.errors[0]
    assert err.startswith(f"{name}:{line}:{col}: "), err
    assert msg in err and fix in err
    rej = res.rejects[0]
    assert (rej.source_file, rej.line, rej.col, rej.kind) == (name, line, col, "thinking")
    assert fix in rej.fix


def test_empty_thinking_block_rejects_the_sample_with_its_line():
    res = process_file(str(BAD / "empty-thinking.md"), "empty-thinking.md", DocOptions())
    rej = [r for r in res.rejects if "empty <thinking>" in r.reason]
    assert rej and rej[0].line == 5
    assert all(s.question != "为什么要对公钥做有效性检查？" for s in res.samples)


def test_quality_scores_good_high_and_bad_low():
    answer = "GCM 的 nonce 重复会泄露两段明文的异或，并能解出认证密钥 H，所以绝不能重复。"
    good = (
        "分析：问题是 nonce 重复的后果。\n首先，CTR 部分密钥流相同，明文异或泄露。\n然后，两个标签联立可解出认证密钥 H。\n"
        "结论：nonce 绝不能重复，这与答案一致。"
    )
    bad = "嗯。"
    qg = assess_quality(good, answer, ("GCM", "nonce"), ("nonce",))
    qb = assess_quality(bad, answer, ("GCM", "nonce"), ())
    assert qg.score >= 0.8 and qg.analysis and qg.steps and qg.verification
    assert qb.score < 0.5 and "no reasoning steps" in qb.problems
    # code in the answer must be analysed in the reasoning
    code_answer = "用法如下：\n\n```python\nok = hmac.compare_digest(a, b)\n```\n"
    assert assess_quality(good, code_answer).code_analysed is False
    assert assess_quality(good + "\n检查 compare_digest 的调用。", code_answer).code_analysed is True


def test_low_quality_source_thinking_is_a_warning_not_a_reject():
    md = "# t\n\n问：SM4 的分组长度？\n<thinking>\n嗯。\n</thinking>\n答：SM4 的分组长度是128位。\n"
    res = process_text(md, "q.md", DocOptions(min_quality=0.9))
    s = res.samples[0]
    assert s.thinking_method == "source" and s.quality["score"] < 0.9
    assert s.warnings and "minQuality" in s.warnings[0]


def test_rule_based_thinking_reasons_from_evidence_not_a_restatement():
    q, a = (
        "为什么要加盐？",
        "如果不加盐，相同口令得到相同杂凑值，所以彩虹表可以一次查出所有用户。盐需要 16 字节。",
    )
    r1 = evidence_reasoning(q, a, ["盐", "彩虹表"])
    assert r1 == evidence_reasoning(q, a, ["盐", "彩虹表"])
    assert r1.startswith("分析：这是一个原因类的问题") and "推理步骤：" in r1 and "\n验证：" in r1
    assert "“不加盐”" in r1 and "16 字节" in r1 and "因果" in r1  # the chunk's condition, figure, causality
    assert "彩虹表可以一次查出所有用户" not in r1  # no sentence of the answer is copied
    qa = assess_quality(r1, a, ("盐", "彩虹表"), ("盐", "彩虹表"), source=q + a)
    assert qa.score >= 0.8 and qa.restatement < 0.2 and qa.grounding == 1.0
    # the old template (the answer's sentences as steps) is caught as a restatement
    parrot = "分析：问题是为什么要加盐。\n推理步骤：\n1. " + a + "\n验证：结论回应了问题。"
    assert assess_quality(parrot, a).restatement > MAX_RESTATEMENT
    # code: what the code defines and calls, and the author's comments, are the evidence
    code_a = "```python\ndef encrypt(key, m):\n    nonce = os.urandom(12)  # 96 位 nonce，绝不能重复\n```\n\n说明。"
    rc = evidence_reasoning("这段代码做什么？", code_a, [])
    assert "`encrypt`" in rc and "`os.urandom`" in rc and "“96 位 nonce，绝不能重复”" in rc
    res = process_text("# 盐\n\n问：为什么要加盐？\n答：" + a + "\n", "s.md", DocOptions())
    s = res.samples[0]
    assert s.generated_thinking and s.thinking_method == "template" and s.row()["generated_thinking"] is True


def test_generate_none_rejects_samples_without_thinking():
    md = "# t\n\n问：A？\n<thinking>\n分析：有推理。然后得出结论。\n</thinking>\n答：有。\n\n问：B？\n答：没有推理。\n"
    res = process_text(md, "n.md", DocOptions(generate="none"))
    assert [s.question for s in res.samples] == ["A？"]
    rej = [r for r in res.rejects if "generate is 'none'" in r.reason]
    assert len(rej) == 1 and rej[0].line == 9


def test_render_assistant_and_format_checks():
    assert render_assistant(" r \n", "\nans ") == "<think>\nr\n</think>\n\nans"
    assert check_format("<think>\nr\n</think>\n\na") is None
    assert "start" in check_format("r</think>\n\na")
    assert check_format("<think>\n\n</think>\n\na") == "empty reasoning inside <think>"
    assert "only once" in check_format("<think>\nr <think>\n</think>\n\na")
    assert clean_generated("<think>\n推理\n</think>\n\n答案") == "推理"


def test_sample_corpus_has_nested_and_multiple_thinking_blocks():
    depth, multi, blocks = 0, 0, 0
    for f in sorted(CORPUS.glob("*.md")):
        res = process_file(str(f), f.name, DocOptions())
        blocks += res.thinking_blocks
        depth = max(depth, res.max_thinking_depth)
        multi += sum(1 for s in res.samples if s.thinking_blocks > 1)
    assert blocks >= 30 and depth >= 3 and multi >= 1


def test_teacher_model_generation(tmp_path):
    """thinking.generate=model: a real causal LM (the tiny random Qwen3) writes the reasoning; validated after."""
    tiny = pytest.importorskip("thinktune.tiny_model")
    pytest.importorskip("torch")
    from thinktune.data.build import build_dataset
    from thinktune.spec import DatasetBuildSpec

    model_dir = tiny.make_tiny_model(tmp_path / "teacher")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text(
        "# 盐\n\n问：为什么要加盐？\n答：盐让相同口令得到不同杂凑值。\n", encoding="utf-8"
    )

    class CharTok:
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": str(src)},
            "output": {"path": str(tmp_path / "o")},
            "thinking": {"generate": "model", "teacherModel": str(model_dir)},
            "validation": {"cutoffLen": 100000},
        }
    )
    import thinktune.data.teacher as th
    from thinktune.data.build import DatasetBuildError

    orig = th.LocalTeacher.__init__
    th.LocalTeacher.__init__ = lambda self, p, max_new_tokens=24: orig(self, p, max_new_tokens)
    try:
        rep = build_dataset(spec, src, tmp_path / "o", progress=False, tokenizer=CharTok())
    except DatasetBuildError as e:  # random weights may write nothing usable: that must be traced
        assert "teacher model produced no reasoning" in str(e)
        rep = None
    finally:
        th.LocalTeacher.__init__ = orig
    rows = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    data = (
        []
        if rep is None
        else sum(
            (json.loads((tmp_path / "o" / f"{s}.json").read_text()) for s in ("train", "val", "test")), []
        )
    )
    # random weights: either some reasoning (marked model-generated, quality-checked) or a traced reject
    assert len(data) + len(rows) == 1
    if data:
        assert data[0]["thinking_method"] == "model" and data[0]["generated_thinking"] is True
        assert rep["thinking"]["model"] == 1 and rep["counts"]["generated_thinking"] == 1
        assert data[0]["messages"][-1]["content"].startswith("<think>\n")
    else:
        assert "teacher model" in rows[0]["reason"] and rows[0]["source"] == "a.md:3"


def test_teacher_generated_thinking_is_marked_and_validated(tmp_path, monkeypatch):
    """The model path's bookkeeping with a teacher whose output we control (no weights needed)."""
    import thinktune.data.build as b
    from thinktune.spec import DatasetBuildSpec

    class FakeTeacher:
        def __init__(self, path):
            assert path == "some/teacher"

        def reasoning(self, question, answer, source=None):
            return (
                "嗯"
                if "B" in question
                else "分析：问题问盐。首先盐让杂凑不同；然后彩虹表失效。结论：盐让相同口令得到不同杂凑值。"
            )

    monkeypatch.setattr(b, "make_teacher", lambda path, name=None: FakeTeacher(path))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text(
        "# 盐\n\n问：A 为什么要加盐？\n答：盐让相同口令得到不同杂凑值。\n\n"
        "问：B 盐要保密吗？\n答：盐不需要保密，但要随机。\n",
        encoding="utf-8",
    )

    class CharTok:
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": "x"},
            "output": {"path": "y"},
            "thinking": {"generate": "model", "teacherModel": "some/teacher"},
        }
    )
    rep = b.build_dataset(spec, src, tmp_path / "o", progress=False, tokenizer=CharTok())
    data = sum((json.loads((tmp_path / "o" / f"{s}.json").read_text()) for s in ("train", "val", "test")), [])
    assert {d["thinking_method"] for d in data} == {"model"} and all(d["generated_thinking"] for d in data)
    assert rep["counts"]["generated_thinking"] == 1 and rep["thinking"]["model"] == 1
    # the quality gate rejects the teacher's useless output ('嗯'), traced with its scores
    rej = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rej if r["kind"] == "thinking_quality"] == ["a.md:6"]
    assert "minQuality" in rej[0]["reason"] and rep["thinking"]["rejected_by_quality_gate"] == 1
