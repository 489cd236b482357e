"""Verify exported variants against the merged model on the test split.

Each variant is loaded the way a user loads it -- transformers (:func:`thinktune.export.quantize.load_variant`,
no thinktune code in the checkpoint) and vLLM where it is installed with a GPU -- with the tokenizer stored in
the variant directory. On the same ``verify.samples`` test samples:

* **perplexity** of the assistant turn (LLaMA Factory rendering, as in training); threshold
  ``maxPerplexityIncrease`` (relative to the merged model);
* **top-1 agreement**: how often the variant's argmax token equals the merged model's at each response position
  (teacher-forced on the reference, so one early miss does not compound); threshold ``minTop1Agreement``;
* **Chinese round-trip**: every test text (prompt + reference) tokenized and decoded by the variant's tokenizer
  comes back exactly, with the same ids as the merged model's tokenizer; must be exact;
* **term accuracy** of greedy generations (``max_new_tokens``) against the reference's glossary terms;
  threshold ``maxTermAccuracyDrop`` (absolute, against the merged model's); plus the character accuracy of the
  variant's generations against the merged model's (1 = identical; reported, no threshold).

A variant is ``verified`` when no threshold is crossed. Every warning ends with what to try instead
(:func:`alternatives`: 8-bit instead of 4-bit, calibrated instead of round-to-nearest, a larger calibration set,
a smaller group).
"""

from __future__ import annotations

import gc
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from thinktune.spec import VerifySpec

VLLM_MISSING = (
    "vLLM not installed here: serving load not checked (checked where vllm is installed with a GPU)"
)


def _release(model) -> None:
    del model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def checkpoint_quantization(path: str | Path) -> dict[str, Any]:
    """{"quant_method", "bits", "group_size"} from a checkpoint's config.json (compressed-tensors or GPTQ)."""
    try:
        cfg = (
            json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("quantization_config")
            or {}
        )
    except (OSError, ValueError):
        return {}
    if cfg.get("quant_method") == "compressed-tensors":
        w = next(iter((cfg.get("config_groups") or {}).values()), {}).get("weights") or {}
        return {
            "quant_method": "compressed-tensors",
            "bits": w.get("num_bits"),
            "group_size": w.get("group_size"),
        }
    return {
        "quant_method": cfg.get("quant_method"),
        "bits": cfg.get("bits"),
        "group_size": cfg.get("group_size"),
    }


def alternatives(info: dict[str, Any]) -> str:
    """What to try when a variant degrades too much, from its method/bits/group/calibration."""
    bits, group, method = info.get("bits"), info.get("group_size"), info.get("method")
    alts = []
    if bits is not None and bits < 8:
        alts.append(f"8-bit (method int8) instead of {bits}-bit")
    if method == "int4":
        alts.append("calibrated 4-bit (method gptq) instead of round-to-nearest")
    if method == "gptq":
        rows = info.get("calibration_rows") or 0
        alts.append(
            f"a larger calibration set (calibrationSamples {rows} -> {max(rows * 4, 128)}) or more iterations"
        )
    if group == -1 or (group or 0) > 32:
        alts.append(f"a smaller group (groupSize {32 if group == -1 else group // 2})")
    return "try " + ", or ".join(alts) if alts else "keep the merged model"


def round_trip(tokenizer, ref_tokenizer, samples) -> dict[str, Any]:
    """Each test text (rendered prompt + reference) through ``tokenizer``: decoded exactly, same ids as
    ``ref_tokenizer``. Returns {"texts", "exact", "failures": [first 3 sample indices]}."""
    from thinktune.evaluate.inference import render_prompt_lf

    fails = []
    for i, s in enumerate(samples):
        text = render_prompt_lf(s.messages) + s.reference
        ids = tokenizer.encode(text, add_special_tokens=False)
        if tokenizer.decode(ids) != text or ids != ref_tokenizer.encode(text, add_special_tokens=False):
            fails.append(i)
    return {"texts": len(samples), "exact": len(samples) - len(fails), "failures": fails[:3]}


