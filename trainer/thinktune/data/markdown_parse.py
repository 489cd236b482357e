"""Markdown → sections → components, from markdown-it-py's token stream (never regexes over raw text).

A document is a list of :class:`Section` (one per heading, plus a preamble before the first heading). Each
section holds :class:`Component` blocks in document order: paragraphs, lists (with their items), code
blocks (byte-exact content + info string), block quotes, tables, html. Every component carries 1-based source
line numbers taken from ``token.map``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from markdown_it import MarkdownIt
from markdown_it.token import Token


@cache
def markdown_parser() -> MarkdownIt:
    """Block-level CommonMark (+tables). Inline parsing is switched off: we only need each inline token's
    ``content`` (its raw markdown), and skipping the inline pass halves the parse time."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").disable("inline")


def block_tokens(text: str) -> list[Token]:
    """Block tokens of ``text``. Long runs of one-line bullet items (a page's link list, a 200-entry
    reference list) cost markdown-it a full recursive block parse per item, most of a real page's parse
    time; such runs are parsed as one plain paragraph instead and rebuilt as the tight list tokens markdown-it
    would have produced. A run is only taken when its bounds leave no doubt, and only when the parse shows
    it stayed a top-level paragraph (not inside a fence or an HTML block); otherwise the text is parsed as
    is."""
    lines = text.split("\n")
    runs = _simple_item_runs(lines)
    if not runs:
        return markdown_parser().parse(text)
    shadow = list(lines)
    for a, b in runs:
        for i in range(a, b):
            shadow[i] = lines[i][2:]
    tokens = markdown_parser().parse("\n".join(shadow))
    starts = {a: b for a, b in runs}
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        m = t.map
        if t.type == "paragraph_open" and t.level == 0 and m and starts.get(m[0]) == m[1]:
            out.extend(_tight_list_tokens(lines, m[0], m[1]))
            i += 3  # paragraph_open, inline, paragraph_close
            continue
        if t.type == "paragraph_open" and m and m[0] in starts:
            return markdown_parser().parse(text)  # the run ended up somewhere else: no shortcut
        out.append(t)
        i += 1
    if any(t.map and t.type in ("fence", "code_block", "html_block") and _covers(t.map, runs) for t in out):
        return markdown_parser().parse(text)
    return out


MIN_FAST_ITEMS = 8
# '- text' whose text cannot start another block (heading, quote, fence, hr, list, html, table, reference,
# indented code) and cannot end the paragraph it is parsed as
_SIMPLE_ITEM = re.compile(r"^([-*+]) (?![\s#>`~|<:=*+_\-]|\d+[.)]|\[[^\]]*\]:)\S")


def _covers(m: list[int], runs: list[tuple[int, int]]) -> bool:
    return any(m[0] < b and a < m[1] for a, b in runs)


def _simple_item_runs(lines: list[str]) -> list[tuple[int, int]]:
    """0-based [start, end) line runs of at least MIN_FAST_ITEMS one-line items with the same marker, with a
    blank line (or the document's edge) on both sides, not continuing a list before them, and not continued
    by an indented or same-marker line after them (either would make markdown-it join them into one list)."""
    runs: list[tuple[int, int]] = []
    i, n = 0, len(lines)
    while i < n:
        m = _SIMPLE_ITEM.match(lines[i])
        if not m or (i > 0 and lines[i - 1].strip()):
            i += 1
            continue
        j = i + 1
        while j < n and lines[j].startswith(m.group(1) + " ") and _SIMPLE_ITEM.match(lines[j]):
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        after = next((lines[k] for k in range(j, n) if lines[k].strip()), "")
        joins_before = before[:1] in (" ", "\t", "-", "*", "+") or re.match(r"\d+[.)]", before)
        joins_after = after[:1] in (" ", "\t", m.group(1))
        if (
            j - i >= MIN_FAST_ITEMS
            and (j == n or not lines[j].strip())
            and not joins_before
            and not joins_after
        ):
            runs.append((i, j))
        i = j
    return runs


