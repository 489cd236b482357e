"""Metrics for Chinese domain answers of a thinking model.

Text metrics (pure Python, no torch):

* ``bleu`` / ``corpus_bleu``: sacrebleu with ``tokenize='zh'`` (each CJK character is a token, latin words stay
  whole), 0..100.
* ``rouge_l``: ROUGE-L F1 of rouge-chinese on jieba-segmented text, 0..1 (what LLaMA Factory's
  ``predict_with_generate`` reports, minus the thinking/answer split).
* ``char_accuracy``: 1 - character error rate (Levenshtein distance over non-whitespace characters divided by the
  reference length), clipped to 0..1.
* ``term_hits``: glossary terms (cryptography glossary of ``thinktune.data``) found in the reference; which of
  them the prediction also contains. Term accuracy = hits / terms.
* ``conclusion_overlap`` / ``concept_accuracy``: does the prediction carry the reference's key terms *and* its
  conclusion (the last sentence of the reference answer)? Concept accuracy = mean of term accuracy and the
  character-bigram recall of the conclusion sentence in the prediction (only the latter when the reference has no
  glossary term).
* ``split_thinking`` / ``thinking_compliant``: a prediction complies when it has ``</think>`` and a non-empty
  answer after it.

Every text metric is computed three ways by :func:`score_prediction`: on the thinking part, on the answer part
and on the whole text.

Model metrics (torch): :func:`score_responses` runs one forward pass per sample and returns the token-level NLL of
the assistant turn only, split into thinking and answer tokens, plus the argmax token ids (for top-1 agreement
between two models). Prompts are rendered exactly like LLaMA Factory's ``qwen3`` template renders them in
training (ChatML; the response starts with ``<think>\\n``), so the perplexity here is the exp of the eval loss.
"""

from __future__ import annotations

import json
import math
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


_GLOSSARY_TSV = Path(__file__).resolve().parent.parent / "data" / "resources" / "crypto_glossary.tsv"
_FALLBACK_TERMS = [
    "SM2",
    "SM3",
    "SM4",
    "AES",
    "RSA",
    "ECC",
    "ECDSA",
    "SHA-256",
    "HMAC",
    "TLS",
    "对称加密",
    "非对称加密",
    "公钥",
    "私钥",
    "数字签名",
    "哈希函数",
    "分组密码",
    "序列密码",
    "密钥交换",
    "椭圆曲线",
    "随机数",
    "证书",
    "消息认证码",
    "密钥派生",
    "侧信道攻击",
    "国密",
]


