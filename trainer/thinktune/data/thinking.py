"""``<thinking>`` blocks: parsing into a tree (with precise errors), Qwen3 rendering, quality, generation.

Authors mark reasoning in the corpus with ``<thinking>…</thinking>`` (nested to any depth, several blocks per
question). Tags inside code (fenced/indented blocks, inline code spans) are code, not tags. The assistant
turn of a Qwen3 thinking model is exactly ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_TAG = re.compile(r"<(/?)thinking\s*>", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)*?\1")
_ANSWER_MARK = re.compile(
    r"^\s*(?:[-*+]\s+|\d+[.)]\s+)?(?:\*\*|__)?\s*(?:答|A|Answer)\s*(?:\*\*|__)?\s*[:：]", re.I
)
_QUESTION_MARK = re.compile(
    r"^\s*(?:[-*+]\s+|\d+[.)]\s+)?(?:\*\*|__)?\s*(?:问|Q|Question)\s*(?:\*\*|__)?\s*[:：]", re.I
)


@dataclass
class ThinkingError:
    line: int
    col: int
    message: str
    fix: str

    def __str__(self) -> str:
        return f"line {self.line} col {self.col}: {self.message}; {self.fix}"


@dataclass
class ThinkingNode:
    line: int  # 1-based line of the opening tag
    col: int  # 1-based column of the opening tag
    start: int  # offset of the opening tag
    content_start: int  # offset just after the opening tag
    end: int = -1  # offset just after the closing tag
    content_end: int = -1  # offset of the closing tag
    end_line: int = 0
    depth: int = 1
    parts: list[str | ThinkingNode] = field(default_factory=list)

    def text_parts(self, text: str) -> None:
        """Fill ``parts`` from the document text: text runs interleaved with child nodes."""
        children = [p for p in self.parts if isinstance(p, ThinkingNode)]
        parts: list[str | ThinkingNode] = []
        pos = self.content_start
        for c in children:
            parts.append(text[pos : c.start])
            c.text_parts(text)
            parts.append(c)
            pos = c.end
        parts.append(text[pos : self.content_end])
        self.parts = [p if isinstance(p, ThinkingNode) else textwrap.dedent(p).strip() for p in parts]
        self.parts = [p for p in self.parts if not (isinstance(p, str) and not p)]

    def map_text(self, fn) -> None:
        self.parts = [p if isinstance(p, ThinkingNode) else fn(p) for p in self.parts]
        for p in self.parts:
            if isinstance(p, ThinkingNode):
                p.map_text(fn)

    def plain(self) -> str:
        return "\n".join(p if isinstance(p, str) else p.plain() for p in self.parts)

    def max_depth(self) -> int:
        return max([self.depth] + [p.max_depth() for p in self.parts if isinstance(p, ThinkingNode)])


@dataclass
class TagEvent:
    closing: bool
    offset: int
    end: int
    line: int
    col: int


def find_tags(text: str, code_lines: list[tuple[int, int]]) -> list[TagEvent]:
    """``<thinking>``/``</thinking>`` tags outside code blocks and inline code spans."""
    if "thinking" not in text.lower():
        return []
    in_code = set()
    for a, b in code_lines:
        in_code.update(range(a, b))
    events: list[TagEvent] = []
    offset = 0
    for idx, line in enumerate(text.split("\n")):
        if idx not in in_code and "thinking" in line.lower():
            masked = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
            for m in _TAG.finditer(masked):
                events.append(
                    TagEvent(m.group(1) == "/", offset + m.start(), offset + m.end(), idx + 1, m.start() + 1)
                )
        offset += len(line) + 1
    return events


def _last_content_line(lines: list[str], start: int, stop: int) -> int:
    """1-based number of the last non-blank line in lines[start:stop] (0-based indices); start if none."""
    for i in range(min(stop, len(lines)) - 1, start - 1, -1):
        if lines[i].strip():
            return i + 1
    return start + 1


def parse_thinking(
    text: str, code_lines: list[tuple[int, int]], heading_lines: set[int]
) -> tuple[list[ThinkingNode], list[ThinkingError]]:
    """Parse all thinking blocks into trees. ``heading_lines`` are 1-based lines of headings.

    Errors (with a concrete fix) for: a closing tag without an opening one, an opening tag never closed, a
    block that runs across a heading, a tag inside a heading, and a block that swallows an answer or
    question marker (closing tag placed after the answer instead of before it).
    """
    events = find_tags(text, code_lines)
    lines = text.split("\n")
    errors: list[ThinkingError] = []
    roots: list[ThinkingNode] = []
    stack: list[ThinkingNode] = []
    code = set()
    for a, b in code_lines:
        code.update(range(a, b))

    def stop_after(open_line: int) -> tuple[int, str]:
        """Where the reasoning opened at open_line should end: before the next heading, answer or question,
        or at the first blank line once every nested block seen so far is closed."""
        depth = 0
        for i in range(open_line, len(lines)):  # i is 0-based; open_line (1-based) is the line after
            if i in code:
                continue
            if i + 1 in heading_lines:
                return i, f"before the heading at line {i + 1}"
            ln = lines[i]
            if _ANSWER_MARK.match(ln):
                return i, f"before the answer at line {i + 1}"
            if _QUESTION_MARK.match(ln):
                return i, f"before the next question at line {i + 1}"
            for m in _TAG.finditer(ln):
                depth += -1 if m.group(1) else 1
            if not ln.strip() and depth <= 0 and i > open_line:
                return i, f"before the text that follows at line {i + 2}" if i + 1 < len(
                    lines
                ) else "at the end of the document"
        return len(lines), "at the end of the document"

    for ev in events:
        if ev.line in heading_lines:
            errors.append(
                ThinkingError(
                    ev.line,
                    ev.col,
                    f"{'</thinking>' if ev.closing else '<thinking>'} inside a heading",
                    "move the tag out of the heading onto its own line below it",
                )
            )
            continue
        if not ev.closing:
            node = ThinkingNode(
                line=ev.line, col=ev.col, start=ev.offset, content_start=ev.end, depth=len(stack) + 1
            )
            stack.append(node)
            continue
        if not stack:
            # the reasoning this tag closes starts after the question / blank line / heading above it
            j = ev.line - 2
            while (
                j >= 0
                and lines[j].strip()
                and not _QUESTION_MARK.match(lines[j])
                and j + 1 not in heading_lines
            ):
                j -= 1
            start = min(j + 2, ev.line)
            errors.append(
                ThinkingError(
                    ev.line,
                    ev.col,
                    "</thinking> has no matching <thinking>",
                    f"add <thinking> on its own line before line {start} (start of the "
                    "reasoning) or delete this closing tag",
                )
            )
            continue
        node = stack.pop()
        node.end, node.content_end, node.end_line = ev.end, ev.offset, ev.line
        crossed = [h for h in heading_lines if node.line < h < ev.line and h - 1 not in code]
        inner_lines = range(node.line, ev.line - 1)  # 0-based indices strictly between the tags
        swallowed = next(
            (
                i
                for i in inner_lines
                if i not in code and (_ANSWER_MARK.match(lines[i]) or _QUESTION_MARK.match(lines[i]))
            ),
            None,
        )
        if crossed:
            h = min(crossed)
            last = _last_content_line(lines, node.line, h - 1)
            errors.append(
                ThinkingError(
                    ev.line,
                    ev.col,
                    f"</thinking> closes the <thinking> opened at line "
                    f"{node.line} col {node.col} across the heading at line {h}",
                    f"add </thinking> after line {last} (before the heading) and remove this one",
                )
            )
        elif swallowed is not None and node.depth == 1:
            what = "answer" if _ANSWER_MARK.match(lines[swallowed]) else "question"
            last = _last_content_line(lines, node.line, swallowed)
            errors.append(
                ThinkingError(
                    ev.line,
                    ev.col,
                    f"</thinking> is misplaced: the <thinking> opened at "
                    f"line {node.line} col {node.col} contains the {what} marker at line "
                    f"{swallowed + 1}",
                    f"move </thinking> to after line {last} (before the {what} starts)",
                )
            )
        if stack:
            stack[-1].parts.append(node)
        else:
            roots.append(node)
    for node in reversed(stack):
        stop, why = stop_after(node.line)
        last = _last_content_line(lines, node.line, stop)
        errors.append(
            ThinkingError(
                node.line,
                node.col,
                "<thinking> opened here is never closed",
                f"add </thinking> after line {last} (end of the reasoning, {why})",
            )
        )
    if not errors:
        for r in roots:
            r.text_parts(text)
    return roots, errors


def blank_out(text: str, roots: list[ThinkingNode]) -> str:
    """The text with every thinking block (tags and content) replaced by spaces; newlines are kept so line
    numbers of everything else stay the same."""
    if not roots:
        return text
    chars = list(text)
    for r in roots:
        for i in range(r.start, r.end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


# ---------------------------------------------------------------------------------------------------------
# rendering


def render_reasoning(roots: list[ThinkingNode], nested: str = "keep") -> str:
    """Reasoning text of one or more blocks. keep: inner levels stay ``<thinking>`` tags; flatten: every text
    run becomes a numbered step (1., 1.1., ...) following the tree."""
    if nested == "flatten":
        out: list[str] = []

        def walk(node: ThinkingNode, prefix: str) -> None:
            n = 0
            for p in node.parts:
                n += 1
                num = f"{prefix}{n}."
                if isinstance(p, ThinkingNode):
                    walk(p, num)
                else:
                    out.append(f"{num} {p}")

        top = ThinkingNode(line=0, col=0, start=0, content_start=0, parts=list(roots))
        if len(roots) == 1:
            top = roots[0]
        walk(top, "")
        return "\n".join(out)

    def keep(node: ThinkingNode) -> str:
        pieces = []
        for p in node.parts:
            if isinstance(p, ThinkingNode):
                pieces.append(f"<thinking>\n{keep(p)}\n</thinking>")
            else:
                pieces.append(p)
        return "\n\n".join(pieces)

    return "\n\n".join(keep(r) for r in roots)


def render_assistant(reasoning: str, answer: str) -> str:
    """Qwen3 thinking format: exactly ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"


