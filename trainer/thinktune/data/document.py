"""One markdown document → samples (runs in worker processes).

Steps: block-parse the original text (code ranges, headings, broken fences) → find and parse ``<thinking>``
blocks (errors with line/col/fix reject the document) → blank the blocks out (line numbers stay) → Chinese
normalisation outside code/URLs → parse sections/components → detect Q&A pairs → attach thinking trees to
their pair → render samples (source thinking, or template-generated; model generation happens later in the
parent process) → term recognition with jieba + glossary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from thinktune.data.chinese import NormalizeOptions, Normalizer, term_recognizer
from thinktune.data.chunk import chunk_pairs
from thinktune.data.encoding import EncodingProblem, decode_markdown
from thinktune.data.markdown_parse import (
    block_tokens,
    code_line_ranges,
    heading_lines,
    parse_markdown,
    unclosed_fences,
)
from thinktune.data.qa import Pair, context_path, detect_pairs
from thinktune.data.samples import Reject, Sample
from thinktune.data.thinking import (
    MAX_RESTATEMENT,
    ThinkingNode,
    assess_quality,
    blank_out,
    parse_thinking,
    render_reasoning,
    strip_code,
)
from thinktune.data.trace import evidence_reasoning

QA_STYLES = ("marker", "faq_list", "question_heading", "bold_question", "summary", "forum")


@dataclass(frozen=True)
class DocOptions:
    opencc: str = "t2s"
    punctuation: bool = True
    glossary: str | None = None
    nested: str = "keep"
    generate: str = "template"
    min_quality: float = 0.5
    system_prompt: str | None = None
    max_answer_chars: int = 2048  # longer sections are split into chunks (build: cutoffLen / 2)


@dataclass
class DocResult:
    file: str
    n_bytes: int
    samples: list[Sample] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "file:line:col: message; fix"
    warnings: list[str] = field(default_factory=list)
    thinking_blocks: int = 0
    max_thinking_depth: int = 0


_NORMALIZERS: dict[tuple[str, bool], Normalizer] = {}


def _normalizer(opts: DocOptions) -> Normalizer:
    key = (opts.opencc, opts.punctuation)
    n = _NORMALIZERS.get(key)
    if n is None:
        n = _NORMALIZERS[key] = Normalizer(NormalizeOptions(opts.opencc, opts.punctuation))
    return n


def _norm_part(normalizer: Normalizer, text: str) -> str:
    if "```" in text or "~~~" in text or "\n    " in text:
        return normalizer.markdown(text, code_line_ranges(block_tokens(text)))
    return normalizer.inline(text)


def _system(opts: DocOptions, doc_title: str, pair: Pair) -> str:
    """The configured system prompt, or a generic one naming the topic around the sample (document title and
    enclosing topic headings; never the question itself, which is the user turn)."""
    if opts.system_prompt:
        return opts.system_prompt
    base = "你是一名精通密码学的助手，请先思考再作答。"
    own = pair.style not in ("section", "question_heading")  # else the heading is the question itself
    path = " › ".join(h.rstrip("。？！?!.：:") for h in context_path(pair.section, doc_title, own))
    return f"{base}当前主题：{path}。" if path else base


def _sample_type(pair: Pair, has_source_thinking: bool, answer: str) -> str:
    if has_source_thinking:
        return "thinking"
    if pair.style == "code" or "```" in answer or "~~~" in answer:
        return "code"
    if pair.style in QA_STYLES:
        return "qa"
    return "section"


def _terms(rec, text: str) -> tuple[str, ...]:
    """Glossary terms of markdown text, segmented paragraph by paragraph (code removed). Samples of one
    document share paragraphs (a section's answer, its code explanation, a Q&A), and the recognizer caches
    per paragraph, so each paragraph is segmented by jieba once."""
    out: dict[str, None] = {}
    for para in strip_code(text).split("\n\n"):
        if para.strip():
            out.update(dict.fromkeys(rec.terms(para.strip())))
    return tuple(out)


def attach_thinking(
    pairs: list[Pair], roots: list[ThinkingNode]
) -> tuple[dict[int, list[ThinkingNode]], list[ThinkingNode]]:
    """Map each thinking tree to the pair it belongs to: among the pairs whose region (section, plus answer
    sub-sections of a question heading) holds it, the question asked last before it; else the section text
    (the chunk it sits in); else the next question; else the code block before it."""
    attached: dict[int, list[ThinkingNode]] = {}
    orphans: list[ThinkingNode] = []
    for r in roots:
        L = r.line
        in_reg = [(i, p) for i, p in enumerate(pairs) if p.region[0] <= L <= p.region[1]]
        qa = [(i, p) for i, p in in_reg if p.style in QA_STYLES and p.start <= L]
        sec = [(i, p) for i, p in in_reg if p.style == "section"]
        sec_before = [(i, p) for i, p in sec if p.start <= L]
        later_qa = [(i, p) for i, p in in_reg if p.style in QA_STYLES]
        code = [(i, p) for i, p in in_reg if p.style == "code" and p.start <= L]
        choice = None
        if qa:
            choice = max(qa, key=lambda ip: (ip[1].start, ip[0]))[0]
        elif sec_before:
            choice = max(sec_before, key=lambda ip: (ip[1].start, ip[0]))[0]
        elif sec:
            choice = sec[0][0]
        elif later_qa:
            choice = min(later_qa, key=lambda ip: ip[1].start)[0]
        elif code:
            choice = max(code, key=lambda ip: ip[1].start)[0]
        if choice is None:
            orphans.append(r)
        else:
            attached.setdefault(choice, []).append(r)
    return attached, orphans


_FRONT_MATTER = re.compile(r"\A(---|\+\+\+)[ \t]*\n(?:.*\n)*?\1[ \t]*(?:\n|\Z)")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")


def blank_front_matter(text: str) -> tuple[str, str]:
    """YAML/TOML front matter (``---`` … ``---`` at the top) blanked to empty lines (line numbers kept), and
    its ``title:`` value ('' when none). Left in, markdown would read it as a setext heading."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return text, ""
    block = m.group(0)
    title = next(
        (
            ln.split(":", 1)[1].strip().strip("\"'")
            for ln in block.split("\n")
            if re.match(r"^title\s*[:=]", ln, re.I) and ":" in ln
        ),
        "",
    )
    return "\n" * block.count("\n") + text[m.end() :], title


def close_unclosed_fences(text: str, tokens) -> tuple[str, list[tuple[int, str, int]]]:
    """Close every code fence that is never closed before the next heading: the last blank line before that
    heading becomes the closing fence (a line is inserted when there is none, or appended at the end of the
    document). Returns the text and (opening line, markup, closing line) per repair."""
    lines = text.split("\n")
    fixes: list[tuple[int, str, int]] = []
    for open_line, markup in unclosed_fences(tokens, lines):
        heading = next((i for i in range(open_line, len(lines)) if _ATX_HEADING.match(lines[i])), None)
        fence = markup[0] * max(3, len(markup))
        if heading is None:
            lines.append(fence)
            fixes.append((open_line, markup, len(lines)))
            continue
        blank = next((i for i in range(heading - 1, open_line - 1, -1) if not lines[i].strip()), None)
        if blank is not None and blank > open_line - 1:
            lines[blank] = fence
            fixes.append((open_line, markup, blank + 1))
        else:
            lines.insert(heading, fence)
            fixes.append((open_line, markup, heading + 1))
        break  # one repair at a time: later fences are re-detected on the repaired text
    return "\n".join(lines), fixes


def quality_gate(q, min_quality: float) -> str | None:
    """Why a thinking text fails the gate (score below minQuality, or a restatement of the answer); None
    when it passes. Generated thinking that fails is rejected; the author's thinking is only reported."""
    if q.score < min_quality:
        return f"thinking quality {q.score:.2f} < minQuality {min_quality}: " + "; ".join(q.problems)
    if q.restatement > MAX_RESTATEMENT:
        return f"thinking restates the answer ({q.restatement:.0%} copied)"
    return None


def process_text(text: str, rel: str, opts: DocOptions) -> DocResult:
    res = DocResult(file=rel, n_bytes=len(text.encode("utf-8")))
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text, fm_title = blank_front_matter(text)
    tokens = block_tokens(text)
    for _ in range(100):  # each pass repairs the first unclosed fence; a document has few
        text, fixes = close_unclosed_fences(text, tokens)
        if not fixes:
            break
        tokens = block_tokens(text)
        for line, markup, closed in fixes:
            # everything after an unclosed fence would silently become code: close it, keep the rest
            res.warnings.append(
                f"{rel}:{line}:1: code fence {markup} opened here is never closed; closed it at line {closed} "
                f"(before the next heading). Add a line '{markup}' after the last line of the code"
            )
    code = code_line_ranges(tokens)
    roots, terrs = parse_thinking(text, code, heading_lines(tokens))
    for e in terrs:
        res.errors.append(f"{rel}:{e.line}:{e.col}: {e.message}; {e.fix}")
        res.rejects.append(Reject(rel, e.line, e.message, fix=e.fix, kind="thinking", col=e.col))
    if res.errors:
        return res
    res.thinking_blocks = sum(1 for _ in roots)
    res.max_thinking_depth = max((r.max_depth() for r in roots), default=0)
    normalizer = _normalizer(opts)
    # blank thinking out (line numbers kept), normalise outside code, parse. Without thinking blocks the
    # first parse is reused: normalisation keeps the line structure, so token.map still fits.
    if roots:
        blanked = blank_out(text, roots)
        tokens = block_tokens(blanked)
        code_out = code_line_ranges(tokens)
    else:
        blanked, code_out = text, code
    norm = normalizer.markdown(blanked, code_out)
    if norm.count("\n") != blanked.count("\n"):  # never expected: normalisation keeps lines; re-parse if not
        tokens = block_tokens(norm)
    parsed = parse_markdown(norm, tokens, inline=normalizer.inline)
    for r in roots:
        r.map_text(lambda s: _norm_part(normalizer, s))
    doc_title = parsed.title or fm_title or Path(rel).stem
    pairs, warns = detect_pairs(parsed, doc_title)
    pairs = chunk_pairs(pairs, opts.max_answer_chars)
    for line, msg in warns:
        res.warnings.append(f"{rel}:{line}: {msg}")
    attached, orphans = attach_thinking(pairs, roots)
    for r in orphans:
        res.rejects.append(
            Reject(
                rel,
                r.line,
                "<thinking> block is not inside any question, answer or section",
                fix="move it directly below the question it reasons about",
                kind="thinking",
                col=r.col,
            )
        )
    rec = term_recognizer(opts.glossary)
    for idx, pair in enumerate(pairs):
        trees = attached.get(idx, [])
        if pair.problems:
            for prob in pair.problems:
                res.rejects.append(
                    Reject(
                        rel,
                        pair.line,
                        prob,
                        kind=pair.kind,
                        fix="write the answer below the question (e.g. a '答：' paragraph)"
                        if pair.kind == "sample"
                        else "nothing to fix: reference lists are not training text",
                        sample={"question": pair.question[:200]},
                    )
                )
            continue
        answer = pair.answer_markdown().strip()
        question = pair.question.strip()
        if not answer:
            res.rejects.append(
                Reject(
                    rel,
                    pair.line,
                    "empty answer",
                    fix="write the answer text",
                    sample={"question": question[:200]},
                )
            )
            continue
        s = Sample(
            type=_sample_type(pair, bool(trees), answer),
            style=pair.style,
            system=_system(opts, doc_title, pair),
            question=question,
            answer=answer,
            source_file=rel,
            source_line=pair.line,
            end_line=pair.end_line,
            heading=" › ".join(pair.section.path),
        )
        q_terms = _terms(rec, question)
        a_terms = _terms(rec, answer)
        if trees:
            s.reasoning = render_reasoning(trees, opts.nested)
            s.thinking_method = "source"
            s.thinking_blocks = len(trees)
            s.thinking_depth = max(t.max_depth() for t in trees)
            s.thinking_line = trees[0].line
            if not s.reasoning.strip():
                res.rejects.append(
                    Reject(
                        rel,
                        trees[0].line,
                        "empty <thinking> block",
                        col=trees[0].col,
                        fix="write the reasoning between <thinking> and </thinking> or remove the tags",
                        kind="thinking",
                        sample={"question": question[:200]},
                    )
                )
                continue
        elif opts.generate == "template":
            s.reasoning = evidence_reasoning(question, answer, list(dict.fromkeys(q_terms + a_terms)))
            s.thinking_method = "template"
            s.generated_thinking = True
        elif opts.generate == "model":
            s.thinking_method = "model"  # filled in by the parent process (one teacher model for all)
            s.generated_thinking = True
        else:
            res.rejects.append(
                Reject(
                    rel,
                    pair.line,
                    "no <thinking> block and thinking.generate is 'none'",
                    fix="add a <thinking> block with the reasoning, or set thinking.generate "
                    "to 'template' or 'model'",
                    sample={"question": question[:200]},
                )
            )
            continue
        # template reasoning is built from the question/answer text and terms: no need to segment it again
        r_terms = _terms(rec, s.reasoning) if s.thinking_method == "source" else ()
        s.terms = list(dict.fromkeys(q_terms + a_terms + r_terms))
        if s.reasoning:
            q = assess_quality(s.reasoning, answer, a_terms, r_terms, source=f"{question}\n\n{answer}")
            s.quality = q.as_dict()
            gate = quality_gate(q, opts.min_quality)
            if gate and s.generated_thinking:
                res.rejects.append(
                    Reject(
                        rel,
                        pair.line,
                        f"generated thinking rejected by the quality gate: {gate}",
                        kind="thinking_quality",
                        fix="write the reasoning in a <thinking> block, or use a teacher model",
                        sample={"question": question[:200], "quality": s.quality},
                    )
                )
                continue
            if gate:  # the author's own thinking is never dropped: reported instead
                s.warnings.append(gate)
        res.samples.append(s)
    if not pairs and not roots:
        res.warnings.append(
            f"{rel}:1: document produced no samples (no question/answer, section text or "
            "explained code found)"
        )
    return res


_WS = re.compile(r"\s+")


def process_file(path: str, rel: str, opts: DocOptions) -> DocResult:
    try:
        decoded = decode_markdown(Path(path).read_bytes())
    except EncodingProblem as exc:
        res = DocResult(file=rel, n_bytes=0)
        res.errors.append(f"{rel}:{exc.line}: {exc.reason}; save the file as UTF-8")
        res.rejects.append(Reject(rel, exc.line, exc.reason, fix="save the file as UTF-8", kind="document"))
        return res
    except OSError as exc:
        res = DocResult(file=rel, n_bytes=0)
        res.errors.append(f"{rel}:0: cannot read: {exc}")
        res.rejects.append(Reject(rel, 0, f"cannot read: {exc}", kind="document"))
        return res
    res = process_text(decoded.text, rel, opts)
    if decoded.warning(rel):
        res.warnings.insert(0, decoded.warning(rel))
    return res
