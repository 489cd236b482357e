"""Text metrics for Chinese domain answers of a thinking model (pure Python: no torch, no model).

* ``load_samples`` / ``Sample``: the test conversations (LLaMA Factory data files) that evaluation scores.
* ``bleu`` / ``corpus_bleu``: sacrebleu with ``tokenize='zh'`` (each CJK character is a token, latin words stay
  whole), 0..100.
* ``rouge_l``: ROUGE-L F1 of rouge-chinese on jieba-segmented text, 0..1 (what LLaMA Factory's
  ``predict_with_generate`` reports, minus the thinking/answer split).
* ``char_accuracy``: 1 - character error rate of the *generated* text (Levenshtein distance over non-whitespace
  characters divided by the reference length), clipped to 0..1. Not the teacher-forced
  ``teacher_forced_char_accuracy`` of training (``thinktune.train.scoring``).
* ``term_hits`` / ``term_accuracy``: glossary terms (``thinktune.data.glossary.term_aliases``) found in the
  reference; which of them the prediction also contains. Term accuracy = hits / terms.
* ``conclusion_overlap`` / ``concept_accuracy``: does the prediction carry the reference's key terms *and* its
  conclusion (the last sentence of the reference answer)? Concept accuracy = mean of term accuracy and the
  character-bigram recall of the conclusion sentence in the prediction (only the latter when the reference has no
  glossary term).
* ``split_thinking`` / ``thinking_compliant``: a prediction complies when it has ``</think>`` and a non-empty
  answer after it.

Every text metric is computed three ways by :func:`score_prediction`: on the thinking part, on the answer part
and on the whole text. The model side (perplexity, generation) is ``thinktune.evaluate.inference``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ------------------------------------------------------------------------------------------------------------
# Samples


@dataclass
class Sample:
    """One test conversation: everything before the last assistant turn is the prompt."""

    messages: list[dict[str, str]]  # role/content, system first when present, ends with a user turn
    reference: str  # the last assistant turn: "<think>\n...\n</think>\n\nanswer"
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "tool",
    "function_call": "assistant",
    "tool": "tool",
}


def _conv_from_record(rec: dict[str, Any]) -> list[dict[str, str]]:
    if isinstance(rec.get("messages"), list) or isinstance(rec.get("conversations"), list):
        raw = rec.get("messages") if isinstance(rec.get("messages"), list) else rec["conversations"]
        conv = []
        for m in raw:
            role = m.get("role", m.get("from"))
            content = m.get("content", m.get("value"))
            if role is None or content is None:
                raise ValueError(f"message without role/content: {m!r}")
            conv.append({"role": _ROLE_ALIASES.get(role, role), "content": str(content)})
        if rec.get("system") and not (conv and conv[0]["role"] == "system"):
            conv.insert(0, {"role": "system", "content": str(rec["system"])})
        return conv
    if "instruction" in rec and "output" in rec:  # alpaca
        conv = []
        if rec.get("system"):
            conv.append({"role": "system", "content": str(rec["system"])})
        for q, a in rec.get("history") or []:
            conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        query = rec["instruction"] + (("\n" + rec["input"]) if rec.get("input") else "")
        conv += [{"role": "user", "content": query}, {"role": "assistant", "content": rec["output"]}]
        return conv
    raise ValueError(f"record has neither messages/conversations nor instruction/output: keys {sorted(rec)}")


def load_samples(path: str | Path, *, limit: int | None = None) -> list[Sample]:
    """Samples of a LLaMA Factory data file (json list or jsonl; sharegpt messages/conversations or alpaca)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out: list[Sample] = []
    for i, rec in enumerate(records):
        try:
            conv = _conv_from_record(rec)
        except ValueError as e:
            raise ValueError(f"{path}: record {i}: {e}") from None
        last = max((j for j, m in enumerate(conv) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            continue  # nothing to score
        meta = {
            k: v
            for k, v in rec.items()
            if k not in ("messages", "conversations", "instruction", "input", "output", "history", "system")
        }
        out.append(
            Sample(messages=conv[:last], reference=conv[last]["content"], id=str(rec.get("id", i)), meta=meta)
        )
        if limit is not None and len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------------------------------------------------
# Thinking split


def split_thinking(text: str) -> tuple[str, str, bool]:
    """(thinking, answer, has_close). Works with and without the opening tag (Thinking-2507 output has only
    ``</think>`` because the prompt pre-fills ``<think>\\n``). Without ``</think>`` everything is thinking."""
    has_close = THINK_CLOSE in text
    if has_close:
        thinking, answer = text.split(THINK_CLOSE, 1)
    else:
        thinking, answer = text, ""
    thinking = thinking.strip()
    if thinking.startswith(THINK_OPEN):
        thinking = thinking[len(THINK_OPEN) :]
    answer = answer.replace(IM_END, "").strip()
    return thinking.strip(), answer, has_close


def thinking_compliant(text: str) -> bool:
    """``</think>`` present and a non-empty answer after it (and no second reasoning block in the answer)."""
    _, answer, has_close = split_thinking(text)
    return has_close and bool(answer) and THINK_OPEN not in answer


# ------------------------------------------------------------------------------------------------------------
# Text metrics


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def bleu(hypothesis: str, reference: str) -> float:
    """Sentence BLEU (sacrebleu, tokenize='zh'), 0..100."""
    import sacrebleu

    hyp, ref = _norm(hypothesis), _norm(reference)
    if not hyp and not ref:
        return 100.0
    if not hyp or not ref:
        return 0.0
    return float(sacrebleu.sentence_bleu(hyp, [ref], tokenize="zh").score)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, tokenize='zh'), 0..100."""
    import sacrebleu

    if not hypotheses:
        return 0.0
    return float(
        sacrebleu.corpus_bleu(
            [_norm(h) for h in hypotheses], [[_norm(r) for r in references]], tokenize="zh"
        ).score
    )


@cache
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _segment(text: str) -> str:
    return " ".join(w for w in _jieba().cut(_norm(text)) if w.strip())


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 (rouge-chinese on jieba words), 0..1."""
    from rouge_chinese import Rouge

    hyp, ref = _segment(hypothesis), _segment(reference)
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    try:
        score = Rouge().get_scores(hyp, ref)[0]["rouge-l"]["f"]
    except (ValueError, RecursionError):  # rouge raises on hypotheses made only of punctuation
        return 0.0
    return float(min(1.0, round(score, 6)))


def _chars(text: str) -> list[str]:
    return [c for c in _norm(text) if not c.isspace()]


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance (two-row DP)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def char_accuracy(hypothesis: str, reference: str, *, max_chars: int = 4000) -> float:
    """1 - CER over non-whitespace characters, clipped to [0, 1]. Both texts are cut at ``max_chars``."""
    hyp, ref = _chars(hypothesis)[:max_chars], _chars(reference)[:max_chars]
    if not ref:
        return 1.0 if not hyp else 0.0
    return max(0.0, 1.0 - edit_distance(hyp, ref) / len(ref))


# ------------------------------------------------------------------------------------------------------------
# Terms


class TermMatcher:
    """Finds glossary terms in text. Latin terms match case-insensitively on word boundaries (``AES`` does not
    match inside ``CHAES``, but does inside ``AES-GCM``); CJK terms match as substrings. A term counts once when
    the term or any of its aliases occurs."""

    def __init__(self, terms: Iterable[str] | dict[str, Sequence[str]]):
        items = terms.items() if isinstance(terms, dict) else ((t, ()) for t in terms)
        self.terms: dict[str, list[re.Pattern[str]]] = {}
        for term, aliases in items:
            pats = []
            for form in [term, *aliases]:
                form = _norm(form)
                if not form:
                    continue
                esc = re.escape(form)
                if re.search(r"[A-Za-z0-9]", form[0]):
                    esc = r"(?<![A-Za-z0-9])" + esc
                if re.search(r"[A-Za-z0-9]", form[-1]):
                    esc = esc + r"(?![A-Za-z0-9])"
                pats.append(re.compile(esc, re.IGNORECASE))
            if pats:
                self.terms[_norm(term)] = pats

    def find(self, text: str) -> set[str]:
        text = _norm(text)
        return {t for t, pats in self.terms.items() if any(p.search(text) for p in pats)}


def term_hits(hypothesis: str, reference: str, matcher: TermMatcher) -> tuple[set[str], set[str]]:
    """(terms in the reference, those of them also in the hypothesis)."""
    ref_terms = matcher.find(reference)
    if not ref_terms:
        return set(), set()
    return ref_terms, ref_terms & matcher.find(hypothesis)


def term_accuracy(hypothesis: str, reference: str, matcher: TermMatcher) -> float | None:
    """Fraction of the reference's glossary terms that the hypothesis contains; None without reference terms."""
    ref_terms, hits = term_hits(hypothesis, reference, matcher)
    return len(hits) / len(ref_terms) if ref_terms else None


_SENT_END = re.compile(r"(?<=[。！？!?；;])|\n+")


def conclusion_sentence(text: str) -> str:
    """The last non-trivial sentence of an answer (markdown markers stripped)."""
    sentences = [re.sub(r"^[#>*\-\s\d.、]+", "", s).strip() for s in _SENT_END.split(_norm(text))]
    sentences = [s for s in sentences if len(_chars(s)) >= 4]
    return sentences[-1] if sentences else _norm(text)


def _bigrams(text: str) -> list[str]:
    cs = _chars(text)
    return [a + b for a, b in zip(cs, cs[1:], strict=False)] or cs


def conclusion_overlap(hypothesis: str, reference: str) -> float:
    """Character-bigram recall of the reference's conclusion sentence in the hypothesis, 0..1."""
    concl = _bigrams(conclusion_sentence(reference))
    if not concl:
        return 1.0
    hyp = set(_bigrams(hypothesis))
    return sum(1 for g in concl if g in hyp) / len(concl)


def concept_accuracy(hypothesis: str, reference: str, matcher: TermMatcher) -> float:
    """Mean of term accuracy and conclusion overlap (conclusion overlap alone without reference terms)."""
    ta = term_accuracy(hypothesis, reference, matcher)
    co = conclusion_overlap(hypothesis, reference)
    return co if ta is None else (ta + co) / 2


# ------------------------------------------------------------------------------------------------------------
# Per-prediction scores


TEXT_METRICS = ("bleu", "rougeL", "charAccuracy", "termAccuracy", "conceptAccuracy")
PARTS = ("answer", "thinking", "full")


def score_prediction(prediction: str, reference: str, matcher: TermMatcher) -> dict[str, Any]:
    """All text metrics of one prediction, per part: {"answer": {...}, "thinking": {...}, "full": {...},
    "thinkingCompliant": bool, "terms": {"reference": [...], "hit": [...]}} (terms of the full texts)."""
    p_think, p_ans, _ = split_thinking(prediction)
    r_think, r_ans, _ = split_thinking(reference)
    pairs = {
        "answer": (p_ans, r_ans),
        "thinking": (p_think, r_think),
        "full": (f"{p_think}\n{p_ans}".strip(), f"{r_think}\n{r_ans}".strip()),
    }
    out: dict[str, Any] = {}
    for part, (hyp, ref) in pairs.items():
        out[part] = {
            "bleu": bleu(hyp, ref),
            "rougeL": rouge_l(hyp, ref),
            "charAccuracy": char_accuracy(hyp, ref),
            "termAccuracy": term_accuracy(hyp, ref, matcher),
            "conceptAccuracy": concept_accuracy(hyp, ref, matcher),
        }
    ref_terms, hits = term_hits(pairs["full"][0], pairs["full"][1], matcher)
    out["terms"] = {"reference": sorted(ref_terms), "hit": sorted(hits)}
    # answer terms drive the per-term table: does the *answer* mention the terms the reference answer uses?
    a_ref, a_hit = term_hits(p_ans, r_ans, matcher)
    out["answerTerms"] = {"reference": sorted(a_ref), "hit": sorted(a_hit)}
    out["thinkingCompliant"] = thinking_compliant(prediction)
    return out


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate_scores(
    scores: Sequence[dict[str, Any]], predictions: Sequence[str], references: Sequence[str]
) -> dict[str, Any]:
    """Means over predictions (term accuracy micro-averaged: all hits / all reference terms) + corpus BLEU."""
    out: dict[str, Any] = {}
    for part in PARTS:
        agg: dict[str, Any] = {}
        for m in TEXT_METRICS:
            agg[m] = _mean(s[part][m] for s in scores)
        key = "answerTerms" if part == "answer" else "terms"
        if part in ("answer", "full"):
            n_ref = sum(len(s[key]["reference"]) for s in scores)
            n_hit = sum(len(s[key]["hit"]) for s in scores)
            agg["termAccuracy"] = n_hit / n_ref if n_ref else None
            agg["termAccuracyMacro"] = _mean(s[part]["termAccuracy"] for s in scores)
        splits = [split_thinking(t) for t in predictions], [split_thinking(t) for t in references]
        idx = {"thinking": 0, "answer": 1}.get(part)
        if idx is None:
            hyps = [f"{a[0]}\n{a[1]}".strip() for a in splits[0]]
            refs = [f"{a[0]}\n{a[1]}".strip() for a in splits[1]]
        else:
            hyps, refs = [a[idx] for a in splits[0]], [a[idx] for a in splits[1]]
        agg["corpusBleu"] = corpus_bleu(hyps, refs)
        out[part] = agg
    out["thinkingCompliance"] = _mean(1.0 if s["thinkingCompliant"] else 0.0 for s in scores)
    return out


def per_term_table(scores: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{term, references, hits, accuracy}] over answer terms, weakest first."""
    ref_count: dict[str, int] = {}
    hit_count: dict[str, int] = {}
    for s in scores:
        for t in s["answerTerms"]["reference"]:
            ref_count[t] = ref_count.get(t, 0) + 1
        for t in s["answerTerms"]["hit"]:
            hit_count[t] = hit_count.get(t, 0) + 1
    rows = [
        {"term": t, "references": n, "hits": hit_count.get(t, 0), "accuracy": hit_count.get(t, 0) / n}
        for t, n in ref_count.items()
    ]
    return sorted(rows, key=lambda r: (r["accuracy"], -r["references"], r["term"]))
