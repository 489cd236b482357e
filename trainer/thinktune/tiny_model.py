"""A tiny random-weight Qwen3 with the real Qwen3 tokenizer, for offline tests and CPU smoke runs.

The model keeps everything that makes Qwen3-4B-Thinking-2507 *behave* like itself in a pipeline -- the
architecture class, the 151,936-row vocabulary, tied embeddings, QK-norm, GQA, the tokenizer, the chat
template and the generation config -- and shrinks only the width and depth. So data preparation,
LLaMA Factory (template ``qwen3``), LoRA training, merging and export all run on it unchanged.

Size: the embedding (151,936 x hidden) dominates: ~39 MB in float32 at hidden 64 (~19 MB in bfloat16).

Warm start (``warm_start=TRAIN_FILE``). A random model cannot learn from LoRA alone: its tied embeddings have
norm ~0.16 and LoRA trains neither them nor the final norm, so no logit can exceed ~1.3 and the loss stays at
ln(151,936) = 11.9 whatever the adapter does. Like the real Qwen3-Thinking, a useful base has to have been
pretrained first. ``warm_start`` does that briefly on the training split only (never val/test): the prose of
its documents and the *words* of its reasoning in a shuffled order (see ``warm_start_texts``), without the chat
template, the questions or the reasoning's sentences, which are what fine-tuning adds; the final norm starts
large enough that fine-tuning can make a token likely (``WARM_FINAL_NORM``). It runs where the model is made
(``makeTiny``), so a job on a real model never runs it. The softmax is exact over the whole vocabulary but
cheap: rows of tokens the training split never uses are zero (see ``_pretrain``).
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
    log=print,
) -> Path:
    """Write a random ``Qwen3ForCausalLM`` + the Qwen3 tokenizer + generation config to ``out_dir``.

    Loads with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and with LLaMA
    Factory (``template: qwen3``). Deterministic for a given ``seed`` and ``warm_start`` file (the warm start
    stops by a rule on held-out training documents, not by time; steps and seconds are in the marker).
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
        tok = load_qwen3_tokenizer()  # loaded once: it takes seconds
        warm = _warm_start(model, tok, Path(warm_start), seed=seed, log=log)
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
    save_qwen3_tokenizer(tok if warm_start is not None else load_qwen3_tokenizer(), out)

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
            "briefly pretrained on a training split's prose and reasoning words (see warm_start) for CPU demos; a toy model"
        )
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return out


THINK_OPEN, THINK_CLOSE, IM_END = "<think>", "</think>", "<|im_end|>"


def _messages(row: dict) -> list[dict]:
    return [
        {"role": m.get("role", m.get("from")), "content": str(m.get("content", m.get("value", "")))}
        for m in row.get("messages") or row.get("conversations") or []
    ]


def _reasoning_words(reasoning: str) -> str:
    """The words of a reasoning trace (jieba) in an order shuffled by the trace itself (deterministic; the same
    trace twice gives the same text): its vocabulary without its sentences."""
    import logging
    import random

    import jieba

    jieba.setLogLevel(logging.WARNING)
    words = [w for w in jieba.lcut(reasoning) if w.strip()]
    random.Random(reasoning).shuffle(words)
    return "".join(words)


