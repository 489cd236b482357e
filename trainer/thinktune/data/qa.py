"""Question/answer detection over parsed sections.

Styles (``Pair.style``):

* ``marker``: ``问：…`` / ``答：…`` (half- or full-width colon) and ``Q: …`` / ``A: …`` lines; the answer runs
  over the following blocks until the next question or the end of the section;
* ``faq_list``: list items whose first paragraph is a question and whose nested content is the answer;
* ``question_heading``: a heading that is a question (ends with ？/? or starts with 什么/如何/为什么/怎样/是否…)
  answered by the section's text;
* ``section``: heading + explanatory text ("explain this section") for text that is not part of a Q&A;
* ``code``: a code block with the paragraph(s) that explain it ("explain this code").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from thinktune.data.markdown_parse import Component, ParsedMarkdown, Section

_EMPH = r"(?:\*\*|__|\*|_)?"
Q_MARK = re.compile(rf"^\s*{_EMPH}\s*(?:问|Q|Question)\s*{_EMPH}\s*[:：]\s*{_EMPH}\s*", re.I)
A_MARK = re.compile(rf"^\s*{_EMPH}\s*(?:答|A|Answer)\s*{_EMPH}\s*[:：]\s*{_EMPH}\s*", re.I)
Q_WORDS = re.compile(
    r"^(?:什么|如何|为什么|为何|怎样|怎么|是否|能否|可否|哪些|哪种|哪个|何时|何谓|有何|是不是|要不要|"
    r"how\b|what\b|why\b|when\b|which\b|should\b|can\b|is\b|does\b|do\b)",
    re.I,
)
Q_END = re.compile(r"[？?]\s*$")
MIN_SECTION_CHARS = 12
MIN_CODE_EXPLANATION = 20
_CODE_INTRO = re.compile(r"下面|如下|以下|这段|代码|示例|例如|命令|写法")


def _ends_with_colon(text: str) -> bool:
    return text.rstrip().rstrip("*_").rstrip().endswith(("：", ":"))


def _introduces_code(text: str) -> bool:
    """A paragraph right before a code block explains it when it leads into it (ends with a colon or says
    '下面的代码…')."""
    return _ends_with_colon(text) or bool(_CODE_INTRO.search(text))


def clean_question(text: str) -> str:
    """Strip list/emphasis decoration around a question: '**什么是 SM3？**' -> '什么是 SM3？'."""
    t = text.strip()
    for m in ("**", "__"):
        if t.startswith(m) and t.endswith(m) and len(t) > 2 * len(m):
            t = t[len(m) : -len(m)].strip()
    return t


def is_question(text: str) -> bool:
    t = re.sub(r"^[#\s*_>`]+|[\s*_`]+$", "", text.strip())
    return bool(t) and (bool(Q_END.search(t)) or bool(Q_WORDS.match(t)) or bool(Q_MARK.match(text)))


@dataclass
class Unit:
    """A block (or a marker-delimited part of a paragraph) with its source lines."""

    kind: str
    text: str
    line: int
    end_line: int
    lang: str = ""
    comp: Component | None = None

    def markdown(self) -> str:
        if self.kind == "code" and self.comp is not None:
            return self.comp.markdown()
        return self.text


@dataclass
class Pair:
    style: str
    question: str
    answer: list[Unit]
    line: int  # line of the question (heading line for question_heading/section)
    section: Section
    problems: list[str] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.line

    @property
    def end_line(self) -> int:
        return max([self.line] + [u.end_line for u in self.answer])

    def answer_markdown(self) -> str:
        return "\n\n".join(u.markdown().strip("\n") for u in self.answer if u.markdown().strip())


def _units(comp: Component) -> list[Unit]:
    """Split paragraphs at lines that start with a question/answer marker; other blocks are one unit."""
    if comp.kind != "paragraph":
        return [Unit(comp.kind, comp.text, comp.line, comp.end_line, comp.lang, comp)]
    lines = comp.text.split("\n")
    cuts = [0] + [i for i in range(1, len(lines)) if Q_MARK.match(lines[i]) or A_MARK.match(lines[i])]
    out = []
    for a, b in zip(cuts, cuts[1:] + [len(lines)], strict=True):
        out.append(Unit("paragraph", "\n".join(lines[a:b]), comp.line + a, comp.line + b - 1, comp=comp))
    return out


def _faq_pairs(comp: Component, section: Section) -> tuple[list[Pair], bool, list[Unit]]:
    """FAQ list → pairs. Returns (pairs, is_faq, other items). Items need a question head and a nested answer;
    the list's other items are returned as units so their text still reaches the section sample."""
    pairs: list[Pair] = []
    others: list[Unit] = []
    qa_items = 0
    for it in comp.items:
        head = it.head
        body = it.body
        head_lines = head.split("\n")
        # "- 问：…\n  答：…" inside one paragraph
        split_at = next((i for i, ln in enumerate(head_lines) if i and A_MARK.match(ln)), None)
        if split_at is None and len(head_lines) > 1 and is_question(head_lines[0]):
            split_at = (
                1  # "- 什么是 CRL？\n  CRL 是……": the answer is a lazy continuation of the question line
            )
        if split_at is not None:
            body = "\n".join(head_lines[split_at:]) + ("\n\n" + body if body else "")
            head = "\n".join(head_lines[:split_at])
        if not is_question(head):
            text = (it.head + ("\n\n" + it.body if it.body else "")).strip()
            if text:
                others.append(Unit("paragraph", f"- {text}", it.line, it.end_line))
            continue
        question = clean_question(Q_MARK.sub("", head, count=1))
        answer_text = A_MARK.sub("", body.strip(), count=1).strip() if body.strip() else ""
        if answer_text:
            qa_items += 1
        ans_line = it.head_end_line + 1 if split_at is None else it.line + split_at
        pair = Pair(
            "faq_list",
            question,
            [Unit("list_item", answer_text, ans_line, it.end_line)] if answer_text else [],
            it.line,
            section,
        )
        if not answer_text:
            pair.problems.append("FAQ item has a question but no nested answer")
        pairs.append(pair)
    if qa_items == 0:
        return [], False, []
    return pairs, True, others


