"""Merge a LoRA adapter into its base model.

Two backends, same result (safetensors + tokenizer + chat template + generation config):

* ``llamafactory``: ``llamafactory.train.tuner.export_model`` in a subprocess (its imports set global state and
  it is what the training side uses). It also writes an Ollama ``Modelfile``. Works offline with local paths.
* ``peft``: ``PeftModel.from_pretrained(base, adapter).merge_and_unload()`` in-process.

``backend="auto"`` tries LLaMA Factory first and falls back to peft when LLaMA Factory cannot run here (not
installed, or its import fails, e.g. a torchaudio build that does not match torch); the report says which one
ran and why. In both cases the merged model keeps the base model's dtype (float32 stays float32, bf16 stays bf16),
and the tokenizer keeps the *official* chat template of the base (for Qwen3-Thinking-2507 the one that pre-fills
``<think>\\n``), which is what vLLM / transformers serve with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from thinktune.errors import StageError


class MergeError(StageError):
    """Merging failed; the message says why and what to do."""


LF_EXPORT_SCRIPT = r"""
import json, sys
try:  # the trainer's guard: a torchaudio that does not match torch must not block text-only LLaMA Factory
    from thinktune.train.worker import ensure_torchaudio_importable
    ensure_torchaudio_importable()
except ImportError:
    pass
from llamafactory.train.tuner import export_model
export_model(json.loads(sys.argv[1]))
"""

_MODELFILE = '''# Ollama Modelfile (written by thinktune). Import the merged weights with `ollama create NAME -f Modelfile`
# after converting them to GGUF (llama.cpp convert_hf_to_gguf.py); Ollama's template below matches Qwen3's ChatML.
FROM .
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
<|im_start|>assistant
<think>
{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>
{{ end }}{{ end }}"""
PARAMETER stop "<|im_end|>"
PARAMETER stop "<|endoftext|>"
PARAMETER temperature 0.6
PARAMETER top_p 0.95
PARAMETER top_k 20
'''


def base_dtype(model_path: str | Path) -> str:
    """dtype name from config.json ("dtype" in transformers 5, "torch_dtype" before); bfloat16 when unknown."""
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return "bfloat16"
    dt = cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"
    return dt if dt in ("float32", "bfloat16", "float16") else "bfloat16"


def _lf_merge(base: str, adapter: Path, out: Path, *, template: str, dtype: str) -> None:
    args = {
        "model_name_or_path": base,
        "adapter_name_or_path": str(adapter),
        "template": template,
        "finetuning_type": "lora",
        "export_dir": str(out),
        "export_size": 5,
        "export_device": "cpu",
        "infer_dtype": dtype,
        "trust_remote_code": False,
    }
    env = dict(os.environ, DISABLE_VERSION_CHECK=os.environ.get("DISABLE_VERSION_CHECK", "1"))
    proc = subprocess.run(
        [sys.executable, "-c", LF_EXPORT_SCRIPT, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        lines = [x for x in (proc.stderr or proc.stdout).strip().splitlines() if x.strip()]
        raise MergeError(
            "LLaMA Factory export_model failed: "
            + (lines[-1].strip() if lines else f"exit {proc.returncode}")
        )


def _peft_merge(base: str, adapter: Path, out: Path, *, dtype: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(model, str(adapter))
    model = model.merge_and_unload()
    model.save_pretrained(str(out), safe_serialization=True)


def _finish_tokenizer(base: str, adapter: Path, out: Path) -> None:
    """Tokenizer + chat template + generation config next to the merged weights. The adapter's tokenizer wins
    (LLaMA Factory saves the one it trained with); the chat template falls back to the base's."""
    from transformers import AutoTokenizer, GenerationConfig

    src = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tok = AutoTokenizer.from_pretrained(str(src))
    if not getattr(tok, "chat_template", None):
        base_tok = AutoTokenizer.from_pretrained(base)
        tok.chat_template = getattr(base_tok, "chat_template", None)
    if not getattr(tok, "chat_template", None):
        from thinktune.chat_template import qwen3_thinking_chat_template

        tok.chat_template = qwen3_thinking_chat_template()
    tok.padding_side = "left"
    tok.save_pretrained(str(out))
    try:
        GenerationConfig.from_pretrained(base).save_pretrained(str(out))
    except OSError:
        pass


def merge_adapter(
    base_model: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    template: str = "qwen3",
    backend: str = "auto",
    dtype: str | None = None,
) -> dict[str, Any]:
    """Merge ``adapter_dir`` into ``base_model`` and save to ``out_dir``. Returns {"path", "backend", "dtype",
    "notes"}. ``backend``: auto | llamafactory | peft."""
    if backend not in ("auto", "llamafactory", "peft"):
        raise MergeError(f"unknown merge backend {backend!r} (auto, llamafactory or peft)")
    base = str(base_model)
    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise MergeError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dtype = dtype or base_dtype(base)
    notes: list[str] = []
    used = backend
    if backend in ("auto", "llamafactory"):
        try:
            _lf_merge(base, adapter, out, template=template, dtype=dtype)
            used = "llamafactory"
        except MergeError as e:
            if backend == "llamafactory":
                raise
            notes.append(f"LLaMA Factory merge unavailable here, used peft merge_and_unload ({e})")
            shutil.rmtree(out)
            out.mkdir(parents=True)
            used = "peft"
    if used == "peft":
        _peft_merge(base, adapter, out, dtype=dtype)
    _finish_tokenizer(base, adapter, out)
    if not (out / "Modelfile").is_file():
        (out / "Modelfile").write_text(_MODELFILE, encoding="utf-8")
    if not any(out.glob("*.safetensors")):
        raise MergeError(f"merge wrote no safetensors into {out}")
    return {"path": str(out), "backend": used, "dtype": dtype, "adapter": str(adapter), "notes": notes}
