"""Model inference for evaluation (torch): teacher-forced scoring of the reference responses and generation.

:func:`score_responses` runs one forward pass per sample and returns the token-level NLL of the assistant turn
only, split into thinking and answer tokens, plus the argmax token ids (for top-1 agreement between two models,
:func:`top1_agreement`); :func:`perplexity` aggregates them. Prompts are rendered exactly like LLaMA Factory's
``qwen3`` template renders them in training (ChatML; the response starts with ``<think>\\n``), so the perplexity
here is the exp of the eval loss. :func:`generate` produces the (greedy or sampled) answers that the pure text metrics of
``thinktune.evaluate.metrics`` score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thinktune.evaluate.metrics import IM_END, IM_START, THINK_CLOSE, THINK_OPEN, Sample, split_thinking

# ------------------------------------------------------------------------------------------------------------
# Prompt rendering and response scoring


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


def sampling_settings(model) -> dict[str, Any]:
    """The model's own sampling settings (its generation_config), or Qwen3-Thinking's where it has none."""
    gc = getattr(model, "generation_config", None)
    own = {k: getattr(gc, k, None) for k in ("temperature", "top_p", "top_k")}
    return {k: v if v is not None else QWEN3_THINKING_SAMPLING[k] for k, v in own.items()}


# Qwen3-4B-Thinking-2507's generation_config.json (and its model card's recommendation for thinking mode)
QWEN3_THINKING_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}


def generate(
    model,
    tokenizer,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int,
    batch_size: int = 4,
    progress=None,
    sampling: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generations: [{"text": prefill + generated, "new_tokens": n, "hit_limit": bool}]. Greedy by default (what
    verification compares token by token); ``sampling``: the model's own settings (``sampling_settings``), each
    batch seeded from ``seed`` and its position, so a run is reproducible."""
    import torch

    decode = (
        {"do_sample": True, **sampling_settings(model)}
        if sampling
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )

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
            if sampling:
                torch.manual_seed(seed + i)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=sorted(eos_ids) or None,
                    pad_token_id=tokenizer.pad_token_id,
                    **decode,
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