_FORMAT = re.compile(r"\A<think>\n(?P<r>.*?)\n</think>\n\n(?P<a>.*)\Z", re.S)


def split_assistant(content: str) -> tuple[str, str] | None:
    """(reasoning, answer) of a correctly formatted assistant turn, or None."""
    m = _FORMAT.match(content)
    return (m.group("r"), m.group("a")) if m else None


def check_format(content: str) -> str | None:
    """None when ``content`` is exactly the Qwen3 thinking format, else the reason it is not."""
    m = _FORMAT.match(content)
    if not m:
        if not content.startswith("<think>\n"):
            return "assistant turn must start with '<think>\\n'"
        return "assistant turn must contain '\\n</think>\\n\\n' followed by the answer"
    r, a = m.group("r"), m.group("a")
    if not r.strip():
        return "empty reasoning inside <think>"
    if not a.strip():
        return "empty answer after </think>"
    if THINK_OPEN in r or THINK_CLOSE in r or THINK_OPEN in a or THINK_CLOSE in a:
        return (
            "'<think>'/'</think>' may appear only once each (they are special tokens of the Qwen3 tokenizer)"
        )
    return None


# ---------------------------------------------------------------------------------------------------------
# quality

_ANALYSIS = re.compile(r"分析|问题|目标|需要|考虑|首先|核心|关键|题目|要求|场景|想想|看看")
_STEP_LINE = re.compile(r"(?m)^\s*(?:\d+(?:\.\d+)*[.、)）]|第[一二三四五六七八九十]+[步，,、]|[-*]\s)")
_CONNECTIVE = re.compile(r"首先|其次|然后|接着|再者|此外|另外|最后|第一|第二|第三|于是|进而|因为|由于")
_VERIFY = re.compile(r"验证|检验|检查|核对|确认|结论|综上|因此|所以|可见|总之|由此|回顾|总结")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_SENT_SPLIT = re.compile(r"(?<=[。！？!?；;])\s*|\n+")
_CODE_FENCE = re.compile(r"(?ms)^(`{3,}|~{3,})[^\n]*\n.*?^\1\s*$")
_CODE_KEYWORDS = {
    "def",
    "return",
    "import",
    "from",
    "func",
    "package",
    "for",
    "while",
    "int",
    "char",
    "void",
    "const",
    "var",
    "nil",
    "None",
    "True",
    "False",
    "self",
    "print",
    "range",
    "len",
    "byte",
    "bytes",
    "uint8_t",
    "size_t",
    "static",
    "struct",
    "unsigned",
    "else",
    "err",
    "the",
    "and",
}


