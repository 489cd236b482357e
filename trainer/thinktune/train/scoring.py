"""Teacher-forced quality on the validation split, computed during training.

For each supervised segment of a validation sample (the label tokens), the model's argmax at the previous
position is compared with the label. From that per-token correctness:

- ``token_accuracy``: share of label tokens predicted right;
- ``teacher_forced_char_accuracy``: share of Chinese characters (``thinktune.cjk``) predicted right, where a
  character is right when every token overlapping its UTF-8 bytes is right (byte-level BPE splits characters);
- ``teacher_forced_term_accuracy``: share of glossary-term occurrences whose tokens are all right
  (``term_token_accuracy``: the same per token), terms matched longest first.

These are *not* the generated-text ``char_accuracy`` / ``term_accuracy`` of evaluation
(``thinktune.evaluate.metrics``): here the model sees the reference prefix at every position. The counting
functions are pure (unit-tested with the real Qwen3 tokenizer); :func:`score_model` runs the forward passes.
"""

from __future__ import annotations

from typing import Any

from thinktune.cjk import is_ideograph

IGNORE_INDEX = -100  # label of prompt and padding tokens (transformers / LLaMA Factory)


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode (byte-level BPE token strings -> bytes)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = _byte_decoder()


class TokenBytes:
    """id -> raw bytes for a byte-level BPE tokenizer (Qwen), cached."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.cache: dict[int, bytes] = {}
        self.added = {
            int(k): v.content if hasattr(v, "content") else str(v)
            for k, v in getattr(tokenizer, "added_tokens_decoder", {}).items()
        }

    def __call__(self, i: int) -> bytes:
        b = self.cache.get(i)
        if b is None:
            if i in self.added:
                b = self.added[i].encode()
            else:
                s = self.tok.convert_ids_to_tokens(int(i))
                if s is None:
                    b = b""
                elif all(c in _BYTE_DECODER for c in s):
                    b = bytes(_BYTE_DECODER[c] for c in s)
                else:
                    b = s.encode()
            self.cache[i] = b
        return b


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    if lead >> 3 == 0b11110:
        return 4
    return 1


def _chars_with_spans(data: bytes) -> list[tuple[str, int, int]]:
    """UTF-8 characters of ``data`` with their byte spans (invalid bytes become U+FFFD of length 1)."""
    out = []
    i = 0
    while i < len(data):
        ln = _utf8_length(data[i])
        try:
            ch = data[i : i + ln].decode("utf-8")
        except UnicodeDecodeError:
            ch, ln = "\ufffd", 1
        out.append((ch, i, i + ln))
        i += ln
    return out


def new_counts() -> dict[str, Any]:
    return {
        "tokens": 0,
        "tokens_correct": 0,
        "cjk_chars": 0,
        "cjk_correct": 0,
        "term_occurrences": 0,
        "term_correct": 0,
        "term_tokens": 0,
        "term_tokens_correct": 0,
        "terms": {},
    }


def merge_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = new_counts()
    for k in out:
        if k == "terms":
            terms: dict[str, list[int]] = {}
            for src in (a.get("terms", {}), b.get("terms", {})):
                for t, (n, c) in src.items():
                    cur = terms.setdefault(t, [0, 0])
                    cur[0] += n
                    cur[1] += c
            out["terms"] = terms
        else:
            out[k] = a.get(k, 0) + b.get(k, 0)
    return out


def score_segment(
    label_ids: list[int],
    correct: list[bool],
    token_bytes: TokenBytes,
    terms: list[str],
    counts: dict[str, Any],
) -> None:
    """Add one contiguous supervised segment (label tokens + per-token correctness) to ``counts``."""
    spans = []
    pos = 0
    parts = []
    for t in label_ids:
        b = token_bytes(t)
        spans.append((pos, pos + len(b)))
        parts.append(b)
        pos += len(b)
    data = b"".join(parts)
    chars = _chars_with_spans(data)
    counts["tokens"] += len(label_ids)
    counts["tokens_correct"] += sum(correct)
    owner = [0] * len(data)  # token index of every byte
    for ti, (s, e) in enumerate(spans):
        for k in range(s, e):
            owner[k] = ti

    def char_ok(ci: int) -> bool:
        _, s, e = chars[ci]
        return all(correct[owner[k]] for k in range(s, e)) if e > s else True

    for ci, (ch, _, _) in enumerate(chars):
        if is_ideograph(ch):
            counts["cjk_chars"] += 1
            counts["cjk_correct"] += char_ok(ci)
    text = "".join(c for c, _, _ in chars)
    low = text.lower()
    taken = [False] * len(text)  # longest terms first; a shorter term inside a longer match is not re-counted
    for term in terms:
        tl = term.lower()
        if not tl:
            continue
        start = low.find(tl)
        while start != -1:
            end = start + len(tl)
            if not any(taken[start:end]):
                for k in range(start, end):
                    taken[k] = True
                toks = sorted(
                    {owner[k] for ci in range(start, end) for k in range(chars[ci][1], chars[ci][2])}
                )
                ok = all(correct[t] for t in toks)
                counts["term_occurrences"] += 1
                counts["term_correct"] += ok
                counts["term_tokens"] += len(toks)
                counts["term_tokens_correct"] += sum(correct[t] for t in toks)
                rec = counts["terms"].setdefault(term, [0, 0])
                rec[0] += 1
                rec[1] += ok
            start = low.find(tl, end)


def score_batch(
    pred_next: list[list[int]],
    labels: list[list[int]],
    token_bytes: TokenBytes,
    terms: list[str],
    counts: dict[str, Any],
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """``pred_next[i][j]`` is the model's argmax at position j (it predicts token j+1); ``labels`` unshifted."""
    for preds, labs in zip(pred_next, labels, strict=True):
        seg_ids: list[int] = []
        seg_ok: list[bool] = []
        for j in range(1, len(labs)):
            lab = labs[j]
            if lab == ignore_index:
                if seg_ids:
                    score_segment(seg_ids, seg_ok, token_bytes, terms, counts)
                    seg_ids, seg_ok = [], []
                continue
            seg_ids.append(int(lab))
            seg_ok.append(int(preds[j - 1]) == int(lab))
        if seg_ids:
            score_segment(seg_ids, seg_ok, token_bytes, terms, counts)


