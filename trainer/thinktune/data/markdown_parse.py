"""Markdown → sections → components, from markdown-it-py's token stream (never regexes over raw text).

A document is a list of :class:`Section` (one per heading, plus a preamble before the first heading). Each
section holds :class:`Component` blocks in document order: paragraphs, lists (with their items), code
blocks (byte-exact content + info string), block quotes, tables, html. Every component carries 1-based source
line numbers taken from ``token.map``.
"""

from __future__ import annotations

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
    return markdown_parser().parse(text)


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