def _tight_list_tokens(lines: list[str], a: int, b: int) -> list[Token]:
    """The tokens markdown-it emits for a tight bullet list of one-line items on lines [a, b)."""
    marker = lines[a][0]
    # like markdown-it, the list (and its last item) own the blank lines after it when more text follows
    n_lines = len(lines) - (lines[-1] == "")  # markdown-it's line count: a final newline ends a line
    end = next((k for k in range(b, n_lines) if lines[k].strip()), max(b, n_lines))
    out = [Token("bullet_list_open", "ul", 1, map=[a, end], level=0, markup=marker, block=True)]
    for i in range(a, b):
        item_end = end if i == b - 1 else i + 1
        out += [
            Token("list_item_open", "li", 1, map=[i, item_end], level=1, markup=marker, block=True),
            Token("paragraph_open", "p", 1, map=[i, i + 1], level=2, block=True, hidden=True),
            Token("inline", "", 0, map=[i, i + 1], level=3, content=lines[i][2:].strip(), block=True),
            Token("paragraph_close", "p", -1, level=2, block=True, hidden=True),
            Token("list_item_close", "li", -1, level=1, markup=marker, block=True),
        ]
    out.append(Token("bullet_list_close", "ul", -1, level=0, markup=marker, block=True))
    return out


def heading_lines(tokens: list[Token]) -> set[int]:
    """1-based lines of headings (ATX and setext; setext headings include their underline)."""
    out: set[int] = set()
    for t in tokens:
        if t.type == "heading_open" and t.map:
            out.update(range(t.map[0] + 1, t.map[1] + 1))
    return out


def unclosed_fences(tokens: list[Token], lines: list[str]) -> list[tuple[int, str]]:
    """(1-based line, markup) of fenced code blocks that are never closed (they run to the end)."""
    out: list[tuple[int, str]] = []
    for t in tokens:
        if t.type == "fence" and t.map:
            last = lines[t.map[1] - 1].strip() if t.map[1] - 1 < len(lines) else ""
            closed = (
                t.map[1] - 1 > t.map[0]
                and bool(last)
                and set(last) == {t.markup[0]}
                and len(last) >= len(t.markup)
            )
            if not closed:
                out.append((t.map[0] + 1, t.markup))
    return out


@dataclass
class ListItem:
    head: str  # inline markdown of the item's first paragraph
    body: str  # markdown of the rest of the item (nested answer), dedented
    line: int  # 1-based first line
    end_line: int  # 1-based last line
    head_end_line: int


@dataclass
class Component:
    kind: str  # paragraph | list | code | blockquote | table | html
    text: str  # markdown source of the block (for code: the code itself, byte-exact)
    line: int
    end_line: int
    lang: str = ""  # code: info string
    fence: str = "```"  # code: fence marker used when re-emitting
    items: list[ListItem] = field(default_factory=list)  # list items
    ordered: bool = False

    def markdown(self) -> str:
        """The block as markdown (code re-emitted as a fenced block with the original content)."""
        if self.kind == "code":
            fence = self.fence
            while fence in self.text:  # content that itself contains ``` needs a longer fence
                fence += fence[0]
            body = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
            return f"{fence}{self.lang}\n{body}{fence}"
        return self.text


@dataclass
class Section:
    level: int  # 0 = preamble before the first heading
    title: str
    path: list[str]  # titles of enclosing headings, outermost first, including this one
    line: int  # heading line (1-based); preamble: 1
    end_line: int  # last line of the section's own content (before the next heading)
    components: list[Component] = field(default_factory=list)


@dataclass
class ParsedMarkdown:
    sections: list[Section]
    code_lines: list[tuple[int, int]]  # 0-based [start, end) line ranges of code blocks
    title: str  # first level-1 heading (or first heading)
    unclosed_fences: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, fence markup)


def code_line_ranges(tokens: list[Token]) -> list[tuple[int, int]]:
    """0-based, end-exclusive line ranges of fenced and indented code blocks (at any nesting depth)."""
    return [tuple(t.map) for t in tokens if t.type in ("fence", "code_block") and t.map]  # type: ignore[misc]


def _dedent(lines: list[str]) -> list[str]:
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
    cut = min(indents) if indents else 0
    return [ln[cut:] if len(ln) >= cut else ln.lstrip(" ") for ln in lines]


def _close_index(tokens: list[Token], i: int) -> int:
    """Index of the closing token matching the opening token at i."""
    level = tokens[i].level
    close = tokens[i].type.replace("_open", "_close")
    j = i + 1
    while j < len(tokens) and not (tokens[j].type == close and tokens[j].level == level):
        j += 1
    return j


