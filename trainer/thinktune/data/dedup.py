"""Exact and near-duplicate removal (before splitting, so test never leaks into train).

What is compared is the answer (see dedup_text): the same answer under a different instruction teaches the
model nothing new and, split apart, puts a training answer into test.
Exact: SHA-1 of the normalised text (case folded, whitespace and punctuation removed).
Near: character 5-gram Jaccard similarity ≥ threshold. Candidates come from MinHash signatures (128
permutations, numpy) banded into an LSH index; every candidate is verified with the exact Jaccard of the
shingle sets, and each sample is compared only with samples already kept, so the cost stays ~linear.
All hashing is deterministic (no Python ``hash()``), so the same corpus always dedups the same way.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

_DROP = re.compile(r"[\s\W_]+", re.UNICODE)
NUM_PERM = 128
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def normalise(text: str) -> str:
    return _DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


MIN_ANSWER_CHARS = 16  # normalised; shorter answers ("是的。", "不安全。") are told apart by their question


def dedup_text(question: str, answer: str) -> str:
    """The text dedup compares for one sample: its answer, or question + answer when the answer is too short
    to identify a sample by itself."""
    if len(normalise(answer)) < MIN_ANSWER_CHARS:
        return f"{question}\n{answer}"
    return answer


def exact_key(text: str) -> str:
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()


def shingles(text: str, k: int = 5) -> np.ndarray:
    """Sorted unique 64-bit hashes of the character k-grams of (already normalised) text."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(cps) == 0:
        return np.zeros(0, dtype=np.uint64)
    if len(cps) < k:
        k = len(cps)
    h = np.zeros(len(cps) - k + 1, dtype=np.uint64)
    mult = np.uint64(1099511628211)  # FNV prime; uint64 arithmetic wraps
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * mult + cps[j : len(cps) - k + 1 + j] + np.uint64(j + 1)
    return np.unique(h)


_rng = np.random.default_rng(20240611)
_A = _rng.integers(1, 2**63 - 1, NUM_PERM, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
_B = _rng.integers(0, 2**63 - 1, NUM_PERM, dtype=np.int64).astype(np.uint64)


def minhash(sh: np.ndarray) -> np.ndarray:
    if len(sh) == 0:
        return np.zeros(NUM_PERM, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (sh[:, None] * _A[None, :] + _B[None, :]).min(axis=0)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def _rows_per_band(threshold: float) -> int:
    return 8 if threshold >= 0.8 else 4 if threshold >= 0.6 else 2


@dataclass
class DupResult:
    keep: list[int]  # indices kept, input order
    dropped: list[
        tuple[int, int, str, float]
    ]  # (index dropped, index of the kept sample it duplicates, kind, sim)


def deduplicate(texts: list[str], threshold: float = 0.9, near: bool = True) -> DupResult:
    """Indices to keep; earlier texts win. ``kind`` is 'exact' or 'near'."""
    keep: list[int] = []
    dropped: list[tuple[int, int, str, float]] = []
    seen: dict[str, int] = {}
    r = _rows_per_band(threshold)
    bands = NUM_PERM // r
    index: list[dict[bytes, list[int]]] = [dict() for _ in range(bands)]
    shingle_of: dict[int, np.ndarray] = {}
    for i, t in enumerate(texts):
        norm = normalise(t)
        key = hashlib.sha1(norm.encode("utf-8")).hexdigest()
        if key in seen:
            dropped.append((i, seen[key], "exact", 1.0))
            continue
        if near:
            sh = shingles(norm)
            sig = minhash(sh)
            keys = [sig[b * r : (b + 1) * r].tobytes() for b in range(bands)]
            cands: set[int] = set()
            for b, k in enumerate(keys):
                cands.update(index[b].get(k, ()))
            best, best_sim = -1, 0.0
            for c in sorted(cands):
                sim = jaccard(sh, shingle_of[c])
                if sim >= threshold and sim > best_sim:
                    best, best_sim = c, sim
            if best >= 0:
                dropped.append((i, best, "near", best_sim))
                continue
            shingle_of[i] = sh
            for b, k in enumerate(keys):
                index[b].setdefault(k, []).append(i)
        seen[key] = i
        keep.append(i)
    return DupResult(keep=keep, dropped=dropped)