def measure(model, tokenizer, samples, matcher, *, max_new_tokens: int, max_length: int) -> dict[str, Any]:
    """Response scores + generations + term accuracy of one model."""
    from thinktune.evaluate import inference

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
    return {
        "scores": scores,
        "perplexity": inference.perplexity(scores),
        **_generation_scores(texts, samples, matcher),
    }


def _generation_scores(texts: Sequence[str], samples, matcher) -> dict[str, Any]:
    from thinktune.evaluate import metrics as M

    n_ref = n_hit = 0
    for t, s in zip(texts, samples, strict=False):
        ref_terms, hits = M.term_hits(t, s.reference, matcher)
        n_ref += len(ref_terms)
        n_hit += len(hits)
    return {
        "texts": list(texts),
        "termAccuracy": n_hit / n_ref if n_ref else None,
        "compliance": (sum(1 for t in texts if M.thinking_compliant(t)) / len(texts)) if texts else None,
    }


def compare(
    ref: dict[str, Any], var: dict[str, Any], spec: VerifySpec, info: dict[str, Any]
) -> dict[str, Any]:
    """Numbers + warnings of a variant against the merged model's measurement."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    p0, p1 = ref["perplexity"]["full"], var["perplexity"]["full"]
    inc = (p1 / p0 - 1) if p0 and p1 else None
    pairs = list(zip(ref["texts"], var["texts"], strict=True))
    char_acc = sum(M.char_accuracy(b, a) for a, b in pairs) / len(pairs) if pairs else None
    t0, t1 = ref["termAccuracy"], var["termAccuracy"]
    drop = (t0 - t1) if t0 is not None and t1 is not None else None
    top1 = inference.top1_agreement(ref["scores"], var["scores"])
    rt = var["roundTrip"]
    crossed = []
    if inc is not None and inc > spec.max_perplexity_increase:
        crossed.append(
            f"perplexity +{inc:.1%} vs merged ({p0:.3f} -> {p1:.3f}) exceeds maxPerplexityIncrease "
            f"{spec.max_perplexity_increase:.1%}"
        )
    if top1 is not None and top1 < spec.min_top1_agreement:
        crossed.append(
            f"top-1 token agreement with the merged model {top1:.1%} is below minTop1Agreement "
            f"{spec.min_top1_agreement:.0%}"
        )
    if drop is not None and drop > spec.max_term_accuracy_drop:
        crossed.append(
            f"term accuracy dropped {drop:.3f} ({t0:.3f} -> {t1:.3f}) > maxTermAccuracyDrop "
            f"{spec.max_term_accuracy_drop:.3f}"
        )
    advice = alternatives(info)
    warnings = [f"{w}: {advice}" for w in crossed]
    if rt["exact"] != rt["texts"]:
        warnings.append(
            f"Chinese round-trip through the exported tokenizer is not exact for {rt['texts'] - rt['exact']} of "
            f"{rt['texts']} test texts (samples {rt['failures']}): the variant's tokenizer files differ from the "
            "merged model's; re-export"
        )
    return {
        "perplexity": p1,
        "perplexityIncrease": inc,
        "top1Agreement": top1,
        "roundTrip": rt,
        "charAccuracyVsMerged": char_acc,
        "termAccuracy": t1,
        "termAccuracyDrop": drop,
        "thinkingCompliance": var["compliance"],
        "warnings": warnings,
        "verified": not warnings,
    }


def vllm_generate(path: str, prompts: Sequence[str], max_new_tokens: int) -> list[str] | str:
    """Greedy vLLM generations of a variant, or a note why vLLM was not run."""
    if importlib.util.find_spec("vllm") is None:
        return VLLM_MISSING
    import torch

    if not torch.cuda.is_available():
        return "vLLM installed but no CUDA GPU here: serving load not checked"
    from vllm import LLM, SamplingParams

    llm = LLM(model=path, gpu_memory_utilization=0.5, max_model_len=4096, enforce_eager=True)
    try:
        outs = llm.generate(list(prompts), SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [o.outputs[0].text for o in outs]
    finally:
        del llm
        gc.collect()
        torch.cuda.empty_cache()


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
    """Verify ``variants`` ([{"name", "path", "info"?}], info = :func:`thinktune.export.quantize.quantize`'s
    result) against the merged model in ``merged_dir``.

    Returns {"samples", "maxNewTokens", "thresholds", "merged": {...}, "variants": {name: {...}}, "vllm"}.
    Models are loaded one at a time (merged first) and released after use. ``loader(path)`` loads a variant
    (default: :func:`thinktune.export.quantize.load_variant`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktune.data.glossary import term_aliases
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M
    from thinktune.evaluate.run import pick_device
    from thinktune.export.quantize import load_variant

    samples = list(samples)[: spec.samples]
    matcher = M.TermMatcher(terms if terms is not None else term_aliases())
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    device = pick_device()
    log = log or (lambda _m: None)
    log(f"verify: merged model on {len(samples)} samples")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto").to(device).eval()
    ref = measure(merged, tokenizer, samples, matcher, max_new_tokens=max_new_tokens, max_length=max_length)
    _release(merged)
    prompts = [inference.generation_prompt(tokenizer, s.messages) for s in samples]
    out: dict[str, Any] = {
        "samples": len(samples),
        "maxNewTokens": max_new_tokens,
        "thresholds": spec.model_dump(by_alias=True),
        "merged": {
            "perplexity": ref["perplexity"]["full"],
            "perplexityParts": ref["perplexity"],
            "termAccuracy": ref["termAccuracy"],
            "thinkingCompliance": ref["compliance"],
        },
        "variants": {},
        "vllm": None,
    }
    for v in variants:
        log(f"verify: {v['name']}")
        info = {**checkpoint_quantization(v["path"]), **(v.get("info") or {})}
        try:
            var_tok = AutoTokenizer.from_pretrained(v["path"])
            model = loader(v["path"]) if loader else load_variant(v["path"], device=device)
        except Exception as e:  # noqa: BLE001 - report, keep verifying the others
            out["variants"][v["name"]] = {
                "verified": False,
                "warnings": [f"could not load {v['path']} with transformers for verification: {e}"],
            }
            continue
        var = measure(model, var_tok, samples, matcher, max_new_tokens=max_new_tokens, max_length=max_length)
        _release(model)
        var["roundTrip"] = round_trip(var_tok, tokenizer, samples)
        res = compare(ref, var, spec, info)
        res["perplexityParts"] = var["perplexity"]
        res["quantization"] = {k: info.get(k) for k in ("quant_method", "bits", "group_size")}
        if max_new_tokens > 0:
            try:
                gen = vllm_generate(v["path"], [p for p, _ in prompts], max_new_tokens)
            except Exception as e:  # noqa: BLE001 - a serving engine that cannot load it is a finding
                gen = f"vLLM could not load {v['name']}: {e}"
                res["warnings"].append(gen)
                res["verified"] = False
            if isinstance(gen, str):
                out["vllm"] = gen
            else:
                texts = [pre + g for (_, pre), g in zip(prompts, gen, strict=True)]
                res["vllm"] = {
                    "termAccuracy": _generation_scores(texts, samples, matcher)["termAccuracy"],
                    "charAccuracyVsMerged": sum(
                        M.char_accuracy(b, a) for a, b in zip(ref["texts"], texts, strict=True)
                    )
                    / len(texts),
                }
                out["vllm"] = "vLLM loaded every variant"
        out["variants"][v["name"]] = res
    if out["vllm"]:
        log(f"verify: {out['vllm']}")
    return out
