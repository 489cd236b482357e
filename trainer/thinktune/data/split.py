"""Deterministic train/val/test split, stratified by sample type and by cryptography term.

Iterative stratification over the labels "type" and every term of a sample (see stratified_split), then
coverage-improving swaps (see _improve_coverage). Split sizes are exact (rounded fractions), so terms are spread
over all splits while the global 70/15/15 (or configured) proportions and the type shares hold. Samples are atomic: a sample
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
PACE_SLACK = 0.0


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


def _improve_coverage(
    assignment: list[str],
    types: Sequence[str],
    terms: Sequence[Sequence[str]],
    fr: dict[str, float],
    order: list[int],
    min_count: int = 3,
    budget: int = 150_000,
) -> int:
    """Swap samples between splits so that terms with ≥ min_count samples reach every split.

    A "hole" is a (term, split) pair where a term with ≥ min_count samples is missing from a split with a
    non-zero fraction; its weight is the term's frequency. Holes are visited most frequent term first; for each,
    a sample x containing the term is swapped with a sample y of the split lacking it when the swap removes
    more hole weight than it creates (same-type partners are preferred, so type shares rarely move). Split
    sizes never change. Deterministic (visits samples in the seeded ``order``); bounded by ``budget``."""
    cov = {s: Counter() for s in SPLITS}
    sets = [set(ts) for ts in terms]
    for i, s in enumerate(assignment):
        cov[s].update(sets[i])
    total = Counter(t for ts in sets for t in ts)
    weight = {t: n for t, n in total.items() if n >= min_count}

    def gain(x: int, y: int, src: str, need: str) -> int:
        g = 0
        for u in sets[x]:
            w = weight.get(u)
            if w:
                if cov[need][u] == 0:
                    g += w  # x brings u into need
                if cov[src][u] == 1 and u not in sets[y]:
                    g -= w  # x was the only u in src
        for u in sets[y]:
            w = weight.get(u)
            if w:
                if cov[src][u] == 0 and u not in sets[x]:
                    g += w
                if cov[need][u] == 1 and u not in sets[x]:
                    g -= w
        return g

    type_total = Counter(types)
    tcount = {s: Counter() for s in SPLITS}
    for i, s in enumerate(assignment):
        tcount[s][types[i]] += 1

    def type_ok(x: int, y: int, src: str, need: str) -> bool:
        """A cross-type swap may not push a type's share of a split out of tolerance."""
        if types[x] == types[y]:
            return True
        for sp, tp, d in ((src, types[x], -1), (need, types[x], 1), (need, types[y], -1), (src, types[y], 1)):
            want = fr[sp] * type_total[tp]
            after = tcount[sp][tp] + d
            if abs(after - want) > max(1.0, 0.2 * want) and abs(after - want) > abs(tcount[sp][tp] - want):
                return False
        return True

    swaps = 0
    work = 0
    by_split: dict[str, list[int]] = {s: [i for i in order if assignment[i] == s] for s in SPLITS}
    for t in sorted(weight, key=lambda x: (-weight[x], x)):
        for need in SPLITS:
            if fr[need] <= 0 or cov[need][t] > 0 or work > budget:
                continue
            best: tuple[int, int, int, str] | None = None
            for x in order:
                src = assignment[x]
                if src == need or t not in sets[x]:
                    continue
                for y in by_split[need]:
                    work += 1
                    g = gain(x, y, src, need) * 2 + (types[x] == types[y])
                    if g > 1 and (best is None or g > best[0]) and type_ok(x, y, src, need):
                        best = (g, x, y, src)
                if work > budget:
                    break
            if best is None:
                continue
            _, x, y, src = best
            assignment[x], assignment[y] = need, src
            cov[src].subtract(sets[x])
            cov[need].update(sets[x])
            cov[need].subtract(sets[y])
            cov[src].update(sets[y])
            tcount[src][types[x]] -= 1
            tcount[need][types[x]] += 1
            tcount[need][types[y]] -= 1
            tcount[src][types[y]] += 1
            by_split[need].remove(y)
            by_split[need].append(x)
            by_split[src].remove(x)
            by_split[src].append(y)
            swaps += 1
    return swaps