def _bigrams(s: str) -> set[str]:
    s = re.sub(r"\s+", "", s)
    return {s[i : i + 2] for i in range(len(s) - 1)}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text) if s and s.strip()]


def code_blocks(markdown: str) -> list[str]:
    return [m.group(0) for m in _CODE_FENCE.finditer(markdown)]


def strip_code(markdown: str) -> str:
    return _CODE_FENCE.sub(" ", markdown)


MAX_RESTATEMENT = 0.5  # generated thinking that copies more of the answer than this is a restatement


@dataclass
class Quality:
    score: float
    analysis: bool
    steps: bool
    verification: bool
    term_overlap: float  # share of the answer's key terms the thinking uses (term consistency)
    conclusion_overlap: float
    code_analysed: bool | None
    problems: list[str]
    restatement: float = 0.0  # share of the thinking's character 8-grams copied from the answer
    grounding: float = 1.0  # share of the thinking's terms/identifiers/bigrams found in the source chunk

    def as_dict(self) -> dict:
        return {
            "score": round(self.score, 3),
            "analysis": self.analysis,
            "steps": self.steps,
            "verification": self.verification,
            "term_overlap": round(self.term_overlap, 3),
            "conclusion_overlap": round(self.conclusion_overlap, 3),
            "restatement": round(self.restatement, 3),
            "grounding": round(self.grounding, 3),
            "code_analysed": self.code_analysed,
            "problems": self.problems,
        }


