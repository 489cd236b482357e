"""A tiny random-weight Qwen3 with the real Qwen3 tokenizer, for offline tests and CPU smoke runs.

The model keeps everything that makes Qwen3-4B-Thinking-2507 *behave* like itself in a pipeline -- the
architecture class, the 151,936-row vocabulary, tied embeddings, QK-norm, GQA, the tokenizer, the chat
template and the generation config -- and shrinks only the width and depth. So data preparation,
LLaMA Factory (template ``qwen3``), LoRA training, merging and export all run on it unchanged.

Size: the embedding (151,936 x hidden) dominates: ~39 MB in float32 at hidden 64 (~19 MB in bfloat16).
"""

from __future__ import annotations

import json
from pathlib import Path

from thinktune.qwen_tokenizer import (
    ENDOFTEXT_ID,
    IM_END_ID,
    QWEN3_VOCAB_SIZE,
    load_qwen3_tokenizer,
    save_qwen3_tokenizer,
)

MARKER_FILE = "thinktune_tiny.json"
_DTYPES = ("float32", "bfloat16", "float16")
# Files make_tiny_model writes; a directory holding only these (or nothing) may be overwritten.
_OWN_FILES = {
    MARKER_FILE,
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
}


def _validate(hidden_size: int, num_layers: int, heads: int, kv_heads: int, intermediate: int, dtype: str):
    for name, value in (
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("heads", heads),
        ("kv_heads", kv_heads),
        ("intermediate", intermediate),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if hidden_size % heads:
        raise ValueError(
            f"hidden_size {hidden_size} must be divisible by heads {heads} (head_dim = hidden/heads)"
        )
    if heads % kv_heads:
        raise ValueError(f"heads {heads} must be a multiple of kv_heads {kv_heads} (grouped-query attention)")
    if (hidden_size // heads) % 2:
        raise ValueError(
            f"head_dim = {hidden_size}/{heads} = {hidden_size // heads} must be even (rotary embeddings "
            "rotate pairs of dimensions); change hidden_size or heads"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another output path")
    if not out.is_dir() or overwrite:
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_FILES)
    if foreign:
        raise FileExistsError(
            f"{out} is not empty ({', '.join(foreign[:5])}{'...' if len(foreign) > 5 else ''}); refusing to "
            "write a tiny model over it. Choose an empty directory or pass overwrite=True (--overwrite)"
        )


def make_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write a random ``Qwen3ForCausalLM`` + the Qwen3 tokenizer + generation config to ``out_dir``.

    Loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and with LLaMA
    Factory (``template: qwen3``). Deterministic for a given ``seed``. Returns the output directory.
    """
    _validate(hidden_size, num_layers, heads, kv_heads, intermediate, dtype)
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, overwrite)

    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    head_dim = hidden_size // heads
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        hidden_act="silu",
        # Same context length and RoPE base as Qwen3-4B-Thinking-2507, so length-related code paths
        # (cutoff checks, rope scaling decisions) see the real numbers.
        max_position_embeddings=262_144,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=num_layers,
        attention_bias=False,
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=IM_END_ID,
        pad_token_id=ENDOFTEXT_ID,
    )
    # A private generator: seeding the global RNG would change the caller's randomness as a side effect.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model = model.to(getattr(torch, dtype))
    model.eval()

    # Qwen3-4B-Thinking-2507's generation_config.json: stop on <|im_end|> or <|endoftext|>, and its
    # recommended sampling. Tests that need determinism pass do_sample=False explicitly.
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=[IM_END_ID, ENDOFTEXT_ID],
        pad_token_id=ENDOFTEXT_ID,
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_qwen3_tokenizer(load_qwen3_tokenizer(), out)

    n_params = sum(p.numel() for p in model.parameters())  # tied: the embedding is counted once
    marker = {
        "kind": "thinktune-tiny-qwen3",
        "purpose": "random weights for offline tests and CPU smoke runs; outputs are meaningless",
        "architecture": "Qwen3ForCausalLM",
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate": intermediate,
        "vocab_size": QWEN3_VOCAB_SIZE,
        "tie_word_embeddings": True,
        "seed": seed,
        "dtype": dtype,
        "parameters": n_params,
        "tokenizer": "builtin:qwen3 (Qwen3-4B-Thinking-2507 tokenizer and chat template)",
    }
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out


def read_tiny_marker(model_dir: str | Path) -> dict | None:
    """The ``thinktune_tiny.json`` marker of a tiny model directory, or None for any other model."""
    path = Path(model_dir) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
