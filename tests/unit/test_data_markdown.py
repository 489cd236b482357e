"""Markdown parsing from markdown-it-py's token stream: sections, components, line numbers, byte-exact code."""

from __future__ import annotations

from thinktune.data.markdown_parse import block_tokens, heading_lines, parse_markdown, unclosed_fences

DOC = """# 标题一

第一段,
第二行。

- 项目甲
- 项目乙
  继续

```python
x = 1\t  # tab and trailing spaces   
if x:
    print("<thinking>")
```

## 子标题

> 引用一句

| a | b |
|---|---|
| 1 | 2 |

### 三级

    indented code
"""


def test_sections_headings_and_paths():
    p = parse_markdown(DOC)
    assert [(s.level, s.title, s.line) for s in p.sections] == [
        (1, "标题一", 1),
        (2, "子标题", 16),
        (3, "三级", 24),
    ]
    assert p.sections[2].path == ["标题一", "子标题", "三级"]
    assert p.title == "标题一"
    assert p.sections[0].end_line == 15


def test_components_kinds_and_line_numbers():
    p = parse_markdown(DOC)
    s1 = p.sections[0].components
    assert [(c.kind, c.line, c.end_line) for c in s1] == [
        ("paragraph", 3, 4),
        ("list", 6, 8),
        ("code", 10, 14),
    ]
    assert s1[0].text == "第一段,\n第二行。"
    assert [it.head for it in s1[1].items] == ["项目甲", "项目乙\n继续"]
    assert [c.kind for c in p.sections[1].components] == ["blockquote", "table"]
    assert p.sections[2].components[0].kind == "code"


def test_code_blocks_are_byte_exact():
    p = parse_markdown(DOC)
    code = p.sections[0].components[2]
    assert code.lang == "python"
    assert code.text == 'x = 1\t  # tab and trailing spaces   \nif x:\n    print("<thinking>")\n'
    assert code.markdown() == "```python\n" + code.text + "```"
    ind = p.sections[2].components[0]
    assert ind.text == "indented code\n"


def test_code_with_backticks_gets_a_longer_fence():
    p = parse_markdown("# t\n\n````md\n```\ninner\n```\n````\n")
    c = p.sections[0].components[0]
    assert c.text == "```\ninner\n```\n"
    assert c.markdown().startswith("````md\n") and c.markdown().endswith("\n````")
    assert parse_markdown(c.markdown()).sections[0].components[0].text == c.text


def test_heading_lines_and_unclosed_fences():
    text = "# a\n\ntext\n\n```go\nfunc f() {}\n\n## not a heading\n"
    toks = block_tokens(text)
    assert heading_lines(toks) == {1}
    assert unclosed_fences(toks, text.split("\n")) == [(5, "```")]
    closed = "```\nx\n```\n"
    assert unclosed_fences(block_tokens(closed), closed.split("\n")) == []


def test_setext_heading_and_preamble():
    p = parse_markdown("引言段落。\n\n标题\n====\n\n正文。\n")
    assert p.sections[0].level == 0 and p.sections[0].components[0].text == "引言段落。"
    assert p.sections[1].title == "标题" and p.sections[1].line == 3


def test_reusing_tokens_after_normalisation_equals_reparsing():
    """document.py parses once and slices the normalised text with the original token map; that must give the
    same sections/components as parsing the normalised text again, for every document of the corpus."""
    from pathlib import Path

    from thinktune.data.chinese import Normalizer
    from thinktune.data.markdown_parse import code_line_ranges

    n = Normalizer()
    corpus = Path(__file__).resolve().parents[2] / "examples" / "crypto" / "corpus"
    for f in sorted(corpus.glob("*.md")):
        text = f.read_text(encoding="utf-8")
        toks = block_tokens(text)
        norm = n.markdown(text, code_line_ranges(toks))
        assert norm.count("\n") == text.count("\n"), f.name
        reused = parse_markdown(norm, toks, inline=n.inline)
        fresh = parse_markdown(norm)
        assert [(s.title, s.line, s.path) for s in reused.sections] == [
            (s.title, s.line, s.path) for s in fresh.sections
        ]
        for a, b in zip(reused.sections, fresh.sections, strict=True):
            assert [(c.kind, c.line, c.end_line, c.text) for c in a.components] == [
                (c.kind, c.line, c.end_line, c.text) for c in b.components
            ], (f.name, a.title)
            assert [[(i.head, i.body) for i in c.items] for c in a.components] == [
                [(i.head, i.body) for i in c.items] for c in b.components
            ], (f.name, a.title)
