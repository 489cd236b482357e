"""Extra questions per chunk from a teacher model (``thinking.extraQuestionsPerChunk``).

A chunk is the text of one section sample (a section's own text, already cut to the length budget by
chunk.py). For each, the teacher proposes up to N questions answerable from the chunk alone
(prompts/questions_*.txt), then answers each with thinking (prompts/answer_*.txt). Nothing it writes is
trusted; a proposal becomes a sample only when

* it is a question of sensible length, within the first N proposed;
* it does not repeat a question the author asks in that chunk's section (or another proposal of the chunk);
* the reply holds an answer, and the answer is grounded in the chunk (thinking.answer_grounding);
* the thinking passes the same quality gate as all generated thinking, with the chunk as its source.

Every other proposal is a Reject (kind ``teacher_question``) whose reason starts with one of REASONS, so the
build report can count them by reason. Kept samples carry ``generated_question``/``generated_answer`` (and
``generated_thinking``) so a reader can always tell the teacher's text from the author's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from thinktune.data.dedup import normalise
from thinktune.data.document import quality_gate
from thinktune.data.samples import Reject, Sample
from thinktune.data.thinking import MIN_ANSWER_GROUNDING, answer_grounding, assess_quality, strip_code

REJECT_KIND = "teacher_question"
REJECT_PREFIX = "teacher question rejected"
REASONS = (
    "no question list in the reply",
    "beyond extraQuestionsPerChunk",
    "not a question",
    "duplicate of the author's question",
    "duplicate of another proposed question",
    "no answer in the reply",
    "answer not grounded in the chunk",
    "thinking rejected by the quality gate",
)
DUPLICATE_DICE = 0.7  # character-bigram Dice similarity at which two questions ask the same thing
MAX_QUESTION_CHARS = 300


def _bigrams(text: str) -> set[str]:
    t = normalise(text)
    return {t[i : i + 2] for i in range(len(t) - 1)} or ({t} if t else set())


def similarity(a: str, b: str) -> float:
    """Dice similarity of two questions' character bigrams (punctuation, case and spaces ignored):
    '为什么要加盐？' vs '为什么需要加盐？' is 0.73."""
    x, y = _bigrams(a), _bigrams(b)
    return 2 * len(x & y) / (len(x) + len(y)) if x and y else 0.0


@dataclass
class Stats:
    per_chunk: int
    chunks: int = 0
    proposed: int = 0
    passed: int = 0
    rejected: Counter = field(default_factory=Counter)

    def as_dict(self, kept: int) -> dict:
        """Report section; ``kept`` is counted on the final dataset (later checks, e.g. length, may drop a
        sample that passed here, which is then in rejects under its own reason)."""
        return {
            "per_chunk": self.per_chunk,
            "chunks": self.chunks,
            "proposed": self.proposed,
            "passed_gate": self.passed,
            "kept": kept,
            "rejected": {r: self.rejected[r] for r in REASONS if self.rejected[r]},
        }


def author_questions(samples: list[Sample], chunk: Sample) -> list[str]:
    """The questions the author asks in the chunk's section: every sample of the same file under the same
    heading, or whose lines lie inside the chunk."""
    return [
        s.question
        for s in samples
        if s is not chunk
        and s.source_file == chunk.source_file
        and (s.heading == chunk.heading or chunk.source_line <= s.source_line <= chunk.end_line)
    ]


def extra_samples(teacher, chunks: list[Sample], every: list[Sample], n: int, rec, min_quality: float):
    """(kept samples, rejects, Stats) for the extra questions of each chunk (``every``: all samples of the
    build, to find the author's questions). TeacherError (unreachable endpoint) propagates."""
    stats = Stats(per_chunk=n)
    kept: list[Sample] = []
    rejects: list[Reject] = []

    def reject(chunk: Sample, key: str, detail: str, fix: str, sample: dict) -> None:
        stats.rejected[key] += 1
        rejects.append(
            Reject(
                chunk.source_file,
                chunk.source_line,
                f"{REJECT_PREFIX}: {key}: {detail}" if detail else f"{REJECT_PREFIX}: {key}",
                fix=fix,
                kind=REJECT_KIND,
                sample=sample,
            )
        )

    for chunk in chunks:
        stats.chunks += 1
        asked = author_questions(every, chunk)
        proposed, raw = teacher.propose_questions(chunk.answer, chunk.heading, asked, n)
        if proposed is None:
            reject(
                chunk,
                REASONS[0],
                'expected a JSON object {"questions": [...]}',
                "use a teacher model that follows instructions (the prompt is prompts/questions_system.txt)",
                {"reply": raw[:300]},
            )
            continue
        stats.proposed += len(proposed)
        taken: list[str] = []
        for i, q in enumerate(proposed):
            if i >= n:
                reject(
                    chunk, REASONS[1], f"{len(proposed)} proposed, {n} asked for", "", {"question": q[:200]}
                )
                continue
            if len(normalise(q)) < 4 or len(q) > MAX_QUESTION_CHARS:
                reject(chunk, REASONS[2], "", "use a stronger teacher model", {"question": q[:200]})
                continue
            dup = max(asked, key=lambda a, q=q: similarity(q, a), default=None)
            if dup is not None and similarity(q, dup) >= DUPLICATE_DICE:
                reject(
                    chunk,
                    REASONS[3],
                    f"'{dup[:80]}' (similarity {similarity(q, dup):.2f})",
                    "nothing to fix: the author's own question is kept",
                    {"question": q[:200], "author_question": dup[:200]},
                )
                continue
            twin = next((t for t in taken if similarity(q, t) >= DUPLICATE_DICE), None)
            if twin is not None:
                reject(chunk, REASONS[4], f"'{twin[:80]}'", "", {"question": q[:200]})
                continue
            taken.append(q)
            s = _answered(teacher, chunk, q, rec, min_quality, reject)
            if s is not None:
                stats.passed += 1
                kept.append(s)
    return kept, rejects, stats


def _answered(teacher, chunk: Sample, question: str, rec, min_quality: float, reject) -> Sample | None:
    """The teacher's answer to one proposed question as a sample, or None (rejected, with its reason)."""
    reply, raw = teacher.answer(question, chunk.answer, chunk.heading)
    if reply is None or not reply[1]:
        reject(
            chunk,
            REASONS[5],
            'expected a JSON object {"thinking": ..., "answer": ...}',
            "use a teacher model that follows instructions (the prompt is prompts/answer_system.txt)",
            {"question": question[:200], "reply": raw[:300]},
        )
        return None
    thinking, answer = reply
    a_terms = rec.terms(strip_code(answer))
    grounded = answer_grounding(answer, chunk.answer, a_terms)
    if grounded < MIN_ANSWER_GROUNDING:
        reject(
            chunk,
            REASONS[6],
            f"{grounded:.0%} supported < {MIN_ANSWER_GROUNDING:.0%}",
            "nothing to fix: the teacher wrote claims the chunk does not make",
            {"question": question[:200], "answer": answer[:300]},
        )
        return None
    r_terms = rec.terms(strip_code(thinking)) if thinking else ()
    q = assess_quality(thinking, answer, a_terms, r_terms, source=chunk.answer)
    gate = quality_gate(q, min_quality) if thinking.strip() else "empty thinking"
    if gate:
        reject(
            chunk,
            REASONS[7],
            gate,
            "use a stronger teacher model",
            {"question": question[:200], "reasoning": thinking[:300], "quality": q.as_dict()},
        )
        return None
    q_terms = rec.terms(question)
    return Sample(
        type="qa",
        style="teacher",
        system=chunk.system,
        question=question,
        answer=answer,
        source_file=chunk.source_file,
        source_line=chunk.source_line,
        end_line=chunk.end_line,
        heading=chunk.heading,
        reasoning=thinking,
        thinking_method="model",
        generated_thinking=True,
        generated_question=True,
        generated_answer=True,
        quality={**q.as_dict(), "answer_grounding": round(grounded, 3)},
        terms=list(dict.fromkeys(list(q_terms) + list(a_terms) + list(r_terms))),
    )