def warm_start_texts(train_file: Path) -> list[str]:
    """What the tiny base is pretrained on, from the training split only: per document (``source_file``), its
    answers in source order (the document's prose) with, after each, the *words* of that sample's reasoning in
    a shuffled order, as one text in Qwen3's empty-thinking form ``<think>\n\n</think>\n\n...<|im_end|>``.

    Why the shuffled words: a real base knows every word of the language, but the prose of 31 documents lacks
    the words the reasoning is made of (原文, 要点, 推理, 结论, ...: a quarter of the reasoning's tokens). Their
    embedding rows would stay random, and LoRA, which trains neither the embedding nor the final norm, could
    never raise their logits above the ~150k untrained ones: the loss plateaus near 10. Shuffled, the words
    give every row a meaning without teaching the reasoning's sentences or structure. Neither the chat
    template nor the questions nor the reasoning itself are in it: those are what fine-tuning has to teach."""
    rows = json.loads(Path(train_file).read_text(encoding="utf-8"))
    docs: dict[str, dict[str, float]] = {}  # document -> paragraph -> its place in the document
    for n, row in enumerate(rows):
        for m in _messages(row):
            reasoning, _, answer = m["content"].rpartition(THINK_CLOSE)
            answer, reasoning = answer.strip(), reasoning.replace(THINK_OPEN, "").strip()
            if m["role"] in ("assistant", "gpt") and answer:
                name = str(row.get("source_file") or f"row {n}")
                doc, place = docs.setdefault(name, {}), float(row.get("source_line") or n)
                doc.setdefault(answer, place)
                if reasoning:
                    doc.setdefault(_reasoning_words(reasoning), place + 0.5)
    if not docs:
        raise ValueError(
            f"{train_file}: no assistant answers to warm-start the tiny model on; expected a LLaMA Factory "
            "sharegpt file with 'messages' (role/content), as a DatasetBuild writes"
        )
    return [
        f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n" + "\n\n".join(sorted(d, key=d.__getitem__)) + IM_END
        for d in docs.values()
    ]


def _training_vocabulary(tok, train_file: Path, texts: list[str]) -> list[int]:
    """Every token id of the training split's conversations as the chat template renders them, and of the
    warm-start texts: the only rows of the embedding that fine-tuning on this split can need."""
    ids = {i for t in texts for i in tok.encode(t, add_special_tokens=False)}
    for row in json.loads(Path(train_file).read_text(encoding="utf-8")):
        ids.update(tok.apply_chat_template(_messages(row), tokenize=True, return_dict=False))
    return sorted(ids)


