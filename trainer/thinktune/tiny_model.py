"""A tiny random-weight Qwen3 with the real Qwen3 tokenizer, for offline tests and CPU smoke runs.

The model keeps everything that makes Qwen3-4B-Thinking-2507 *behave* like itself in a pipeline -- the
architecture class, the 151,936-row vocabulary, tied embeddings, QK-norm, GQA, the tokenizer, the chat
template and the generation config -- and shrinks only the width and depth. So data preparation,
LLaMA Factory (template ``qwen3``), LoRA training, merging and export all run on it unchanged.

Size: the embedding (151,936 x hidden) dominates: ~39 MB in float32 at hidden 64 (~19 MB in bfloat16).

Warm start (``warm_start=TRAIN_FILE``). A random model cannot learn from LoRA alone: its tied embeddings have
norm ~0.16 and LoRA trains neither them nor the final norm, so no logit can exceed ~1.3 and the loss stays at
ln(151,936) = 11.9 whatever the adapter does. Like the real Qwen3-Thinking, a useful base has to have been
pretrained first. ``warm_start`` does that briefly on the *answers* of a training split (never val/test), each
written in Qwen3's empty-thinking form ``<think>\n\n</think>\n\n{answer}<|im_end|>``: the base then knows the
domain's characters and the format tokens, but not the task's reasoning, which is what fine-tuning adds. The
softmax of this pretraining runs over the tokens the texts use only (the other rows of the 151,936-row
vocabulary keep their small random embeddings), which makes it ~40x cheaper than a full-vocabulary step.
"""

from __future__ import annotations

import json
import time
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
    warm_start: str | Path | None = None,
    warm_start_seconds: float = 30.0,
    log=print,
) -> Path:
    """Write a random ``Qwen3ForCausalLM`` + the Qwen3 tokenizer + generation config to ``out_dir``.

    Loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and with LLaMA
    Factory (``template: qwen3``). Deterministic for a given ``seed`` (and, with ``warm_start``, a given number
    of warm-start steps; the steps a time budget of ``warm_start_seconds`` allows are recorded in the marker).
    ``warm_start``: a LLaMA Factory sharegpt file (a training split) to pretrain on first, see the module
    docstring. Returns the output directory.
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
    warm = None
    if warm_start is not None:
        warm = _warm_start(model, Path(warm_start), seed=seed, seconds=warm_start_seconds, log=log)
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
        "warm_start": warm,
    }
    if warm:
        marker["purpose"] = (
            "briefly pretrained on a training split's answers (see warm_start) for CPU demos; a toy model"
        )
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out


THINK_OPEN, THINK_CLOSE, IM_END = "<think>", "</think>", "<|im_end|>"


def warm_start_texts(train_file: Path) -> list[str]:
    """The assistant answers of a sharegpt training split (``messages`` / ``conversations``), reasoning
    removed, in Qwen3's empty-thinking form."""
    rows = json.loads(Path(train_file).read_text(encoding="utf-8"))
    texts = []
    for row in rows:
        for m in row.get("messages") or row.get("conversations") or []:
            if m.get("role", m.get("from")) not in ("assistant", "gpt"):
                continue
            answer = str(m.get("content", m.get("value", ""))).rpartition(THINK_CLOSE)[2].strip()
            if answer:
                texts.append(f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{answer}{IM_END}")
    if not texts:
        raise ValueError(
            f"{train_file}: no assistant answers to warm-start the tiny model on; expected a LLaMA Factory "
            "sharegpt file with 'messages' (role/content), as a DatasetBuild writes"
        )
    return texts


def _warm_start(model, train_file: Path, *, seed: int, seconds: float, log) -> dict:
    """Causal-LM pretraining of every parameter on ``warm_start_texts(train_file)`` for about ``seconds``,
    with the softmax restricted to the token ids those texts use. Returns what the marker records."""
    import torch

    tok = load_qwen3_tokenizer()
    seqs = [tok.encode(t, add_special_tokens=False)[:SEQ_LEN] for t in warm_start_texts(train_file)]
    vocab = torch.tensor(sorted({i for s in seqs for i in s}))
    remap = torch.full((QWEN3_VOCAB_SIZE,), -100, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    # Only the rows of the texts' tokens train (a small copy, written back at the end): Adam over all 151,936
    # rows would cost more than the model itself.
    emb = model.get_input_embeddings().weight
    rows = torch.nn.Parameter(emb.detach()[vocab].clone())
    emb.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad] + [rows], lr=WARM_LR, weight_decay=0.0
    )
    model.train()
    t0, step, first, loss_v = time.monotonic(), 0, None, None
    while step < WARM_MAX_STEPS and (step < WARM_MIN_STEPS or time.monotonic() - t0 < seconds):
        pick = torch.randint(len(seqs), (WARM_BATCH,), generator=gen).tolist()
        width = max(len(seqs[i]) for i in pick)
        ids = torch.zeros((WARM_BATCH, width), dtype=torch.long)  # positions in `vocab`
        labels = torch.full((WARM_BATCH, width - 1), -100, dtype=torch.long)  # -100: padding
        for r, i in enumerate(pick):
            local = remap[torch.tensor(seqs[i])]
            ids[r, : len(local)] = local
            labels[r, : len(local) - 1] = local[1:]
        hidden = model.model(inputs_embeds=rows[ids]).last_hidden_state[:, :-1]
        logits = hidden @ rows.T  # tied embeddings: the output rows are the input rows
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        first = loss_v if first is None else first
        step += 1
    with torch.no_grad():
        emb[vocab] = rows.detach()
    emb.requires_grad_(True)
    elapsed = time.monotonic() - t0
    log(
        f"[tiny] warm start on {len(seqs)} answers of {train_file.name}: {step} steps in {elapsed:.0f} s, "
        f"loss {first:.2f} -> {loss_v:.2f} (softmax over the {len(vocab)} token ids they use)"
    )
    return {
        "train_file": str(train_file),
        "texts": len(seqs),
        "steps": step,
        "seconds": round(elapsed, 1),
        "vocab_used": len(vocab),
        "first_loss": round(first, 4),
        "last_loss": round(loss_v, 4),
    }


SEQ_LEN = 256  # answers are cut here: the warm start teaches characters and words, not long documents
WARM_BATCH = 8
WARM_LR = 3e-3
WARM_MIN_STEPS, WARM_MAX_STEPS = 20, 2000


def read_tiny_marker(model_dir: str | Path) -> dict | None:
    """The ``thinktune_tiny.json`` marker of a tiny model directory, or None for any other model."""
    path = Path(model_dir) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
