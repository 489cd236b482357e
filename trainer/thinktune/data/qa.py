"""Question/answer detection over parsed sections.

Styles (``Pair.style``):

* ``marker``: ``问：…`` / ``答：…`` (half- or full-width colon) and ``Q: …`` / ``A: …`` lines; the answer runs
  over the following blocks until the next question or the end of the section;
* ``faq_list``: list items whose first paragraph is a question and whose nested content is the answer;
* ``question_heading``: a heading that is a question (ends with ？/? or starts with 什么/如何/为什么/怎样/是否…)
  answered by the section's text;
* ``section``: heading + explanatory text ("explain this section") for text that is not part of a Q&A;
* ``summary``: an HTML ``<details>`` block whose ``<summary>`` is a question, answered by the block's body;
* ``forum``: a thread exported from a forum: the first 楼主 post is the question, the replies (``**1 楼**``,
  ``**2 楼**``) are the answer, the asker's later posts (thanks, follow-ups) are neither;
* ``code``: a code block with the paragraph(s) that explain it ("explain this code"), and its output when the
  next block is one (a notebook's output cell).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from thinktune.data.markdown_parse import Component, ParsedMarkdown, Section

_EMPH = r"(?:\*\*|__|\*|_)?"
# '问：', '问题 1：', 'Q2:', '**问：**' (numbering and emphasis around the marker are part of it)
Q_MARK = re.compile(rf"^\s*{_EMPH}\s*(?:问题?|Q|Question)\s*\d*\s*{_EMPH}\s*[:：]\s*{_EMPH}\s*", re.I)
A_MARK = re.compile(rf"^\s*{_EMPH}\s*(?:答|A|Answer)\s*\d*\s*{_EMPH}\s*[:：]\s*{_EMPH}\s*", re.I)
Q_WORDS = re.compile(
    r"^(?:什么|如何|为什么|为何|怎样|怎么|是否|能否|可否|哪些|哪种|哪个|何时|何谓|有何|是不是|要不要|"
    r"how\b|what\b|why\b|when\b|which\b|should\b|can\b|is\b|does\b|do\b)",
    re.I,
)
Q_END = re.compile(r"[？?]\s*$")
# a paragraph that is nothing but an emphasised question: '**什么是 IV？**'
BOLD_QUESTION = re.compile(r"^\s*(?:\*\*|__)(?P<q>[^\n*_]+?[？?])\s*(?:\*\*|__)\s*$")
# sub-headings below a question heading that hold its answer ('### 回答', '#### 参考答案：')
ANSWER_HEADINGS = frozenset(
    "回答 答案 解答 答 参考答案 标准答案 答复 解 解析 先说结论 结论先行 简短回答 answer answers solution".split()
)
# headings that name a part of a text, not a topic: their sample's question names the enclosing topic
STRUCTURAL_HEADINGS = frozenset(
    (
        "原理 工作原理 基本原理 工具 总结 小结 结论 结语 概述 简介 介绍 背景 背景知识 前言 引言 导言 "
        "概念 基本概念 定义 整体结构 结构 实现 代码 代码实现 示例 例子 实例 演示 步骤 操作步骤 用法 "
        "使用 使用方法 方法 注意 注意事项 说明 备注 附录 参考 参考资料 参考文献 延伸阅读 相关链接 链接 "
        "资源 相关资源 回答 答案 解答 参考答案 解析 分析 思路 解题思路 问题 常见问题 faq 练习 习题 "
        "优点 缺点 优缺点 局限 局限性 应用 应用场景 安全性 性能 细节 补充 其他 更新日志 todo "
        "overview introduction summary conclusion background usage example examples tools references"
    ).split()
)
# a short heading ending in one of these names an aspect of the enclosing topic ('解题步骤', '构造方法')
STRUCTURAL_SUFFIXES = ("步骤", "过程", "方法", "思路", "流程", "原理", "总结", "小结")
# a question that only makes sense after the one above it ('那该用什么？', '那么怎么防御？')
ANAPHORIC = re.compile(r"^(?:那么?|那该|这样|这种情况下?|它|其|此时)")
_SUMMARY = re.compile(r"<summary>\s*(?P<q>.*?)\s*</summary>", re.S | re.I)
_DETAILS_END = re.compile(r"</details>\s*$", re.I)
_DETAILS_TAGS = re.compile(r"^\s*(?:</?details[^>]*>\s*|<summary>.*?</summary>\s*)+$", re.S | re.I)
# '**楼主** name 发表于 …', '**1 楼** 回复 …', '#3 楼 回复' : the header line of a forum post
FORUM_TURN = re.compile(r"^\s*(?:\*\*|__)?\s*(?P<who>楼主|\d+\s*楼|沙发|板凳|地板)\s*(?:\*\*|__)?(?:\s.*)?$")
# exercises without their solutions: tasks, not explanations (a 答/解 inside makes Q&A pairs instead)
EXERCISE_HEADINGS = frozenset("习题 练习 练习题 思考题 作业 课后习题 课后练习 exercise exercises".split())
MIN_SECTION_CHARS = 12
MIN_CODE_EXPLANATION = 20
_CODE_INTRO = re.compile(r"下面|如下|以下|这段|代码|示例|例如|命令|写法")


def _ends_with_colon(text: str) -> bool:
    return text.rstrip().rstrip("*_").rstrip().endswith(("：", ":"))


def _introduces_code(text: str) -> bool:
    """A paragraph right before a code block explains it when it leads into it (ends with a colon or says
    '下面的代码…')."""
    return _ends_with_colon(text) or bool(_CODE_INTRO.search(text))


def strip_symbols(text: str) -> str:
    """Leading emoji and pictographs of a heading ('🔑 先说结论' -> '先说结论'): decoration, not words."""
    i = 0
    while i < len(text) and (
        unicodedata.category(text[i]).startswith("S") or text[i] in "\ufe0f\u200d " or "\U0001f000" <= text[i]
    ):
        i += 1
    return text[i:] if i < len(text) else text


def clean_question(text: str) -> str:
    """Strip marker/emphasis decoration around a question: '**什么是 SM3？**' -> '什么是 SM3？',
    '问题 1：什么是 SM3？' -> '什么是 SM3？'."""
    t = Q_MARK.sub("", strip_symbols(text.strip()), count=1).strip()
    for m in ("**", "__"):
        if t.startswith(m) and t.endswith(m) and len(t) > 2 * len(m):
            t = t[len(m) : -len(m)].strip()
    return t


def heading_key(title: str) -> str:
    """A heading reduced for stop-list lookups: '**参考答案：**' -> '参考答案', '1. 原理' -> '原理'."""
    t = re.sub(r"^[\s#*_>`\d.、)）(（]+|[\s*_`:：。.]+$", "", strip_symbols(title.strip()))
    return t.lower()


def is_structural(title: str) -> bool:
    key = heading_key(title)
    return key in STRUCTURAL_HEADINGS or (len(key) <= 6 and key.endswith(STRUCTURAL_SUFFIXES))


def is_answer_heading(title: str) -> bool:
    return heading_key(title) in ANSWER_HEADINGS


def is_question(text: str) -> bool:
    t = re.sub(r"^[#\s*_>`]+|[\s*_`]+$", "", strip_symbols(text.strip()))
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
    region_end: int = 0  # last line of the text this pair owns (answer sub-sections included); 0: its section
    kind: str = "sample"  # reject kind when ``problems`` is set

    @property
    def start(self) -> int:
        return self.line

    @property
    def region(self) -> tuple[int, int]:
        """Lines (1-based, inclusive) whose <thinking> blocks may belong to this pair."""
        return self.section.line, max(self.region_end, self.section.end_line, self.section.line)

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


def _strip_answer_marker(units: list[Unit]) -> list[Unit]:
    """'答：…' at the start of an answer is a marker, not answer text."""
    if units and units[0].kind == "paragraph":
        m = A_MARK.match(units[0].text)
        if m:
            u = units[0]
            rest = u.text[m.end() :].strip()
            return ([Unit("paragraph", rest, u.line, u.end_line, comp=u.comp)] if rest else []) + units[1:]
    return units


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)|<https?://[^>]*>|https?://\S+")


def is_link_list(units: list[Unit]) -> bool:
    """Text that is (almost) only links: a reference list is no explanation to train on."""
    text = "\n".join(u.text for u in units if u.kind != "code")
    if not _LINK.search(text):
        return False
    rest = _LINK.sub("", text)
    rest = re.sub(r"(?m)^\s*(?:[-*+]|\d+[.)])\s*", "", rest)
    return len(re.sub(r"[\s:：,，;；。.\-—()（）]+", "", rest)) < MIN_SECTION_CHARS


def topic_of(section: Section, doc_title: str) -> str:
    """The nearest heading of the section's path that names a topic (not a structural or answer heading, not a
    question); the document title when there is none."""
    for h in reversed(section.path):
        if not is_structural(h) and not is_question(h):
            return h
    return doc_title


def context_path(section: Section, doc_title: str, own_heading: bool = True) -> list[str]:
    """Topic headings around a section, for the system prompt: the document title and the headings that name
    a topic, the section's own one only with ``own_heading`` (not when it is the sample's question).
    Never a question heading."""
    path = [doc_title] if doc_title and not is_question(doc_title) else []
    for h in section.path if own_heading else section.path[:-1]:
        if not is_question(h) and not is_structural(h) and h not in path:
            path.append(h)
    return path


def heading_question(sec: Section, doc_title: str) -> str:
    """The question of a question heading; one that only makes sense after the heading above it ('那该用
    什么？' below '为什么说 ECB 模式不安全？') carries that heading as its context."""
    q = clean_question(sec.title)
    if not ANAPHORIC.match(q):
        return q
    parent = sec.path[-2] if len(sec.path) > 1 else doc_title
    parent = clean_question(parent).rstrip("。？！?!.：:")
    return f"{parent}，{q}" if parent else q


def _answer_sections(sections: list[Section], i: int) -> list[int]:
    """Indices of the sub-sections right below the question heading sections[i] that hold its answer."""
    out: list[int] = []
    level = sections[i].level
    for j in range(i + 1, len(sections)):
        if sections[j].level < level:
            break
        if sections[j].level == level:
            # '### 问题：…' then '### 回答' at the same level: the answer heading right after the question
            if j == i + 1 and is_answer_heading(sections[j].title):
                out.append(j)
                continue
            break
        if is_answer_heading(sections[j].title):
            out.append(j)
    return out


def _section_units(sec: Section, sec_pairs: list[Pair], warnings: list[tuple[int, str]]) -> list[Unit]:
    """Marker, bold-question and FAQ pairs of a section go to sec_pairs; the units that belong to none of
    them are returned (the section's own text)."""
    leftover: list[Unit] = []
    current: Pair | None = None
    answering = False
    forum: str | None = None  # forum thread: "question" (the first 楼主 post), "answer" (replies), "skip"
    for comp in sec.components:
        if comp.kind == "html":
            summary = _SUMMARY.search(comp.text)
            if summary and is_question(summary.group("q")):
                # <details><summary>问题？</summary> … </details>: the body answers the summary
                current = Pair("summary", clean_question(summary.group("q")), [], comp.line, sec)
                sec_pairs.append(current)
                answering = True
                continue
            if _DETAILS_END.search(comp.text) and current is not None and current.style == "summary":
                current, answering = None, False
            if _DETAILS_TAGS.match(comp.text):
                continue  # the folding tags themselves are no text
        turn = FORUM_TURN.match(comp.text) if comp.kind == "paragraph" and "\n" not in comp.text else None
        if turn:
            asker = turn.group("who") == "楼主"
            if asker and forum is None:
                current = Pair("forum", "", [], comp.line, sec)
                sec_pairs.append(current)
                forum, answering = "question", False
            else:
                forum = "skip" if asker else "answer"
                answering = forum == "answer"
            continue
        if forum == "skip":
            continue
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
            bq = BOLD_QUESTION.match(u.text) if u.kind == "paragraph" and not qm else None
            if qm:
                current = Pair("marker", clean_question(u.text[qm.end() :]), [], u.line, sec)
                sec_pairs.append(current)
                answering = False
            elif bq:
                # a bold question paragraph is answered by the blocks below it, no marker needed
                current = Pair("bold_question", bq.group("q").strip(), [], u.line, sec)
                sec_pairs.append(current)
                answering = True
            elif am and current is not None and not (answering and current.answer):
                answering = True
                rest = u.text[am.end() :].strip()
                if rest:
                    current.answer.append(Unit("paragraph", rest, u.line, u.end_line, comp=u.comp))
            elif am:
                warnings.append((u.line, "answer marker without a preceding question (kept as section text)"))
                leftover.append(u)
            elif current is not None and answering:
                current.answer.append(u)
            elif current is not None:  # question continues over several blocks before 答：
                current.question = (current.question + "\n\n" + u.markdown()).strip()
            else:
                leftover.append(u)
    for p in sec_pairs:
        if p.style in ("marker", "bold_question", "summary", "forum") and not p.answer:
            p.problems.append("question has no answer (missing or empty '答：'/'A:')")
        if not p.question.strip():
            p.problems.append("empty question")
    return leftover


def detect_pairs(parsed: ParsedMarkdown, doc_title: str) -> tuple[list[Pair], list[tuple[int, str]]]:
    """All pairs of a document, plus warnings (line, message) such as an answer marker with no question."""
    pairs: list[Pair] = []
    warnings: list[tuple[int, str]] = []
    sections = parsed.sections
    consumed: set[int] = set()
    for si, sec in enumerate(sections):
        if si in consumed:
            continue
        sec_pairs: list[Pair] = []
        leftover = _section_units(sec, sec_pairs, warnings)
        pairs.extend(sec_pairs)
        title = sec.title or doc_title
        if sec.level > 0 and is_question(sec.title):
            # '### 问题：…' answered by its own text and/or by '### 回答' / '#### 答案' sub-sections
            region_end = sec.end_line
            answer = list(leftover)
            for j in _answer_sections(sections, si):
                consumed.add(j)
                sub_pairs: list[Pair] = []
                answer.extend(_section_units(sections[j], sub_pairs, warnings))
                pairs.extend(sub_pairs)
                region_end = max(region_end, sections[j].end_line)
            q = Pair(
                "question_heading",
                heading_question(sec, doc_title),
                _strip_answer_marker(answer),
                sec.line,
                sec,
                region_end=region_end,
            )
            if not any(u.text.strip() for u in q.answer):
                if not sec_pairs:
                    q.problems.append("question heading has no answer text below it")
                    pairs.append(q)
            else:
                pairs.append(q)
            leftover = answer
        elif sum(len(u.text.strip()) for u in leftover if u.kind != "code") >= MIN_SECTION_CHARS:
            text_units = [u for u in leftover if u.kind != "paragraph" or not is_link_list([u])]
            rest = sum(len(u.text.strip()) for u in text_units if u.kind != "code")
            if text_units != leftover and rest >= MIN_SECTION_CHARS and not is_link_list(text_units):
                leftover = text_units  # badges and link-only lines around real text are no explanation
            if heading_key(title) in EXERCISE_HEADINGS and not sec_pairs:
                pairs.append(
                    Pair(
                        "section",
                        title,
                        leftover,
                        sec.line,
                        sec,
                        problems=["section lists exercises without solutions (no sample made)"],
                        kind="skipped",
                    )
                )
            elif is_link_list(leftover):
                pairs.append(
                    Pair(
                        "section",
                        title,
                        leftover,
                        sec.line,
                        sec,
                        problems=["section is a list of links, not explanatory text (no sample made)"],
                        kind="skipped",
                    )
                )
            else:
                pairs.append(Pair("section", section_question(sec, doc_title), leftover, sec.line, sec))
        pairs.extend(_code_pairs(leftover, sec, topic_of(sec, doc_title)))
    pairs.sort(key=lambda p: (p.line, p.style))
    return pairs, warnings


def _is_output(code: Unit, prev: Unit | None) -> bool:
    """A code block right after another one, with no language of its own, is that code's output (a
    notebook's output cell, a program's printout)."""
    return (
        prev is not None
        and prev.kind == "code"
        and code.kind == "code"
        and not code.lang.strip()
        and bool(prev.lang.strip())
    )


def _code_pairs(leftover: list[Unit], sec: Section, title: str) -> list[Pair]:
    """explain-this-code: code blocks with an adjacent explanatory paragraph (before: one that leads into the
    code; after: one that is not the lead-in of the next code block). A code block's output cell goes into
    the question with the code, and the explanation after it is the one after the output."""
    out: list[Pair] = []
    units: list[list[Unit]] = []
    for i, u in enumerate(leftover):
        if units and _is_output(u, leftover[i - 1] if i else None):
            units[-1].append(u)  # the output joins its code
        else:
            units.append([u])
    for i, group in enumerate(units):
        u = group[0]
        if u.kind != "code" or not u.text.strip():
            continue
        expl: list[Unit] = []
        prev = units[i - 1][-1] if i > 0 else None
        if (
            prev is not None
            and prev.kind in ("paragraph", "list", "blockquote")
            and _introduces_code(prev.text)
        ):
            expl.append(prev)
        nxt = units[i + 1][0] if i + 1 < len(units) else None
        if nxt is not None and nxt.kind in ("paragraph", "list", "blockquote"):
            after = units[i + 2][0] if i + 2 < len(units) else None
            intro_of_next = _ends_with_colon(nxt.text) and after is not None and after.kind == "code"
            if not intro_of_next:
                expl.append(nxt)
        if sum(len(e.text.strip().rstrip("：:")) for e in expl) >= MIN_CODE_EXPLANATION:
            lang = u.lang.split()[0] if u.lang else ""
            q = code_instruction(lang, title) + "\n\n" + u.markdown()
            if len(group) > 1:
                q += "\n\n运行输出：\n\n" + "\n\n".join(o.markdown() for o in group[1:])
            out.append(Pair("code", q, expl, u.line, sec))
    return out


_SECTION_TEMPLATES = (
    "请解释「{title}」。",
    "请结合《{doc}》的上下文，讲解「{title}」。",
    "关于「{title}」，请给出清晰的讲解。",
)
# a structural heading's sample asks about the enclosing topic: '原理' under 'CBC 填充预言攻击' ->
# '「CBC 填充预言攻击」的原理是什么？'
_STRUCTURAL_TEMPLATES = {
    "原理": "「{topic}」的原理是什么？",
    "工作原理": "「{topic}」的工作原理是什么？",
    "基本原理": "「{topic}」的基本原理是什么？",
    "总结": "请总结「{topic}」的要点。",
    "小结": "请小结「{topic}」的要点。",
    "结论": "关于「{topic}」，结论是什么？",
    "工具": "「{topic}」可以借助哪些工具？",
    "优缺点": "「{topic}」有哪些优缺点？",
    "应用场景": "「{topic}」有哪些应用场景？",
    "注意事项": "使用「{topic}」时有哪些注意事项？",
}


def section_question(sec: Section, doc_title: str) -> str:
    """The question of a section sample: the heading when it names a topic; for a structural heading
    (原理, 工具, 总结, …) the enclosing topic with that aspect."""
    title = sec.title or doc_title
    if is_structural(title):
        topic = topic_of(sec, doc_title)
        key = heading_key(title)
        tpl = _STRUCTURAL_TEMPLATES.get(key, "请说明「{topic}」的{aspect}。")
        return tpl.format(topic=topic, aspect=re.sub(r"^[\d.、)）\s]+", "", strip_symbols(title.strip())))
    return _pick(_SECTION_TEMPLATES, title).format(title=title, doc=doc_title)


_CODE_TEMPLATES = (
    "请解释下面这段{lang}代码（出自「{title}」）的作用和要点：",
    "下面的{lang}代码出自「{title}」，它做了什么？有哪些需要注意的地方？",
    "阅读下面这段{lang}代码并说明其用途：",
)


def _pick(options: tuple[str, ...], key: str) -> str:
    return options[sum(key.encode("utf-8")) % len(options)]


def code_instruction(lang: str, title: str) -> str:
    return _pick(_CODE_TEMPLATES, title + lang).format(lang=lang or "", title=title)
