"""Sample validation for LLaMA Factory (sharegpt, template qwen3) and Qwen3-Thinking.

Checks: roles alternate (optional system, then user/assistant pairs ending with assistant), no empty turn,
the assistant turn is exactly ``<think>\\n…\\n</think>\\n\\n…`` with think tags only there, and the token length
of the chat-rendered sample (qwen3 template: ``<|im_start|>role\\n…<|im_end|>\\n``) is at most cutoff_len.
Too-long samples are rejected and reported, never truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thinktune.data.thinking import THINK_CLOSE, THINK_OPEN, check_format


def render_chat(messages: Sequence[dict[str, str]]) -> str:
    """The exact text LLaMA Factory's qwen3 template produces for a training sample."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def structural_problems(messages: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(reason, fix) for every structural problem; empty when the sample is well formed."""
    out: list[tuple[str, str]] = []
    if not messages:
        return [("no messages", "the sample needs a user and an assistant turn")]
    body = list(messages)
    if body[0].get("role") == "system":
        if not str(body[0].get("content", "")).strip():
            out.append(("empty system prompt", "remove the system message or give it content"))
        body = body[1:]
    if not body:
        out.append(("no user/assistant turns", "add a question and an answer"))
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            out.append(
                (
                    f"turn {i + 1} has role {m.get('role')!r}, expected {want!r} (roles must alternate)",
                    "order turns as user, assistant, user, assistant, ...",
                )
            )
            break
        if not str(m.get("content", "")).strip():
            out.append((f"empty {want} turn", f"give the {want} turn content"))
    if body and len(body) % 2 != 0:
        out.append(("conversation does not end with an assistant turn", "add the answer"))
    for m in body:
        c = str(m.get("content", ""))
        if m.get("role") == "assistant":
            why = check_format(c)
            if why:
                out.append(
                    (
                        f"thinking format: {why}",
                        "assistant turn must be '<think>\\n{reasoning}\\n</think>\\n\\n{answer}'",
                    )
                )
        elif THINK_OPEN in c or THINK_CLOSE in c:
            out.append(
                (
                    f"{m.get('role')} turn contains '<think>'/'</think>' (Qwen3 special tokens)",
                    "remove think tags from the question",
                )
            )
    return out


def token_lengths(texts: Sequence[str], tokenizer: Any, batch_size: int = 512) -> list[int]:
    """Token counts of ``texts`` with a HF tokenizer, a ``tokenizers.Tokenizer`` (``encode_batch``) or any
    callable tokenizer returning input_ids."""
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        if hasattr(tokenizer, "encode_batch"):
            out.extend(len(e.ids) for e in tokenizer.encode_batch(chunk, add_special_tokens=False))
            continue
        try:
            enc = tokenizer(chunk, add_special_tokens=False)
            ids = enc["input_ids"]
        except TypeError:
            ids = [tokenizer.encode(t) for t in chunk]
        out.extend(len(x) for x in ids)
    return out


def load_length_tokenizer(name_or_path: str):
    """The tokenizer used for length checks (``builtin:qwen3`` = the real Qwen3 tokenizer, built offline)."""
    from thinktune.qwen_tokenizer import load_tokenizer

    return load_tokenizer(name_or_path)
