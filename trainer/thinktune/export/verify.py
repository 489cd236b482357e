"""Verify quantized variants against the merged model on the test split.

For the merged model and each variant, on the same ``spec.verify.samples`` test samples:

* perplexity of the assistant turn (LLaMA Factory rendering, as in training) and its relative increase;
* top-1 token agreement: how often the variant's argmax token equals the merged model's at each response
  position (teacher-forced on the reference, so it does not compound);
* greedy generations (``max_new_tokens``): Chinese character accuracy of the variant's text against the merged
  model's text (1 - CER; 1.0 = identical generations) and term accuracy against the reference (glossary terms of
  the reference found in the generation); the drop of term accuracy against the merged model.

Warnings when the perplexity increase is above ``verify.maxPerplexityIncrease`` or the term-accuracy drop above
``verify.maxTermAccuracyDrop``, and (advisory, not in the spec) when top-1 agreement is below
``MIN_TOP1_AGREEMENT``. A variant is ``verified`` when it has no warning.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

from thinktune.spec import VerifySpec

MIN_TOP1_AGREEMENT = 0.90


def _release(model) -> None:
    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def measure(model, tokenizer, samples, matcher, *, max_new_tokens: int, max_length: int) -> dict[str, Any]:
    """Response scores + generations + term accuracy of one model."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    device = next(model.parameters()).device
    scores = inference.score_responses(model, tokenizer, samples, max_length=max_length)
    gens = (
        inference.generate(
            model,
            tokenizer,
            samples,
            max_new_tokens=max_new_tokens,
            batch_size=8 if device.type == "cuda" else 2,
        )
        if max_new_tokens > 0
        else []
    )
    texts = [g["text"] for g in gens]
    n_ref = n_hit = 0
    for t, s in zip(texts, samples, strict=False):
        ref_terms, hits = M.term_hits(t, s.reference, matcher)
        n_ref += len(ref_terms)
        n_hit += len(hits)
    return {
        "scores": scores,
        "texts": texts,
        "perplexity": inference.perplexity(scores),
        "termAccuracy": n_hit / n_ref if n_ref else None,
        "compliance": (sum(1 for t in texts if M.thinking_compliant(t)) / len(texts)) if texts else None,
    }


def compare(ref: dict[str, Any], var: dict[str, Any], spec: VerifySpec) -> dict[str, Any]:
    """Numbers + warnings of a variant against the merged model's measurement."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    p0, p1 = ref["perplexity"]["full"], var["perplexity"]["full"]
    inc = (p1 / p0 - 1) if p0 and p1 else None
    char_acc = (
        (
            sum(M.char_accuracy(b, a) for a, b in zip(ref["texts"], var["texts"], strict=True))
            / len(ref["texts"])
        )
        if ref["texts"]
        else None
    )
    t0, t1 = ref["termAccuracy"], var["termAccuracy"]
    drop = (t0 - t1) if t0 is not None and t1 is not None else None
    top1 = inference.top1_agreement(ref["scores"], var["scores"])
    warnings = []
    if inc is not None and inc > spec.max_perplexity_increase:
        warnings.append(
            f"perplexity +{inc:.1%} vs merged ({p0:.3f} -> {p1:.3f}) exceeds maxPerplexityIncrease "
            f"{spec.max_perplexity_increase:.1%}"
        )
    if drop is not None and drop > spec.max_term_accuracy_drop:
        warnings.append(
            f"term accuracy dropped {drop:.3f} ({t0:.3f} -> {t1:.3f}) > maxTermAccuracyDrop "
            f"{spec.max_term_accuracy_drop:.3f}"
        )
    if top1 is not None and top1 < MIN_TOP1_AGREEMENT:
        warnings.append(
            f"top-1 token agreement with the merged model is {top1:.1%} (< {MIN_TOP1_AGREEMENT:.0%})"
        )
    return {
        "perplexity": p1,
        "perplexityIncrease": inc,
        "charAccuracyVsMerged": char_acc,
        "termAccuracy": t1,
        "termAccuracyDrop": drop,
        "top1Agreement": top1,
        "thinkingCompliance": var["compliance"],
        "warnings": warnings,
        "verified": not warnings,
    }


def verify_variants(
    merged_dir: str,
    variants: Sequence[dict[str, Any]],
    samples,
    *,
    spec: VerifySpec,
    terms=None,
    max_new_tokens: int = 128,
    max_length: int = 2048,
    loader: Callable[[str], Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Verify ``variants`` ([{"name", "path"}]) against the merged model in ``merged_dir``.

    Returns {"samples", "maxNewTokens", "merged": {perplexity, termAccuracy, ...}, "variants": {name: {...}}}.
    Models are loaded one at a time (merged first) and released after use. ``loader(path)`` loads a variant
    (default: :func:`thinktune.export.quantize.load_quantized`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktune.data.glossary import term_aliases
    from thinktune.evaluate import metrics as M
    from thinktune.evaluate.run import pick_device
    from thinktune.export.quantize import load_quantized

    samples = list(samples)[: spec.samples]
    matcher = M.TermMatcher(terms if terms is not None else term_aliases())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    device = pick_device()
    log = log or (lambda _m: None)
    log(f"verify: merged model on {len(samples)} samples")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto").to(device).eval()
    ref = measure(merged, tokenizer, samples, matcher, max_new_tokens=max_new_tokens, max_length=max_length)
    _release(merged)
    out: dict[str, Any] = {
        "samples": len(samples),
        "maxNewTokens": max_new_tokens,
        "merged": {
            "perplexity": ref["perplexity"]["full"],
            "perplexityParts": ref["perplexity"],
            "termAccuracy": ref["termAccuracy"],
            "thinkingCompliance": ref["compliance"],
        },
        "variants": {},
    }
    for v in variants:
        log(f"verify: {v['name']}")
        try:
            model = loader(v["path"]) if loader else load_quantized(v["path"], device=device)
        except Exception as e:  # noqa: BLE001 - report, keep verifying the others
            out["variants"][v["name"]] = {
                "verified": False,
                "warnings": [f"could not load for verification: {e}"],
            }
            continue
        var = measure(
            model, tokenizer, samples, matcher, max_new_tokens=max_new_tokens, max_length=max_length
        )
        _release(model)
        res = compare(ref, var, spec)
        res["perplexityParts"] = var["perplexity"]
        out["variants"][v["name"]] = res
    return out
