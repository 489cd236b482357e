"""Quantized variants of a merged model, written as standard checkpoints by auto-round (Intel's quantization
library: a pure-Python wheel with loose pins that runs on CPU and CUDA next to LLaMA Factory's transformers 5.5).

Methods (``QuantizeSpec.method``), all weight-only, symmetric integers, per group of input columns:

* ``int8``: W8A16 round-to-nearest (auto-round ``iters=0``); no calibration, near-lossless.
* ``int4``: W4A16 round-to-nearest (group 128 by default); no calibration.
* ``gptq``: calibrated 4-bit (or 8-bit): AutoRound tunes each block's rounding and clipping for ``iterations``
  signed-gradient steps so its output on calibration text matches the full-precision block -- the job GPTQ
  does, with the same checkpoint layout. The calibration text is the train split rendered as in training
  (:func:`calibration_batches`: Chinese questions, reasoning and answers), cut into ``calibrationSeqLen``-token
  rows because auto-round silently drops rows shorter than that.

Formats (``QuantizeSpec.format``):

* ``compressed-tensors`` (auto-round's ``llm_compressor`` format, ``pack-quantized``): vLLM serves it natively;
  ``transformers.AutoModelForCausalLM.from_pretrained(dir)`` loads it when the ``compressed-tensors`` package is
  installed (on CPU it decompresses to dense weights).
* ``gptq`` (auto-round's ``auto_gptq`` format, ``quant_method: gptq``): vLLM serves it natively (Marlin kernels);
  transformers loads it with optimum + gptqmodel, or with auto-round installed through
  ``quantization_config=AutoRoundConfig()`` (what :func:`load_variant` does; packed weights stay packed).

Every variant directory also gets the merged model's tokenizer files, chat template (Qwen3-Thinking's, which
pre-fills ``<think>``) and generation config, copied over what auto-round re-serialised, so the exported
tokenizer is the trained one byte for byte.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thinktune.spec import QuantizeSpec

FORMATS = {"compressed-tensors": "llm_compressor", "gptq": "auto_gptq"}
METHOD_BITS = {"int8": 8, "int4": 4}
_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
    "Modelfile",
    "thinktune_tiny.json",
)


class QuantizationUnavailable(RuntimeError):
    """The method cannot run on this machine (missing package); the message says what to install."""


class QuantizationError(RuntimeError):
    """Quantization ran and failed, or was asked for something it cannot do."""


def check_available() -> None:
    """Raise QuantizationUnavailable naming the package when auto-round / compressed-tensors is missing."""
    import importlib.util

    missing = [p for p in ("auto_round", "compressed_tensors") if importlib.util.find_spec(p) is None]
    if missing:
        raise QuantizationUnavailable(
            f"quantization needs {' and '.join(missing)}, which are not installed: install the trainer extra "
            "(`uv sync --extra trainer`: auto-round, compressed-tensors) or use the trainer image."
        )


def variant_bits(q: QuantizeSpec) -> int:
    return METHOD_BITS.get(q.method) or q.bits or 4


def effective_group_size(in_features: Sequence[int], requested: int) -> tuple[int, str | None]:
    """The group size every quantized Linear can use, and a note when it differs from the request.

    compressed-tensors needs each input dim to be a multiple of the group size; a model whose dims are smaller
    (the 64-wide tiny Qwen3) or not multiples gets the largest power of two <= the request that divides them all.
    """
    if requested == -1 or all(n % requested == 0 for n in in_features):
        return requested, None
    common = math.gcd(*in_features)
    g = 1 << int(math.log2(min(requested, common)))
    while g > 1 and common % g:
        g //= 2
    return g, (
        f"group size {requested} requested, {g} used: the Linear input dims ({', '.join(map(str, sorted(set(in_features))))}) "
        f"are not all multiples of {requested}"
    )


def calibration_batches(
    samples: Sequence[Any], tokenizer, n: int, seq_len: int
) -> tuple[list, dict[str, Any]]:
    """``n`` token rows of exactly ``seq_len`` tokens from chat-rendered training samples (the LLaMA Factory
    qwen3 rendering of prompt + response, as in training), concatenated and cut; when the split holds fewer
    tokens than ``n * seq_len`` the stream wraps around (``distinctTokens`` in the returned stats says so)."""
    import torch

    from thinktune.evaluate.inference import render_prompt_lf

    texts = [render_prompt_lf(s.messages) + s.reference + "<|im_end|>\n" for s in samples]
    if not texts:
        raise QuantizationError(
            "calibrated quantization (gptq) needs training samples, but the train split is empty"
        )
    stream: list[int] = []
    for t in texts:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"]
    need = n * seq_len
    distinct = len(stream)
    while len(stream) < need:
        stream += stream[: need - len(stream)]
    rows = [torch.tensor([stream[i * seq_len : (i + 1) * seq_len]]) for i in range(n)]
    han = sum(1 for t in texts for ch in t if "\u4e00" <= ch <= "\u9fff")
    return rows, {
        "samples": len(texts),
        "rows": n,
        "seqLen": seq_len,
        "distinctTokens": distinct,
        "tokens": need,
        "chineseChars": han,
    }


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _copy_side_files(src: Path, dst: Path) -> None:
    for name in _SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def quantize(
    q: QuantizeSpec,
    merged_dir: str | Path,
    out_dir: str | Path,
    *,
    calibration: Sequence[Any] | None = None,
    bits: int | None = None,
) -> dict[str, Any]:
    """Quantize ``merged_dir`` into ``out_dir`` as ``q`` says; ``calibration``: token rows from
    :func:`calibration_batches` (gptq only). ``bits`` overrides the spec's (tests use 2 to make a broken
    variant on purpose). Returns the facts for the report (bits, group size used, seconds, notes)."""
    check_available()
    import torch
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("AR_LOG_LEVEL", "WARNING")
    merged_dir, out = Path(merged_dir), Path(out_dir)
    bits = bits or variant_bits(q)
    calibrated = q.method == "gptq"
    if calibrated and not calibration:
        raise QuantizationError("gptq needs calibration rows from the train split, and none were given")
    t0 = time.monotonic()
    device = _device()
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype="auto")
    dims = [
        m.in_features
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")
    ]
    group, note = effective_group_size(dims, q.group_size)
    kwargs: dict[str, Any] = {
        "scheme": f"W{bits}A16" if bits in (2, 3, 4, 8) else "W4A16",
        "bits": bits,
        "group_size": group,
        "sym": True,
        "device_map": device,
        "enable_torch_compile": device
        == "cuda",  # on CPU, compiling costs more than the few blocks it speeds up
    }
    if calibrated:
        kwargs.update(
            iters=q.iterations,
            nsamples=len(calibration),
            seqlen=calibration[0].shape[-1],
            dataset=list(calibration),
        )
        kwargs["batch_size"] = min(8, len(calibration))
    else:
        kwargs.update(iters=0, disable_opt_rtn=True)  # textbook round-to-nearest: no data, no search
    staging = out.parent / f".{out.name}.staging"
    for p in (staging, out):
        if p.exists():
            shutil.rmtree(p)
    try:
        AutoRound(model, tokenizer=tokenizer, **kwargs).quantize_and_save(
            str(staging), format=FORMATS[q.format]
        )
        written = [p.parent for p in staging.rglob("config.json")]
        if len(written) != 1:
            raise QuantizationError(
                f"auto-round wrote {len(written)} checkpoints into {staging}, expected one"
            )
        shutil.move(
            str(written[0]), str(out)
        )  # auto-round nests the checkpoint in a folder named after the scheme
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _copy_side_files(merged_dir, out)
    del model
    return {
        "path": str(out),
        "method": q.method,
        "format": q.format,
        "bits": bits,
        "group_size": group,
        "iterations": q.iterations if calibrated else 0,
        "calibration_rows": len(calibration) if calibrated else 0,
        "device": device,
        "seconds": round(time.monotonic() - t0, 2),
        "library": _library_versions(),
        "notes": [note] if note else [],
    }


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("auto-round", "compressed-tensors")}


def quant_method(path: str | Path) -> str | None:
    """``quantization_config.quant_method`` of a checkpoint (``compressed-tensors``, ``gptq``) or None."""
    import json

    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (cfg.get("quantization_config") or {}).get("quant_method")


def load_variant(path: str | Path, *, device: str | None = None):
    """Load an exported variant with transformers only (eval mode): compressed-tensors through
    ``from_pretrained`` as is; GPTQ format through auto-round's ``AutoRoundConfig`` when optimum/gptqmodel are
    absent (they ship no CPU wheel)."""
    import importlib.util

    from transformers import AutoModelForCausalLM

    device = device or _device()
    if quant_method(path) == "gptq" and importlib.util.find_spec("gptqmodel") is None:
        from transformers import AutoRoundConfig

        return AutoModelForCausalLM.from_pretrained(
            str(path), quantization_config=AutoRoundConfig(backend="auto"), device_map=device
        ).eval()
    return AutoModelForCausalLM.from_pretrained(str(path), device_map=device).eval()