_TEXT_CHARS = re.compile(r"[^\u4e00-\u9fffA-Za-z0-9]+")
_LATIN_WORD = re.compile(r"`([^`\n]+)`|\b[A-Za-z][A-Za-z0-9_+\-]{2,}\b")


def restatement(reasoning: str, answer: str, n: int = 8) -> float:
    """Share of the reasoning's character n-grams (letters, digits, ideographs only) that occur in the
    answer: 1.0 is a copy of the answer, a real derivation stays low."""
    r, a = _TEXT_CHARS.sub("", strip_code(reasoning)), _TEXT_CHARS.sub("", strip_code(answer))
    grams = {r[i : i + n] for i in range(len(r) - n + 1)}
    if not grams:
        return 0.0
    return sum(1 for g in grams if g in a) / len(grams)


def grounding(reasoning: str, source: str, reasoning_terms: tuple[str, ...] | list[str] = ()) -> float:
    """Share of what the reasoning names (glossary terms, code identifiers, Latin words) that the source chunk
    contains; with nothing named, the share of its character bigrams found in the source."""
    low = source.lower()
    named = {t for t in reasoning_terms} | {
        (m.group(1) or m.group(0)).strip() for m in _LATIN_WORD.finditer(reasoning)
    }
    named = {t for t in named if t}
    if named:
        return sum(1 for t in named if t.lower() in low) / len(named)
    rb, sb = _bigrams(_TEXT_CHARS.sub("", reasoning)), _bigrams(_TEXT_CHARS.sub("", source))
    return len(rb & sb) / len(rb) if rb else 0.0


MIN_ANSWER_GROUNDING = 0.6  # a generated answer below this share of supported terms / sentences is rejected


def answer_grounding(answer: str, chunk: str, answer_terms: tuple[str, ...] | list[str] = ()) -> float:
    """How much of a generated answer the chunk supports: the lower of (a) the share of what it names
    (glossary terms, code identifiers, Latin words) found in the chunk and (b) the share of its sentences
    whose character bigrams are at least half in the chunk. A claim the chunk does not make lowers (b), a
    name it never mentions lowers (a)."""
    named = grounding(answer, chunk, answer_terms) if answer_terms or _LATIN_WORD.search(answer) else 1.0
    chunk_bigrams = _bigrams(_TEXT_CHARS.sub("", chunk))
    sents = [b for b in (_bigrams(_TEXT_CHARS.sub("", x)) for x in sentences(strip_code(answer))) if b]
    supported = sum(1 for b in sents if len(b & chunk_bigrams) >= 0.5 * len(b)) / len(sents) if sents else 0.0
    return min(named, supported)