def _warm_start(model, tok, train_file: Path, *, seed: int, log) -> dict:
    """``_pretrain`` on one thread: its tensors are small (hidden 64), and with two OpenMP threads on a busy
    2-core machine every small op waits for the descheduled thread (measured: a forward + backward of 8 x 256
    tokens 1.2-3.2 s on two threads vs 0.17-0.25 s on one, load average 13)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pretrain(model, tok, train_file, seed=seed, log=log)
    finally:
        torch.set_num_threads(threads)


def _pretrain(model, tok, train_file: Path, *, seed: int, log) -> dict:
    """Causal-LM pretraining of every parameter on ``warm_start_texts(train_file)`` (random 256-token windows of
    the documents), stopped when the loss on held-out training documents stops improving (the best state is
    kept), so the base generalises instead of memorising. Returns what the marker records.

    The softmax is exact over the full vocabulary at a fraction of its cost: the embedding rows of tokens the
    training split never uses are set to zero, so each of those logits is exactly 0 and together they add the
    constant ``ln(#unused)`` logit to a softmax computed over the used rows only.
    """
    import math

    import torch

    t0, cpu0 = time.monotonic(), time.process_time()
    texts = warm_start_texts(train_file)
    vocab = torch.tensor(_training_vocabulary(tok, train_file, texts))
    unused_logit = math.log(QWEN3_VOCAB_SIZE - len(vocab))
    remap = torch.full((QWEN3_VOCAB_SIZE,), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    docs = [remap[torch.tensor(tok.encode(t, add_special_tokens=False))] for t in texts]
    # every WARM_HOLDOUT-th document (at least one) only decides when to stop
    held = [d for i, d in enumerate(docs) if i % WARM_HOLDOUT == WARM_HOLDOUT - 1] if len(docs) > 1 else []
    train = torch.cat([d for i, d in enumerate(docs) if i % WARM_HOLDOUT != WARM_HOLDOUT - 1 or not held])
    held_windows = [w for d in held for w in d.split(SEQ_LEN + 1) if len(w) > 1]

    emb = model.get_input_embeddings().weight
    rows = torch.nn.Parameter(emb.detach()[vocab].clone())  # a small trainable copy, written back at the end
    emb.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + [rows]
    opt = torch.optim.AdamW(params, lr=WARM_LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(windows: list) -> torch.Tensor:
        width = max(len(w) for w in windows)
        ids = torch.zeros((len(windows), width - 1), dtype=torch.long)
        labels = torch.full((len(windows), width - 1), -100, dtype=torch.long)  # -100: padding
        for r, w in enumerate(windows):
            ids[r, : len(w) - 1], labels[r, : len(w) - 1] = w[:-1], w[1:]
        hidden = model.model(inputs_embeds=rows[ids]).last_hidden_state
        logits = hidden @ rows.T  # tied embeddings: the output rows are the input rows
        logits = torch.cat([logits, logits.new_full((*logits.shape[:2], 1), unused_logit)], dim=-1)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def held_loss() -> float:
        model.eval()
        with torch.no_grad():
            v = float(loss_of(held_windows)) if held_windows else float("nan")
        model.train()
        return v

    with torch.no_grad():  # logit headroom for fine-tuning, see WARM_FINAL_NORM
        model.model.norm.weight.fill_(WARM_FINAL_NORM)
    model.train()
    best, best_state, bad, first, step, curve = held_loss(), None, 0, None, 0, []
    start_held = best
    while step < WARM_MAX_STEPS:
        starts = torch.randint(max(1, len(train) - SEQ_LEN), (WARM_BATCH,), generator=gen).tolist()
        loss = loss_of([train[s : s + SEQ_LEN + 1] for s in starts])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        first = float(loss.detach()) if first is None else first
        if step % WARM_EVAL_EVERY == 0 and held_windows:
            v = held_loss()
            curve.append([step, round(float(loss.detach()), 4), round(v, 4)])
            if v < best - 0.01:
                best, bad = v, 0
                body = {
                    k: t.clone()
                    for k, t in model.state_dict().items()
                    if "embed" not in k and "lm_head" not in k
                }
                best_state = (step, body, rows.detach().clone())
            else:
                bad += 1
                if bad >= WARM_PATIENCE:
                    break
    kept = step
    if best_state is not None:
        kept, state, best_rows = best_state
        model.load_state_dict(state, strict=False)
        rows.data.copy_(best_rows)
    with torch.no_grad():
        emb.zero_()
        emb[vocab] = rows.detach()
    emb.requires_grad_(True)
    elapsed = time.monotonic() - t0
    log(
        f"[tiny] warm start on the prose and reasoning words of {len(docs)} training documents ({len(held)} held out to decide when "
        f"to stop): {kept} of {step} steps kept, held-out loss {start_held:.2f} -> {best:.2f}, {elapsed:.0f} s "
        f"(exact softmax over the {len(vocab)} token ids the training split uses; the other rows are zero)"
    )
    return {
        "train_file": str(train_file),
        "documents": len(docs),
        "held_out_documents": len(held),
        "tokens": int(sum(len(d) for d in docs)),
        "steps_run": step,
        "steps_kept": kept,
        "seconds": round(elapsed, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),  # wall time on a busy machine says little
        "vocab_used": len(vocab),
        "first_loss": round(first, 4),
        "held_out_loss_first_best": [round(start_held, 4), round(best, 4)],
        "curve": curve,
    }


SEQ_LEN = 256  # tokens per pretraining window
WARM_BATCH = 8
WARM_LR = 3e-3
WARM_HOLDOUT = 8  # every 8th training document is held out of the warm start to decide when to stop
WARM_EVAL_EVERY, WARM_PATIENCE, WARM_MAX_STEPS = 25, 2, 200
# The final RMSNorm's weight at the start of the warm start (Qwen3 initialises it to 1). A token's logit is at
# most |norm weight * normalised hidden| * |its row| = 8 * w * |row| at hidden 64, and a softmax over ~150k zero
# logits needs a logit above ln(150k) = 11.9 before the token gets any probability. At w = 1 the brief warm start
# leaves rows of norm ~0.75: a ceiling of ~8, i.e. at most ~2 % for any token, and LoRA (which trains neither the
# norm nor the rows) cannot lift it: the loss stalled near 7. A real Qwen3 has no such ceiling.
WARM_FINAL_NORM = 12.0


def read_tiny_marker(model_dir: str | Path) -> dict | None:
    """The ``thinktune_tiny.json`` marker of a tiny model directory, or None for any other model."""
    path = Path(model_dir) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
