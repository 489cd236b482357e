"""Deterministic train/val/test split, stratified by sample type and by cryptography term.

Iterative stratification: samples are visited rarest-term first (ties in a seeded random order); each goes
to the split, among those with room left, whose share of the sample's strata (its type and each of its terms)
is furthest below target, relative to the target. Split sizes are exact (rounded fractions), so rare terms are
spread over all splits while the global 70/15/15 (or configured) proportions hold. Samples are atomic: a sample
(and the thinking inside it) is never divided.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")
SMALL_DATASET = 50
SMALL_SPLIT = 10


@dataclass
class SplitResult:
    assignment: list[str]  # split name per input sample
    sizes: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def target_sizes(n: int, fractions: Sequence[float]) -> dict[str, int]:
    fr = dict(zip(SPLITS, fractions, strict=True))
    sizes = {s: int(round(n * fr[s])) for s in ("val", "test")}
    for s in ("val", "test"):
        if fr[s] > 0 and sizes[s] == 0 and n >= 3:
            sizes[s] = 1
    while sizes["val"] + sizes["test"] > max(n - 1, 0) and (sizes["val"] or sizes["test"]):
        big = "val" if sizes["val"] >= sizes["test"] else "test"
        sizes[big] -= 1
    sizes["train"] = n - sizes["val"] - sizes["test"]
    return {s: sizes[s] for s in SPLITS}


def stratified_split(types: Sequence[str], terms: Sequence[Sequence[str]], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                     seed: int = 42, stratify_by: Sequence[str] = ("type", "term")) -> SplitResult:
    n = len(types)
    fr = dict(zip(SPLITS, fractions, strict=True))
    sizes = target_sizes(n, fractions)
    by_type = "type" in stratify_by
    by_term = "term" in stratify_by
    type_total = Counter(types)
    term_total: Counter[str] = Counter(t for ts in terms for t in set(ts)) if by_term else Counter()
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    if by_term:
        order.sort(key=lambda i: min((term_total[t] for t in terms[i]), default=10**9))
    counts = {s: 0 for s in SPLITS}
    type_counts = {s: Counter() for s in SPLITS}
    term_counts = {s: Counter() for s in SPLITS}
    assignment = [""] * n
    for i in order:
        open_splits = [s for s in SPLITS if counts[s] < sizes[s]]
        tie = {s: rng.random() for s in open_splits}

        def score(s: str, i: int = i, tie: dict[str, float] = tie) -> tuple[float, float, float]:
            strat = 0.0
            if fr[s] <= 0:
                return (-1e9, 0.0, tie[s])
            if by_type:
                want = fr[s] * type_total[types[i]]
                strat += (want - type_counts[s][types[i]]) / max(want, 1e-9)
            ts = set(terms[i]) if by_term else set()
            if ts:
                strat += sum((fr[s] * term_total[t] - term_counts[s][t]) / (fr[s] * term_total[t]) for t in ts) / len(ts)
            room = (sizes[s] - counts[s]) / max(sizes[s], 1)
            return (strat, room, tie[s])

        best = max(open_splits, key=score)
        assignment[i] = best
        counts[best] += 1
        type_counts[best][types[i]] += 1
        for t in set(terms[i]):
            term_counts[best][t] += 1
    warnings: list[str] = []
    if n < SMALL_DATASET:
        warnings.append(f"only {n} samples after de-duplication (< {SMALL_DATASET}): the model will likely overfit "
                        "and val/test metrics will be noisy; add more documents")
    for s in SPLITS:
        if fr[s] > 0 and counts[s] < SMALL_SPLIT:
            warnings.append(f"{s} split has only {counts[s]} samples (< {SMALL_SPLIT}): too small for a meaningful "
                            "evaluation; overfitting risk")
    return SplitResult(assignment=assignment, sizes=counts, warnings=warnings)
