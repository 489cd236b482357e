"""Quantized variants of a merged model.

* ``gptq``: GPTQ with calibration text from the train split. Backend ``gptqmodel`` (default; gptqmodel>=2
  directly: ``GPTQModel.load(merged, QuantizeConfig(bits, group_size)).quantize(texts)``) or ``llamafactory``
  (``export_model`` with ``export_quantization_bit`` and a jsonl calibration file with a ``text`` column; LLaMA
  Factory needs samples *longer* than ``export_quantization_maxlen``, so short samples are concatenated into
  chunks first). Needs a CUDA GPU and the ``gptq`` extra (``uv sync --extra gptq``: gptqmodel + optimum).
  Loads back with ``AutoModelForCausalLM.from_pretrained`` (transformers + optimum + gptqmodel) and vLLM.
* ``bnb``: bitsandbytes LLM.int8 (bits=8) or NF4 with double quantization (bits=4), saved with
  ``save_pretrained`` (the quantization config goes into config.json). Needs CUDA and ``bitsandbytes``.
* ``rtn``: round-to-nearest, weight-only, asymmetric, per group, in plain torch on CPU. A baseline to compare
  GPTQ against and what makes the export pipeline runnable without a GPU. Format below; load with
  :func:`load_rtn_model`.

RTN format (``thinktune-rtn`` version 1), a directory with:

* ``config.json``, ``generation_config.json``, tokenizer files, chat template: copied from the merged model;
* ``rtn_config.json``: ``{"format": "thinktune-rtn", "version": 1, "bits", "group_size", "symmetric": false,
  "dtype", "modules": {name: {"shape": [out, in], "group_size": g, "padded_in": p}}, "tied": {key: source}}``;
* ``model.safetensors``: for every quantized ``nn.Linear`` (all except ``lm_head``) three tensors
  ``<name>.weight.qweight`` (uint8, ``[out, padded_in]`` for 8 bits, ``[out, padded_in/2]`` for 4 bits with two
  values per byte, low nibble = even column), ``<name>.weight.scales`` (float16, ``[out, groups]``) and
  ``<name>.weight.zeros`` (uint8, ``[out, groups]``); every other tensor unchanged. A weight is
  ``(q - zero) * scale`` per group of ``group_size`` input columns (``-1`` = one group per row; the input dim is
  zero-padded to a multiple of the group size, and the padding is dropped on load).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RTN_FORMAT = "thinktune-rtn"
RTN_VERSION = 1
RTN_CONFIG = "rtn_config.json"
_COPY_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "Modelfile",
    "thinktune_tiny.json",
)


class QuantizationUnavailable(RuntimeError):
    """The method cannot run on this machine (no GPU, missing package); the message says what to install."""


class QuantizationError(RuntimeError):
    """Quantization ran and failed."""


def variant_name(method: str, bits: int) -> str:
    return f"{method}-int{bits}"


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _require_cuda(method: str) -> None:
    if not _cuda_available():
        raise QuantizationUnavailable(
            f"{method} quantization needs a CUDA GPU, and this machine has none (torch.cuda.is_available() is "
            "False). Run the ModelExport on a GPU node, or use method rtn (CPU) for a round-to-nearest baseline."
        )


def _require_gptq_packages() -> None:
    import importlib.util

    missing = [p for p in ("gptqmodel", "optimum") if importlib.util.find_spec(p) is None]
    if missing:
        raise QuantizationUnavailable(
            f"gptq quantization needs {' and '.join(missing)}, which are not installed. Install the gptq extra "
            "with `uv sync --extra gptq` (gptqmodel>=2.0.0, optimum>=1.24.0; builds against CUDA, use the "
            "trainer image on a GPU machine)."
        )


def check_available(method: str) -> None:
    """Raise QuantizationUnavailable with an actionable message when ``method`` cannot run here."""
    if method == "rtn":
        return
    if method == "gptq":
        _require_gptq_packages()
        _require_cuda("gptq")
    elif method == "bnb":
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise QuantizationUnavailable(
                "bnb quantization needs bitsandbytes (`uv pip install "
                "bitsandbytes>=0.43`; included in the trainer image) and a CUDA GPU."
            )
        _require_cuda("bnb")
    else:
        raise QuantizationError(f"unknown quantization method {method!r} (gptq, bnb or rtn)")


def _copy_side_files(src: Path, dst: Path) -> None:
    for name in _COPY_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


# ------------------------------------------------------------------------------------------------------------
# RTN


def rtn_quantize_weight(w, bits: int, group_size: int):
    """(qweight uint8, scales fp16, zeros uint8, padded_in, group) of a 2-D weight ``[out, in]``."""
    import torch

    out_f, in_f = w.shape
    g = in_f if group_size == -1 or group_size >= in_f else group_size
    padded = -(-in_f // g) * g
    wf = w.detach().float()
    if padded != in_f:
        wf = torch.nn.functional.pad(wf, (0, padded - in_f))
    grouped = wf.reshape(out_f, padded // g, g)
    qmax = 2**bits - 1
    wmin = grouped.amin(-1).clamp(max=0)
    wmax = grouped.amax(-1).clamp(min=0)
    scale = ((wmax - wmin) / qmax).clamp(min=1e-8)
    scale16 = scale.half()
    scale = scale16.float().clamp(min=1e-8)  # quantize with the scale that will be stored
    zero = torch.round(-wmin / scale).clamp(0, qmax)
    q = torch.clamp(torch.round(grouped / scale[..., None]) + zero[..., None], 0, qmax).to(torch.uint8)
    q = q.reshape(out_f, padded)
    if bits == 4:
        if padded % 2:
            q = torch.nn.functional.pad(q, (0, 1))
        q = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)
    return q.contiguous(), scale16.contiguous(), zero.to(torch.uint8).contiguous(), padded, g


def rtn_dequantize_weight(
    q, scales, zeros, *, bits: int, shape: Sequence[int], group: int, padded_in: int, dtype=None
):
    import torch

    out_f, in_f = shape
    if bits == 4:
        low, high = q & 0x0F, q >> 4
        q = torch.stack([low, high], dim=-1).reshape(out_f, -1)[:, :padded_in]
    w = (q.float().reshape(out_f, padded_in // group, group) - zeros.float()[..., None]) * scales.float()[
        ..., None
    ]
    w = w.reshape(out_f, padded_in)[:, :in_f]
    return w.to(dtype) if dtype is not None else w


def quantize_rtn(
    merged_dir: str | Path, out_dir: str | Path, *, bits: int, group_size: int = 128
) -> dict[str, Any]:
    """Round-to-nearest weight-only quantization of every Linear except lm_head; see the module docstring."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    if bits not in (4, 8):
        raise QuantizationError(f"rtn supports 4 or 8 bits, not {bits}")
    merged_dir, out = Path(merged_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype="auto")
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    linear = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.split(".")[-1] != "lm_head"
    }
    tensors: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    tied: dict[str, str] = {}
    seen: dict[int, str] = {}
    for key, t in model.state_dict().items():
        mod = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and mod in linear and t.dim() == 2:
            q, s, z, padded, g = rtn_quantize_weight(t, bits, group_size)
            tensors[f"{key}.qweight"], tensors[f"{key}.scales"], tensors[f"{key}.zeros"] = q, s, z
            modules[mod] = {"shape": list(t.shape), "group_size": g, "padded_in": padded}
            continue
        ptr = t.data_ptr()
        if ptr in seen:  # tied weights (lm_head = embed_tokens): store once
            tied[key] = seen[ptr]
            continue
        seen[ptr] = key
        tensors[key] = t.detach().contiguous()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt", "quantization": RTN_FORMAT})
    _copy_side_files(merged_dir, out)
    cfg = {
        "format": RTN_FORMAT,
        "version": RTN_VERSION,
        "bits": bits,
        "group_size": group_size,
        "symmetric": False,
        "dtype": dtype,
        "modules": modules,
        "tied": tied,
        "load_with": "thinktune.export.quantize.load_rtn_model(path)",
    }
    (out / RTN_CONFIG).write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return {
        "path": str(out),
        "method": "rtn",
        "bits": bits,
        "group_size": group_size,
        "quantized_modules": len(modules),
    }