def stratified_split(
    types: Sequence[str],
    terms: Sequence[Sequence[str]],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    stratify_by: Sequence[str] = ("type", "term"),
) -> SplitResult:
    """Iterative stratification (Sechidis et al., 2011) over the labels {type} ∪ terms of each sample.

    Repeatedly take the label with the fewest unassigned samples and place each of its samples in the split
    that (1) does not have this label yet (so a label with ≥ 3 samples reaches train, val and test), then
    (2) still wants the most samples of this label, then (3) of the sample's type, then (4) overall; ties
    broken by a seeded RNG. A split never takes more than its exact target size.
    """
    n = len(types)
    fr = dict(zip(SPLITS, fractions, strict=True))
    sizes = target_sizes(n, fractions)
    by_type = "type" in stratify_by
    by_term = "term" in stratify_by
    rng = random.Random(seed)
    labels: list[list[str]] = []
    for i in range(n):
        ls = [f"term:{t}" for t in dict.fromkeys(terms[i])] if by_term else []
        if by_type:
            ls.append(f"type:{types[i]}")
        labels.append(ls)
    label_total = Counter(lab for ls in labels for lab in ls)
    desired = {lab: {s: fr[s] * c for s in SPLITS} for lab, c in label_total.items()}
    in_split = {lab: dict.fromkeys(SPLITS, 0) for lab in label_total}
    capacity = dict(sizes)
    type_desired = {t: {s: fr[s] * c for s in SPLITS} for t, c in Counter(types).items()}
    members: dict[str, list[int]] = {}
    order = list(range(n))
    rng.shuffle(order)  # seeded order of samples within each label
    for i in order:
        for lab in labels[i]:
            members.setdefault(lab, []).append(i)
    remaining = Counter(label_total)
    assignment = [""] * n
    tie = {i: {s: rng.random() for s in SPLITS} for i in range(n)}

    def place(i: int, lab: str | None) -> None:
        open_splits = [s for s in SPLITS if capacity[s] > 0]

        progress = (n - sum(capacity.values())) / max(n, 1)

        def key(s: str) -> tuple:
            # coverage first, but paced: a split that is filling faster than the whole assignment progresses
            # would otherwise be used up by the rarest labels and leave nothing for the rest
            paced = (sizes[s] - capacity[s]) / max(sizes[s], 1) <= progress + PACE_SLACK
            cover = lab is not None and fr[s] > 0 and in_split[lab][s] == 0 and paced
            want = round(desired[lab][s]) if lab is not None else 0
            tdes = type_desired[types[i]][s] if by_type else 0.0
            return (cover, want, round(tdes), capacity[s] / max(sizes[s], 1), tie[i][s])

        best = max(open_splits, key=key)
        assignment[i] = best
        capacity[best] -= 1
        type_desired[types[i]][best] -= 1
        for lb in labels[i]:
            desired[lb][best] -= 1
            in_split[lb][best] += 1
            remaining[lb] -= 1

    while True:
        live = [lab for lab, c in remaining.items() if c > 0]
        if not live:
            break
        lab = min(live, key=lambda lb: (remaining[lb], lb))
        for i in members[lab]:
            if not assignment[i]:
                place(i, lab)
    for i in order:  # samples without any label
        if not assignment[i]:
            place(i, None)
    if by_term:
        _improve_coverage(assignment, types, terms, fr, order)
    counts = Counter(assignment)
    counts = {s: counts.get(s, 0) for s in SPLITS}
    warnings: list[str] = []
    if n < SMALL_DATASET:
        warnings.append(
            f"only {n} samples after de-duplication (< {SMALL_DATASET}): the model will likely overfit "
            "and val/test metrics will be noisy; add more documents"
        )
    for s in SPLITS:
        if fr[s] > 0 and counts[s] < SMALL_SPLIT:
            warnings.append(
                f"{s} split has only {counts[s]} samples (< {SMALL_SPLIT}): too small for a meaningful "
                "evaluation; overfitting risk"
            )
    return SplitResult(assignment=assignment, sizes=counts, warnings=warnings)