def _parse_glossary_tsv(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        term = parts[0].strip()
        if not term:
            continue
        aliases = [a.strip() for a in parts[2].split(",")] if len(parts) > 2 else []
        out.setdefault(term, [])
        out[term] += [a for a in aliases if a and a != term]
    return out


def load_glossary(extra: str | Path | None = None) -> dict[str, list[str]]:
    """term -> aliases. Uses ``thinktune.data.glossary.load_glossary`` (the data stage's glossary, so both stages
    agree on what a term is), else the shipped TSV, else a small built-in list. ``extra`` is a user glossary
    (``term<TAB>category<TAB>aliases``, one per line)."""
    terms: dict[str, list[str]] = {}
    try:
        from thinktune.data.glossary import load_glossary as _data_glossary

        g = _data_glossary(extra)
        terms = {t: [] for t in g.terms}
        for form, canonical in g.lookup.items():
            if form != canonical.lower():
                terms.setdefault(canonical, []).append(form)
        return terms
    except Exception:  # noqa: BLE001 - the data stage's loader missing or changed: read the TSV ourselves
        terms = {}
    if _GLOSSARY_TSV.is_file():
        terms = _parse_glossary_tsv(_GLOSSARY_TSV.read_text(encoding="utf-8"))
    if not terms:
        terms = {t: [] for t in _FALLBACK_TERMS}
    if extra:
        for t, al in _parse_glossary_tsv(Path(extra).read_text(encoding="utf-8")).items():
            terms.setdefault(t, []).extend(al)
    return terms


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


# ------------------------------------------------------------------------------------------------------------
# Prompt rendering and model scoring (torch)


def render_prompt_lf(messages: Sequence[dict[str, str]]) -> str:
    """ChatML prompt exactly as LLaMA Factory's ``qwen3`` template renders it in training (ends ``assistant\\n``;
    history assistant turns keep their text as written)."""
    parts = []
    for m in messages:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def response_parts(reference: str) -> tuple[str, str]:
    """The trained response split into (thinking segment incl. tags, answer segment incl. ``<|im_end|>``),
    normalised to LLaMA Factory's ``<think>\\n{cot}\\n</think>\\n\\n{answer}`` form."""
    thinking, answer, has_close = split_thinking(reference)
    if not has_close and THINK_OPEN not in reference:
        # no reasoning in the reference: LF (enable_thinking=true) prepends an empty think block
        return f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n", reference.strip() + IM_END + "\n"
    return f"{THINK_OPEN}\n{thinking}\n{THINK_CLOSE}\n\n", answer + IM_END + "\n"


@dataclass
class ResponseScore:
    nll_thinking: float
    tokens_thinking: int
    nll_answer: float
    tokens_answer: int
    argmax: list[int]  # the model's top-1 prediction at each scored position (thinking then answer)
    truncated: bool = False

    @property
    def nll(self) -> float:
        return self.nll_thinking + self.nll_answer

    @property
    def tokens(self) -> int:
        return self.tokens_thinking + self.tokens_answer


def encode_sample(tokenizer, sample: Sample, max_length: int) -> tuple[list[int], int, int, bool]:
    """(ids, response start, thinking/answer boundary, truncated). Prompt, thinking and answer are tokenized
    separately, as LLaMA Factory does; the response tail is cut to ``max_length``."""
    p = tokenizer.encode(render_prompt_lf(sample.messages), add_special_tokens=False)
    think, ans = response_parts(sample.reference)
    t = tokenizer.encode(think, add_special_tokens=False)
    a = tokenizer.encode(ans, add_special_tokens=False)
    ids = p + t + a
    truncated = len(ids) > max_length
    if truncated:
        if len(p) >= max_length - 1:  # keep at least one response token
            p = p[-(max_length // 2) :]
        ids = (p + t + a)[:max_length]
    return ids, len(p), len(p) + len(t), truncated


def score_responses(
    model, tokenizer, samples: Sequence[Sample], *, max_length: int = 4096, progress=None
) -> list[ResponseScore]:
    """Token-level NLL of each sample's assistant turn (labels = response tokens only, like SFT)."""
    import torch

    device = next(model.parameters()).device
    out: list[ResponseScore] = []
    model.eval()
    for s in samples:
        ids, start, boundary, truncated = encode_sample(tokenizer, s, max_length)
        x = torch.tensor([ids], device=device)
        # position i predicts token i+1: response tokens ids[start:] are predicted at positions start-1 .. L-2.
        # Only those logits are materialised (logits_to_keep), not L x vocab.
        keep = len(ids) - start + 1
        with torch.no_grad():
            try:
                logits = model(input_ids=x, logits_to_keep=keep).logits[0]
            except TypeError:  # a model class without logits_to_keep
                logits = model(input_ids=x).logits[0]
            logits = logits[-keep:-1].float()
        targets = x[0, start:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        mid = min(boundary, len(ids)) - start  # thinking tokens come first (the cut may fall inside them)
        nll_t = float(nll[:mid].sum())
        nll_a = float(nll[mid:].sum())
        out.append(
            ResponseScore(
                nll_t, mid, nll_a, max(0, len(ids) - boundary), logits.argmax(-1).tolist(), truncated
            )
        )
        if progress:
            progress()
    return out


def perplexity(scores: Sequence[ResponseScore]) -> dict[str, float | None]:
    """Token-weighted perplexity of the whole response, the thinking part and the answer part."""

    def ppl(nll: float, n: int) -> float | None:
        return math.exp(min(nll / n, 700)) if n else None

    t_nll, t_n = sum(s.nll_thinking for s in scores), sum(s.tokens_thinking for s in scores)
    a_nll, a_n = sum(s.nll_answer for s in scores), sum(s.tokens_answer for s in scores)
    return {
        "full": ppl(t_nll + a_nll, t_n + a_n),
        "thinking": ppl(t_nll, t_n),
        "answer": ppl(a_nll, a_n),
        "tokens": t_n + a_n,
        "truncated": sum(1 for s in scores if s.truncated),
    }


def top1_agreement(a: Sequence[ResponseScore], b: Sequence[ResponseScore]) -> float | None:
    """Fraction of scored positions where two models' argmax tokens agree."""
    same = total = 0
    for x, y in zip(a, b, strict=True):
        n = min(len(x.argmax), len(y.argmax))
        same += sum(1 for i in range(n) if x.argmax[i] == y.argmax[i])
        total += n
    return same / total if total else None


# ------------------------------------------------------------------------------------------------------------
# Generation


def generation_prompt(tokenizer, messages: Sequence[dict[str, str]]) -> tuple[str, str]:
    """(prompt text, prefill). Uses the tokenizer's chat template with ``enable_thinking=True`` (the official
    Thinking-2507 template pre-fills ``<think>\\n``: prefill is then ``"<think>\\n"``, to be put back in front of
    the generated text); falls back to LLaMA Factory's ChatML rendering when there is no template."""
    prompt = None
    if getattr(tokenizer, "chat_template", None):
        try:
            prompt = tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True, enable_thinking=True
            )
        except Exception:  # noqa: BLE001 - a broken template: fall back to ChatML
            prompt = None
    if not isinstance(prompt, str):
        prompt = render_prompt_lf(messages)
    stripped = prompt.rstrip("\n")
    prefill = THINK_OPEN + "\n" if stripped.endswith(THINK_OPEN) else ""
    return prompt, prefill


def generate(
    model, tokenizer, samples: Sequence[Sample], *, max_new_tokens: int, batch_size: int = 4, progress=None
) -> list[dict[str, Any]]:
    """Greedy generations: [{"text": prefill + generated, "new_tokens": n, "hit_limit": bool}]."""
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        eos_ids.add(im_end)
    results: list[dict[str, Any]] = []
    try:
        for i in range(0, len(samples), batch_size):
            batch = samples[i : i + batch_size]
            prompts = [generation_prompt(tokenizer, s.messages) for s in batch]
            enc = tokenizer(
                [p for p, _ in prompts], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=sorted(eos_ids) or None,
                    pad_token_id=tokenizer.pad_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            for row, (_, prefill) in zip(new.tolist(), prompts, strict=True):
                n = next((j + 1 for j, t in enumerate(row) if t in eos_ids), None)
                hit_limit = n is None
                row = row[:n] if n else row
                text = tokenizer.decode([t for t in row if t not in eos_ids], skip_special_tokens=False)
                results.append({"text": prefill + text, "new_tokens": len(row), "hit_limit": hit_limit})
            if progress:
                progress(len(batch))
    finally:
        tokenizer.padding_side = old_side
    return results