def assess_quality(
    reasoning: str,
    answer: str,
    answer_terms: tuple[str, ...] | list[str] = (),
    reasoning_terms: tuple[str, ...] | list[str] = (),
    source: str | None = None,
) -> Quality:
    """Score a reasoning text against its answer and source chunk (question + answer by default), in [0, 1]:

    0.15 each for analysis, reasoning steps and verification (structure); 0.2 grounding (what it names is in
    the source); 0.15 term consistency (it uses the answer's key terms); 0.1 not a restatement (few 8-grams
    copied from the answer); 0.1 code in the answer is discussed (full marks without code).
    """
    problems: list[str] = []
    source = answer if source is None else source
    head = reasoning[: max(80, len(reasoning) // 3)]
    analysis = bool(_ANALYSIS.search(head))
    n_steps = len(_STEP_LINE.findall(reasoning)) + len(_CONNECTIVE.findall(reasoning))
    steps = n_steps >= 2 or len(sentences(reasoning)) >= 3
    verification = bool(_VERIFY.search(reasoning))
    if not analysis:
        problems.append("no problem analysis at the start")
    if not steps:
        problems.append("no reasoning steps")
    if not verification:
        problems.append("no verification or conclusion")
    ans_terms = set(answer_terms)
    if ans_terms:
        r_low = reasoning.lower()
        shared = {t for t in ans_terms if t in set(reasoning_terms) or t.lower() in r_low}
        term_overlap = len(shared) / len(ans_terms)
    else:
        ab, rb = _bigrams(strip_code(answer)), _bigrams(reasoning)
        term_overlap = min(1.0, 4 * len(ab & rb) / len(ab)) if ab else 1.0
    if term_overlap < 0.3:
        problems.append("reasoning shares few key terms with the answer")
    sents = sentences(strip_code(reasoning))
    tail = "".join(sents[-2:]) if sents else ""
    tb, ab = _bigrams(tail), _bigrams(strip_code(answer))
    conclusion_overlap = len(tb & ab) / len(tb) if tb else 0.0
    restated = restatement(reasoning, answer)
    if restated > MAX_RESTATEMENT:
        problems.append(f"reasoning restates the answer ({restated:.0%} of it copied)")
    grounded = grounding(reasoning, source, reasoning_terms)
    if grounded < 0.5:
        problems.append(f"reasoning is not grounded in the source ({grounded:.0%} of what it names is there)")
    blocks = code_blocks(answer)
    code_analysed: bool | None = None
    if blocks:
        idents = {w for b in blocks for w in _IDENT.findall(b.split("\n", 1)[-1])} - _CODE_KEYWORDS
        code_analysed = bool(re.search(r"代码|函数|实现|程序|调用|命令", reasoning)) or any(
            w in reasoning for w in idents
        )
        if not code_analysed:
            problems.append("code in the answer is not analysed in the reasoning")
    score = (
        0.15 * analysis
        + 0.15 * steps
        + 0.15 * verification
        + 0.2 * min(1.0, grounded / 0.8)
        + 0.15 * min(1.0, term_overlap / 0.6)
        + 0.1 * (1.0 - min(1.0, max(0.0, restated - 0.3) / 0.5))
        + 0.1 * (1.0 if code_analysed in (None, True) else 0.0)
    )
    return Quality(
        score=max(0.0, min(1.0, score)),
        analysis=analysis,
        steps=steps,
        verification=verification,
        term_overlap=term_overlap,
        conclusion_overlap=conclusion_overlap,
        code_analysed=code_analysed,
        problems=problems,
        restatement=restated,
        grounding=grounded,
    )


# ---------------------------------------------------------------------------------------------------------
# generation


def clean_generated(text: str) -> str:
    """Reasoning part of a generated text: drop think tags and anything after a closing ``</think>``."""
    if THINK_CLOSE in text:
        text = text.split(THINK_CLOSE, 1)[0]
    return text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
