"""How much a held-out split (val, test) overlaps the training split: the leakage section of the dataset report.

Three measures per held-out split, each a count and a share of its samples:

- ``from_train_documents``: the sample's document also feeds training (zero when the split is by document);
- ``sharing_ngram``: its answer shares at least one character n-gram (13 by default, the usual contamination
  window) with some training answer, after the normalisation of dedup.py (case, width, space, punctuation);
- ``half_paragraphs_in_train``: at least half of its answer paragraphs (blank-line separated, normalised,
  at least MIN_PARAGRAPH_CHARS long so that "例如：" does not count) occur verbatim in training answers.

Answers only: the system prompt is shared by every sample and template questions/thinking share their
boilerplate, so including them would flag every sample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thinktune.data.dedup import normalise, shingles

NGRAM = 13
MIN_PARAGRAPH_CHARS = 10
EXAMPLES = 10  # sample ids listed per measure, enough to inspect without bloating report.json
_PARA = re.compile(r"\n\s*\n")
MEASURES = ("from_train_documents", "sharing_ngram", "half_paragraphs_in_train")


@dataclass(frozen=True)
class Held:
    """What leakage needs of a sample: its id (for the examples), its document and its answer."""

    id: str
    document: str
    answer: str


def paragraphs(answer: str) -> list[str]:
    """Normalised answer paragraphs long enough to be evidence of copying."""
    out = [normalise(p) for p in _PARA.split(answer)]
    return [p for p in out if len(p) >= MIN_PARAGRAPH_CHARS]


def _ngrams(answer: str, n: int) -> np.ndarray:
    norm = normalise(answer)
    return shingles(norm, n) if len(norm) >= n else np.zeros(0, dtype=np.uint64)


def split_leakage(train: Sequence[Held], held: Sequence[Held], n: int = NGRAM) -> dict:
    """The three measures (see the module docstring) of ``held`` against ``train``."""
    docs = {s.document for s in train}
    grams = np.unique(np.concatenate([_ngrams(s.answer, n) for s in train] or [np.zeros(0, np.uint64)]))
    paras = {p for s in train for p in paragraphs(s.answer)}
    hits: dict[str, list[str]] = {m: [] for m in MEASURES}
    for s in held:
        if s.document in docs:
            hits["from_train_documents"].append(s.id)
        g = _ngrams(s.answer, n)
        if len(g) and np.isin(g, grams, assume_unique=True).any():
            hits["sharing_ngram"].append(s.id)
        ps = paragraphs(s.answer)
        if ps and 2 * sum(p in paras for p in ps) >= len(ps):
            hits["half_paragraphs_in_train"].append(s.id)
    total = len(held)
    out: dict = {"samples": total, "ngram": n}
    for key, ids in hits.items():
        out[key] = {
            "count": len(ids),
            "share": round(len(ids) / total, 4) if total else 0.0,
            "examples": ids[:EXAMPLES],
        }
    return out


def leakage_report(splits: dict[str, Sequence[Held]], n: int = NGRAM) -> dict:
    """``split_leakage`` of every non-train split against train, keyed by split name."""
    train = splits.get("train", [])
    return {name: split_leakage(train, rows, n) for name, rows in splits.items() if name != "train"}