def _list_items(
    tokens: list[Token], start: int, end: int, lines: list[str], ifn=lambda x: x
) -> list[ListItem]:
    items: list[ListItem] = []
    item_level = tokens[start].level + 1
    i = start + 1
    while i < end:
        t = tokens[i]
        if t.type == "list_item_open" and t.level == item_level:
            j = _close_index(tokens, i)
            imap = t.map or [0, 0]
            head = ""
            head_end = imap[0] + 1
            # first child block of the item
            k = i + 1
            if k < j and tokens[k].type == "paragraph_open":
                head = ifn(tokens[k + 1].content)
                head_end = (tokens[k].map or imap)[1]
                body_lines = lines[head_end : imap[1]]
            else:
                body_lines = lines[imap[0] + 1 : imap[1]]
                first = lines[imap[0]] if imap[0] < len(lines) else ""
                head = first.lstrip(" ").lstrip("-*+0123456789.)").strip()
            body = "\n".join(_dedent(body_lines)).strip("\n")
            # trailing blank lines belong to the list, not the item
            end_line = imap[1]
            while end_line > imap[0] + 1 and not lines[end_line - 1].strip():
                end_line -= 1
            items.append(
                ListItem(head=head, body=body, line=imap[0] + 1, end_line=end_line, head_end_line=head_end)
            )
            i = j + 1
        else:
            i += 1
    return items


def _src(lines: list[str], m: list[int] | None) -> tuple[str, int, int]:
    if not m:
        return "", 0, 0
    seg = lines[m[0] : m[1]]
    while seg and not seg[-1].strip():
        seg = seg[:-1]
    return "\n".join(_dedent(seg)), m[0] + 1, m[0] + max(len(seg), 1)


def parse_markdown(text: str, tokens: list[Token] | None = None, inline=None) -> ParsedMarkdown:
    """Parse markdown text into sections and components with 1-based line numbers.

    ``tokens`` may come from parsing a different text with the *same line structure* (e.g. the text before a
    line-preserving normalisation): component text is always sliced from ``text`` by ``token.map``; inline
    contents taken from tokens (heading titles, list-item heads) then go through ``inline`` (e.g. the same
    normaliser) so they match ``text``. This saves a second parse.
    """
    if tokens is None:
        tokens = block_tokens(text)
    lines = text.split("\n")
    ifn = inline or (lambda x: x)
    sections: list[Section] = [Section(level=0, title="", path=[], line=1, end_line=len(lines))]
    stack: list[tuple[int, str]] = []
    title = ""
    i = 0
    n = len(tokens)
    while i < n:
        t = tokens[i]
        if t.level != 0:
            i += 1
            continue
        typ = t.type
        if typ == "heading_open":
            level = int(t.tag[1:])
            heading = ifn(tokens[i + 1].content.strip())
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
            line = (t.map or [0])[0] + 1
            sections[-1].end_line = line - 1
            sections.append(
                Section(
                    level=level, title=heading, path=[h for _, h in stack], line=line, end_line=len(lines)
                )
            )
            if not title and (level == 1 or len(sections) == 2):
                title = heading
            i = _close_index(tokens, i) + 1
            continue
        sec = sections[-1]
        if typ == "paragraph_open":
            j = _close_index(tokens, i)
            src, a, b = _src(lines, t.map)
            sec.components.append(Component("paragraph", src, a, b))
            i = j + 1
        elif typ in ("bullet_list_open", "ordered_list_open"):
            j = _close_index(tokens, i)
            src, a, b = _src(lines, t.map)
            comp = Component("list", src, a, b, ordered=typ == "ordered_list_open")
            comp.items = _list_items(tokens, i, j, lines, ifn)
            sec.components.append(comp)
            i = j + 1
        elif typ in ("fence", "code_block"):
            m = t.map or [0, 0]
            fence = t.markup if typ == "fence" else "```"
            if fence and fence[0] == "~":
                fence = "~~~"
            elif len(fence) < 3:
                fence = "```"
            sec.components.append(
                Component(
                    "code",
                    t.content,
                    m[0] + 1,
                    m[1],
                    lang=t.info.strip(),
                    fence=fence if typ == "fence" else "```",
                )
            )
            i += 1
        elif typ in ("blockquote_open", "table_open"):
            j = _close_index(tokens, i)
            src, a, b = _src(lines, t.map)
            sec.components.append(Component(typ.replace("_open", ""), src, a, b))
            i = j + 1
        elif typ == "html_block":
            src, a, b = _src(lines, t.map)
            if src.strip():
                sec.components.append(Component("html", src, a, b))
            i += 1
        else:  # hr and anything else: no content
            i += 1
    if not title:
        title = next((s.title for s in sections if s.title), "")
    unclosed = unclosed_fences(tokens, lines)
    if not sections[0].components:
        sections = sections[1:]
    return ParsedMarkdown(
        sections=sections, code_lines=code_line_ranges(tokens), title=title, unclosed_fences=unclosed
    )
