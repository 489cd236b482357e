"""Markdown parsing from markdown-it-py's token stream: sections, components, line numbers, byte-exact code."""

from __future__ import annotations

import pytest
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


_LINKS = "\n".join(f"- [第 {i} 篇笔记](https://blog.example.org/post-{i}.html)" for i in range(12))


@pytest.mark.parametrize(
    "text",
    [
        f"# 参考\n\n{_LINKS}\n",
        f"# 参考\n\n{_LINKS}\n\n段落\n",
        _LINKS,
        _LINKS + "\n\n",
        f"前文\n\n{_LINKS}\n\n  缩进的续行属于最后一项\n",
        f"```\n\n{_LINKS}\n\n```\n",
        f"~~~\n{_LINKS}\n\n~~~\n",
        f"<div>\n\n{_LINKS}\n</div>\n",
        f"<!--\n\n{_LINKS}\n\n-->\n",
        f"- 前一个列表\n\n{_LINKS}\n",
        f"{_LINKS}\n\n- 同一标记的后续项\n",
        f"1. 有序\n\n{_LINKS}\n\n+ 另一标记\n",
        f"> 引用\n\n{_LINKS}\n===\n",
        "\n".join(f"- 第 {i} 项 **粗体** 文本" for i in range(12)) + "\n\n段落\n",
    ],
)
def test_link_list_shortcut_gives_markdown_its_own_tokens(text):
    """The one-line-item shortcut of block_tokens must be invisible: the same tokens as markdown-it's full
    parse, including where the shortcut must not apply (inside fences/HTML, lists that join, lazy lines)."""
    from thinktune.data.markdown_parse import markdown_parser

    def key(tokens):
        return [(t.type, t.map, t.level, t.content, t.markup, t.hidden, t.tag, t.nesting) for t in tokens]

    assert key(block_tokens(text)) == key(markdown_parser().parse(text))
