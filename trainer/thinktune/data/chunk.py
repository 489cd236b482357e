"""Long section samples → several chunk samples, split between blocks (never inside one).

A section whose text is longer than the budget (``DocOptions.max_answer_chars``, from ``cutoffLen``) would be
rejected by the token-length check; instead it is cut at block boundaries (sections are already cut at
sub-headings by the parser): between paragraphs, list items, code blocks, tables, quotes. A block is never
split, ``$$ … $$`` math that markdown-it sees as several paragraphs stays one piece, and a lead-in paragraph
('…得到：') stays with the block it introduces. Chunks are balanced in size. A section with a block
that alone exceeds the budget stays whole (and is rejected by the length check, with its reason).
"""

from __future__ import annotations

import math

from thinktune.data.qa import Pair, Unit


def _list_item_units(u: Unit) -> list[Unit]:
    """A list unit as one unit per top-level item (line ranges from the parser's items)."""
    comp = u.comp
    if comp is None or len(comp.items) < 2:
        return [u]
    lines = comp.text.split("\n")
    out = []
    for it in comp.items:
        a, b = it.line - comp.line, it.end_line - comp.line + 1
        text = "\n".join(lines[a:b]).strip("\n")
        if text.strip():
            out.append(Unit("list", text, it.line, it.end_line))
    return out or [u]


def atoms(units: list[Unit], budget: int) -> list[list[Unit]]:
    """Units grouped into pieces that must not be separated."""
    out: list[list[Unit]] = []
    open_math = False
    lead_in = False
    for u in units:
        pieces = _list_item_units(u) if u.kind == "list" and len(u.text) > budget else [u]
        for p in pieces:
            if out and (open_math or lead_in):
                out[-1].append(p)
            else:
                out.append([p])
            if p.kind == "paragraph":
                if p.text.count("$$") % 2:
                    open_math = not open_math
                text = p.text.rstrip().rstrip("*_").rstrip()
                lead_in = not open_math and text.endswith(("：", ":"))
            else:
                lead_in = False
    return out


def _size(group: list[Unit]) -> int:
    return sum(len(u.markdown()) for u in group)


def split_units(units: list[Unit], budget: int) -> list[list[Unit]]:
    """Units cut into balanced chunks of at most ``budget`` characters where the blocks allow it."""
    groups = atoms(units, budget)
    total = sum(_size(g) for g in groups)
    if total <= budget or len(groups) < 2 or max(_size(g) for g in groups) > budget:
        # a block that alone exceeds the budget (a huge table) cannot be helped by cutting around it: the
        # section stays whole and the token-length check rejects it, with its reason
        return [units]
    n = math.ceil(total / budget)
    target = total / n
    chunks: list[list[Unit]] = [[]]
    size = 0
    for g in groups:
        gs = _size(g)
        if chunks[-1] and (size + gs > budget or size + gs / 2 > target):
            chunks.append([])
            size = 0
        chunks[-1].extend(g)
        size += gs
    return chunks


def chunk_pairs(pairs: list[Pair], budget: int) -> list[Pair]:
    """Section pairs longer than ``budget`` become one pair per chunk ('…（第 2/3 部分）'); others unchanged."""
    out: list[Pair] = []
    for p in pairs:
        if p.style != "section" or p.problems or len(p.answer_markdown()) <= budget:
            out.append(p)
            continue
        chunks = split_units(p.answer, budget)
        if len(chunks) == 1:
            out.append(p)
            continue
        for k, units in enumerate(chunks, 1):
            q = f"{p.question}（第 {k}/{len(chunks)} 部分）"
            line = p.line if k == 1 else units[0].line
            out.append(Pair("section", q, units, line, p.section, region_end=p.region_end))
    return out