def is_rtn_dir(path: str | Path) -> bool:
    return (Path(path) / RTN_CONFIG).is_file()


def _rebuild_meta_buffers(model, config) -> None:
    """Non-persistent buffers (rotary ``inv_freq``) are not in checkpoints: re-create the modules that own them."""
    for name, module in list(model.named_modules()):
        if not any(b.device.type == "meta" for b in module.buffers(recurse=False)):
            continue
        if any(p.device.type == "meta" for p in module.parameters(recurse=False)):
            continue
        new = type(module)(config=config)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], new)


def load_rtn_model(path: str | Path, *, dtype: str | None = None, device: str = "cpu"):
    """Dequantize a ``thinktune-rtn`` directory into a transformers model (eval mode)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    cfg = json.loads((path / RTN_CONFIG).read_text())
    if cfg.get("format") != RTN_FORMAT or cfg.get("version") != RTN_VERSION:
        raise QuantizationError(f"{path}: not a {RTN_FORMAT} v{RTN_VERSION} directory")
    torch_dtype = getattr(torch, dtype or cfg.get("dtype", "float32"))
    raw = load_file(str(path / "model.safetensors"))
    state: dict[str, Any] = {}
    for mod, info in cfg["modules"].items():
        key = f"{mod}.weight"
        state[key] = rtn_dequantize_weight(
            raw.pop(f"{key}.qweight"),
            raw.pop(f"{key}.scales"),
            raw.pop(f"{key}.zeros"),
            bits=cfg["bits"],
            shape=info["shape"],
            group=info["group_size"],
            padded_in=info["padded_in"],
            dtype=torch_dtype,
        )
    state.update(raw)
    for key, src in cfg.get("tied", {}).items():
        state[key] = state[src]
    config = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):  # no random init of billions of weights that are overwritten right away
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _rebuild_meta_buffers(model, config)
    left = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.device.type == "meta"]
    if left:
        raise QuantizationError(f"{path}: tensors missing from the checkpoint: {', '.join(left[:5])}")
    return model.to(device=device, dtype=torch_dtype).eval()


# ------------------------------------------------------------------------------------------------------------
# GPTQ


def calibration_texts(samples: Sequence[Any], n: int) -> list[str]:
    """Chat-rendered training samples (LLaMA Factory qwen3 rendering: prompt + response) as calibration text."""
    from thinktune.evaluate.inference import render_prompt_lf

    texts = [render_prompt_lf(s.messages) + s.reference + "<|im_end|>\n" for s in samples]
    if not texts:
        raise QuantizationError("gptq needs calibration samples, but the train split is empty")
    return (texts * (n // len(texts) + 1))[:n] if len(texts) < n else texts[:n]


def _chunks_longer_than(texts: Sequence[str], min_chars: int) -> list[str]:
    """Concatenate texts into chunks of at least min_chars characters (LLaMA Factory needs long samples)."""
    out, cur = [], ""
    for t in texts:
        cur += t
        if len(cur) >= min_chars:
            out.append(cur)
            cur = ""
    if cur and out:
        out[-1] += cur
    elif cur:
        out.append(cur * (min_chars // max(1, len(cur)) + 1))
    return out


def quantize_gptq(
    merged_dir: str | Path,
    out_dir: str | Path,
    *,
    bits: int,
    group_size: int = 128,
    texts: Sequence[str],
    backend: str = "gptqmodel",
    max_length: int = 2048,
    batch_size: int = 1,
) -> dict[str, Any]:
    """GPTQ weight-only quantization (GPU). ``texts``: calibration texts (see :func:`calibration_texts`)."""
    check_available("gptq")
    merged_dir, out = Path(merged_dir), Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    if backend == "llamafactory":
        out.mkdir(parents=True)
        calib = out.parent / f".{out.name}-calibration.jsonl"
        maxlen = min(1024, max_length)
        with calib.open("w", encoding="utf-8") as f:
            for t in _chunks_longer_than(texts, maxlen * 3):  # chars >> tokens for safety
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        args = {
            "model_name_or_path": str(merged_dir),
            "template": "qwen3",
            "export_dir": str(out),
            "export_quantization_bit": bits,
            "export_quantization_dataset": str(calib),
            "export_quantization_nsamples": len(texts),
            "export_quantization_maxlen": maxlen,
            "export_size": 5,
            "export_device": "auto",
        }
        from thinktune.export.merge import LF_EXPORT_SCRIPT

        env = dict(os.environ, DISABLE_VERSION_CHECK=os.environ.get("DISABLE_VERSION_CHECK", "1"))
        proc = subprocess.run(
            [sys.executable, "-c", LF_EXPORT_SCRIPT, json.dumps(args)],
            capture_output=True,
            text=True,
            env=env,
        )
        calib.unlink(missing_ok=True)
        if proc.returncode != 0:
            lines = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if x.strip()]
            raise QuantizationError(
                "LLaMA Factory GPTQ export failed: "
                + (lines[-1].strip() if lines else f"exit {proc.returncode}")
            )
    elif backend == "gptqmodel":
        from gptqmodel import GPTQModel, QuantizeConfig

        qcfg = QuantizeConfig(bits=bits, group_size=group_size)
        model = GPTQModel.load(str(merged_dir), qcfg)
        model.quantize(list(texts), batch_size=batch_size)
        model.save(str(out))
        del model
    else:
        raise QuantizationError(f"unknown gptq backend {backend!r} (gptqmodel or llamafactory)")
    for name in _COPY_FILES:  # tokenizer / chat template / Modelfile, where the backend did not write them
        if (merged_dir / name).is_file() and not (out / name).exists():
            shutil.copy2(merged_dir / name, out / name)
    return {
        "path": str(out),
        "method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "backend": backend,
        "calibration_samples": len(texts),
    }


# ------------------------------------------------------------------------------------------------------------
# bitsandbytes


def quantize_bnb(merged_dir: str | Path, out_dir: str | Path, *, bits: int) -> dict[str, Any]:
    """bitsandbytes LLM.int8 (8) or NF4 + double quantization (4), saved with save_pretrained (GPU)."""
    check_available("bnb")
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    merged_dir, out = Path(merged_dir), Path(out_dir)
    if bits == 8:
        qcfg = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qcfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), quantization_config=qcfg, device_map="cuda")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    del model
    _copy_side_files_missing(merged_dir, out)
    return {"path": str(out), "method": "bnb", "bits": bits}


def _copy_side_files_missing(src: Path, dst: Path) -> None:
    for name in _COPY_FILES:
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)


# ------------------------------------------------------------------------------------------------------------


def quantize(
    method: str,
    merged_dir: str | Path,
    out_dir: str | Path,
    *,
    bits: int,
    group_size: int = 128,
    calibration: Sequence[str] | None = None,
    gptq_backend: str = "gptqmodel",
) -> dict[str, Any]:
    """Dispatch to the method; raises QuantizationUnavailable when it cannot run on this machine."""
    check_available(method)
    if method == "rtn":
        return quantize_rtn(merged_dir, out_dir, bits=bits, group_size=group_size)
    if method == "gptq":
        return quantize_gptq(
            merged_dir,
            out_dir,
            bits=bits,
            group_size=group_size,
            texts=calibration or [],
            backend=gptq_backend,
        )
    return quantize_bnb(merged_dir, out_dir, bits=bits)


def load_quantized(path: str | Path, *, device: str | None = None):
    """Load any variant for evaluation: rtn via :func:`load_rtn_model`, gptq/bnb via transformers (GPU)."""
    path = Path(path)
    if is_rtn_dir(path):
        return load_rtn_model(path, device=device or "cpu")
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(path), device_map=device or "cuda").eval()
    except Exception:  # noqa: BLE001 - gptqmodel's own loader as a second try
        try:
            from gptqmodel import GPTQModel
        except ImportError:
            raise
        return GPTQModel.load(str(path)).model.eval()