def detect_pairs(parsed: ParsedMarkdown, doc_title: str) -> tuple[list[Pair], list[tuple[int, str]]]:
    """All pairs of a document, plus warnings (line, message) such as an answer marker with no question."""
    pairs: list[Pair] = []
    warnings: list[tuple[int, str]] = []
    for sec in parsed.sections:
        sec_pairs: list[Pair] = []
        leftover: list[Unit] = []
        current: Pair | None = None
        answering = False
        for comp in sec.components:
            if comp.kind == "list" and comp.items:
                faq, is_faq, others = _faq_pairs(comp, sec)
                if is_faq:
                    current, answering = None, False
                    sec_pairs.extend(faq)
                    leftover.extend(others)
                    continue
            for u in _units(comp):
                qm = Q_MARK.match(u.text) if u.kind == "paragraph" else None
                am = A_MARK.match(u.text) if u.kind == "paragraph" else None
                if qm:
                    current = Pair("marker", u.text[qm.end() :].strip(), [], u.line, sec)
                    sec_pairs.append(current)
                    answering = False
                elif am and current is not None and not answering:
                    answering = True
                    rest = u.text[am.end() :].strip()
                    if rest:
                        current.answer.append(Unit("paragraph", rest, u.line, u.end_line, comp=u.comp))
                elif am:
                    warnings.append(
                        (u.line, "answer marker without a preceding question (kept as section text)")
                    )
                    leftover.append(u)
                elif current is not None and answering:
                    current.answer.append(u)
                elif current is not None:  # question continues over several blocks before 答：
                    current.question = (current.question + "\n\n" + u.markdown()).strip()
                else:
                    leftover.append(u)
        for p in sec_pairs:
            if p.style == "marker" and not p.answer:
                p.problems.append("question has no answer (missing or empty '答：'/'A:')")
            if not p.question.strip():
                p.problems.append("empty question")
        pairs.extend(sec_pairs)
        text_units = [u for u in leftover if u.kind != "code"]
        title = sec.title or doc_title
        if sec.level > 0 and is_question(sec.title):
            q = Pair("question_heading", clean_question(sec.title), leftover, sec.line, sec)
            if not any(u.text.strip() for u in leftover):
                if not sec_pairs:
                    q.problems.append("question heading has no answer text below it")
                    pairs.append(q)
            else:
                pairs.append(q)
        elif sum(len(u.text.strip()) for u in text_units) >= MIN_SECTION_CHARS:
            context = " › ".join(sec.path) if sec.path else doc_title
            pairs.append(
                Pair("section", section_instruction(title, context, doc_title), leftover, sec.line, sec)
            )
        # explain-this-code: code blocks with an adjacent explanatory paragraph
        for i, u in enumerate(leftover):
            if u.kind != "code" or not u.text.strip():
                continue
            expl: list[Unit] = []
            prev = leftover[i - 1] if i > 0 else None
            if (
                prev is not None
                and prev.kind in ("paragraph", "list", "blockquote")
                and _introduces_code(prev.text)
            ):
                expl.append(prev)
            nxt = leftover[i + 1] if i + 1 < len(leftover) else None
            if nxt is not None and nxt.kind in ("paragraph", "list", "blockquote"):
                after = leftover[i + 2] if i + 2 < len(leftover) else None
                intro_of_next = _ends_with_colon(nxt.text) and after is not None and after.kind == "code"
                if not intro_of_next:
                    expl.append(nxt)
            if sum(len(e.text.strip().rstrip("：:")) for e in expl) >= MIN_CODE_EXPLANATION:
                lang = u.lang.split()[0] if u.lang else ""
                q = code_instruction(lang, title) + "\n\n" + u.markdown()
                pairs.append(Pair("code", q, expl, u.line, sec))
    pairs.sort(key=lambda p: (p.line, p.style))
    return pairs, warnings


_SECTION_TEMPLATES = (
    "请解释「{title}」这一部分的内容。",
    "请结合《{doc}》的上下文，说明「{title}」讲了什么。",
    "关于「{title}」，请给出清晰的讲解。",
    "请概括并解释「{context}」中的要点。",
)
_CODE_TEMPLATES = (
    "请解释下面这段{lang}代码（出自「{title}」）的作用和要点：",
    "下面的{lang}代码出自「{title}」，它做了什么？有哪些需要注意的地方？",
    "阅读下面这段{lang}代码并说明其用途：",
)


def _pick(options: tuple[str, ...], key: str) -> str:
    return options[sum(key.encode("utf-8")) % len(options)]


def section_instruction(title: str, context: str, doc: str) -> str:
    return _pick(_SECTION_TEMPLATES, title + context).format(title=title, context=context, doc=doc)


def code_instruction(lang: str, title: str) -> str:
    return (
        _pick(_CODE_TEMPLATES, title + lang).format(lang=lang or "", title=title).replace("段代码", "段代码")
    )