def summarize_counts(c: dict[str, Any]) -> dict[str, Any]:
    """The eval record's quality fields (metrics.jsonl; the gauges of the same names in thinktune.contract)."""

    def ratio(a: str, b: str) -> float | None:
        return round(c[a] / c[b], 6) if c.get(b) else None

    per_term = {
        t: {"occurrences": n, "accuracy": round(k / n, 4)}
        for t, (n, k) in sorted(c.get("terms", {}).items(), key=lambda kv: -kv[1][0])[:50]
    }
    return {
        "token_accuracy": ratio("tokens_correct", "tokens"),
        "teacher_forced_char_accuracy": ratio("cjk_correct", "cjk_chars"),
        "teacher_forced_term_accuracy": ratio("term_correct", "term_occurrences"),
        "term_token_accuracy": ratio("term_tokens_correct", "term_tokens"),
        "cjk_chars": c.get("cjk_chars", 0),
        "term_occurrences": c.get("term_occurrences", 0),
        "terms": per_term,
    }


def score_model(
    model, dataloader, token_bytes: TokenBytes, terms: list[str], max_samples: int
) -> tuple[dict[str, Any], int]:
    """(counts, samples scored) of this rank's share of the validation dataloader, one row at a time. The
    vocabulary projection (151,936 x hidden per position) is most of a small model's forward pass, so each row
    is cut to its attention mask and the logits are computed only where a label is scored
    (``logits_to_keep`` with positions; models without it get the full logits). The caller merges the counts
    of all ranks."""
    import torch

    counts = new_counts()
    was_training = model.training
    model.eval()
    seen = 0
    try:
        device = next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        device = torch.device("cpu")
    with torch.no_grad():
        for batch in dataloader:
            ids = batch["input_ids"]
            labels = batch["labels"]
            mask = batch.get("attention_mask")
            for i in range(ids.shape[0]):
                if seen >= max_samples:
                    break
                keep = (
                    mask[i].bool() if mask is not None and mask.dim() == 2 else torch.ones_like(ids[i]).bool()
                )
                row_ids, row_labels = ids[i][keep], labels[i][keep]
                pred = _next_token_argmax(model, row_ids.to(device), row_labels)
                score_batch([pred], [row_labels.tolist()], token_bytes, terms, counts)
                seen += 1
            if seen >= max_samples:
                break
    if was_training:
        model.train()
    return counts, seen


def _next_token_argmax(model, ids, labels) -> list[int]:
    """The model's argmax at every position that predicts a label (-1 elsewhere: never compared)."""
    scored = (labels[1:] != IGNORE_INDEX).nonzero().flatten()  # position j predicts label j+1
    pred = [-1] * len(labels)
    if not len(scored):
        return pred
    try:
        logits = model(input_ids=ids[None], logits_to_keep=scored.to(ids.device)).logits[0]
    except TypeError:  # a model class without logits_to_keep
        logits = model(input_ids=ids[None]).logits[0][scored.to(ids.device)]
    for j, t in zip(scored.tolist(), logits.argmax(-1).tolist(), strict=True):
        pred[j] = int(t)
    return pred
