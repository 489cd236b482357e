"""Deterministic train/val/test split, stratified by sample type and by cryptography term.

Iterative stratification over the labels "type" and every term of a sample (see stratified_split). Split sizes
are exact (rounded fractions), so rare terms are spread over all splits while the global 70/15/15 (or
configured) proportions hold. Samples are atomic: a sample
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


def _improve_coverage(assignment: list[str], types: Sequence[str], terms: Sequence[Sequence[str]],
                      fr: dict[str, float], order: list[int], min_count: int = 3, budget: int = 200_000) -> int:
    """Swap same-type samples between splits so that terms with ≥ min_count samples reach every split.

    A swap moves sample x (containing the missing term t) from a split that has t at least twice into the split
    lacking t, and moves a same-type sample y back; it is made only if neither split loses any term it has.
    Terms too rare to matter (< min_count) may move. Sizes and per-type counts are unchanged. Deterministic (visits samples in the seeded ``order``)."""
    cov = {s: Counter() for s in SPLITS}
    sets = [set(ts) for ts in terms]
    for i, s in enumerate(assignment):
        cov[s].update(sets[i])
    total = Counter(t for ts in sets for t in ts)
    swaps = 0
    work = 0
    for t in sorted(total, key=lambda x: (total[x], x)):
        if total[t] < min_count:
            continue
        for need in SPLITS:
            if fr[need] <= 0 or cov[need][t] > 0:
                continue
            done = False
            for x in order:
                if done or work > budget:
                    break
                src = assignment[x]
                if src == need or t not in sets[x] or cov[src][t] < 2:
                    continue
                if any(cov[src][u] < 2 and total[u] >= min_count for u in sets[x]):
                    continue  # moving x out would uncover one of its terms in src
                for y in order:
                    work += 1
                    if assignment[y] != need or types[y] != types[x] or t in sets[y]:
                        continue
                    if any(cov[need][u] < 2 and total[u] >= min_count for u in sets[y]):
                        continue
                    assignment[x], assignment[y] = need, src
                    cov[src].subtract(sets[x])
                    cov[need].update(sets[x])
                    cov[need].subtract(sets[y])
                    cov[src].update(sets[y])
                    swaps += 1
                    done = True
                    break
    return swaps


def stratified_split(types: Sequence[str], terms: Sequence[Sequence[str]], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                     seed: int = 42, stratify_by: Sequence[str] = ("type", "term")) -> SplitResult:
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
        warnings.append(f"only {n} samples after de-duplication (< {SMALL_DATASET}): the model will likely overfit "
                        "and val/test metrics will be noisy; add more documents")
    for s in SPLITS:
        if fr[s] > 0 and counts[s] < SMALL_SPLIT:
            warnings.append(f"{s} split has only {counts[s]} samples (< {SMALL_SPLIT}): too small for a meaningful "
                            "evaluation; overfitting risk")
    return SplitResult(assignment=assignment, sizes=counts, warnings=warnings)
