"""Deterministic train/val/test split, stratified by sample type and by cryptography term.

The dataset build splits by document (group_split): a held-out sample never shares its document with
training, which a per-sample split cannot promise (sections of one document repeat each other). The
per-sample split (stratified_split) is its fallback when there are too few documents.

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
    by_group: bool = False  # True: every group (document) lies in one split (group_split)


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
    return SplitResult(assignment=assignment, sizes=counts, warnings=_size_warnings(n, counts, fr))


FRACTION_TOLERANCE = 0.05  # realised split fraction further than this from the configured one: warned
SWAP_MAX_GROUPS = 400  # above this many documents pairwise swaps cost too much; single moves still run
RESTARTS = 8  # local searches from different starting points (documents ≤ SWAP_MAX_GROUPS)
SEARCH_BUDGET = 400_000  # candidate moves/swaps evaluated at most (deterministic bound)


@dataclass
class _Groups:
    """Per-document aggregates: sample count, samples per type, samples per term."""

    names: list[str]
    size: list[int]
    types: list[Counter]
    terms: list[Counter]


def _aggregate(
    groups: Sequence[str], types: Sequence[str], terms: Sequence[Sequence[str]]
) -> tuple[_Groups, list[int]]:
    index: dict[str, int] = {}
    of_sample: list[int] = []
    agg = _Groups([], [], [], [])
    for g, t, ts in zip(groups, types, terms, strict=True):
        if g not in index:
            index[g] = len(agg.names)
            agg.names.append(g)
            agg.size.append(0)
            agg.types.append(Counter())
            agg.terms.append(Counter())
        k = index[g]
        agg.size[k] += 1
        agg.types[k][t] += 1
        agg.terms[k].update(dict.fromkeys(ts, 1))
        of_sample.append(k)
    return agg, of_sample


class _State:
    """A document → split assignment and the cost terms it is judged by, updated incrementally.

    cost = SIZE_W·Σ_split (size − target)² + Σ_type Σ_split (count − fraction·total)² + HOLE_W·holes, where a hole
    is a (term, split) pair: a term found in ≥ 3 documents (so it can reach every split) missing from a split
    with a non-zero fraction. Sizes weigh most: the configured fractions are the contract, type balance and
    term coverage are preferences.
    """

    SIZE_W = 4.0
    HOLE_W = 10.0  # tuned on examples/crypto/corpus: 27 → 20 holes for one sample of size deviation

    def __init__(
        self, agg: _Groups, fr: dict[str, float], sizes: dict[str, int], by_type: bool, by_term: bool
    ):
        self.agg, self.fr, self.target = agg, fr, sizes
        self.splits = [s for s in SPLITS if fr[s] > 0 or sizes[s] > 0]
        type_total = Counter()
        for c in agg.types:
            type_total.update(c)
        self.type_want = {t: {s: fr[s] * n for s in SPLITS} for t, n in type_total.items()} if by_type else {}
        doc_freq = Counter(t for c in agg.terms for t in c)
        self.holeable = {t for t, n in doc_freq.items() if n >= 3} if by_term else set()
        self.where: list[str | None] = [None] * len(agg.names)
        self.size = dict.fromkeys(SPLITS, 0)
        self.tcount = {s: Counter() for s in SPLITS}
        self.cov = {s: Counter() for s in SPLITS}

    def cost(self) -> float:
        size = sum((self.size[s] - self.target[s]) ** 2 for s in SPLITS)
        types = sum((self.tcount[s][t] - want[s]) ** 2 for t, want in self.type_want.items() for s in SPLITS)
        holes = sum(1 for t in self.holeable for s in SPLITS if self.fr[s] > 0 and self.cov[s][t] <= 0)
        return self.SIZE_W * size + types + self.HOLE_W * holes

    def delta(self, g: int, dst: str) -> float:
        """Cost change of moving document g (assigned or not) to split dst."""
        src = self.where[g]
        if src == dst:
            return 0.0
        a = self.agg
        w = a.size[g]
        d = 0.0
        for s, sign in ((src, -1), (dst, 1)):
            if s is None:
                continue
            before = self.size[s] - self.target[s]
            d += self.SIZE_W * ((before + sign * w) ** 2 - before**2)
            for t, n in a.types[g].items():
                want = self.type_want.get(t)
                if want is not None:
                    b = self.tcount[s][t] - want[s]
                    d += (b + sign * n) ** 2 - b**2
        for t, n in a.terms[g].items():
            if t not in self.holeable:
                continue
            if src is not None and self.fr[src] > 0 and self.cov[src][t] == n:
                d += self.HOLE_W  # g held every sample of t in src
            if self.fr[dst] > 0 and self.cov[dst][t] == 0:
                d -= self.HOLE_W
        return d

    def move(self, g: int, dst: str) -> None:
        a = self.agg
        src = self.where[g]
        if src is not None:
            self.size[src] -= a.size[g]
            self.tcount[src].subtract(a.types[g])
            self.cov[src].subtract(a.terms[g])
        self.size[dst] += a.size[g]
        self.tcount[dst].update(a.types[g])
        self.cov[dst].update(a.terms[g])
        self.where[g] = dst


def _search(state: _State, order: list[int], largest_first: bool) -> None:
    """Greedy placement (largest document first, or in ``order``) then best-improvement moves and swaps until
    none helps."""
    for g in sorted(order, key=lambda k: -state.agg.size[k]) if largest_first else order:
        best = min(state.splits, key=lambda s: state.delta(g, s))
        state.move(g, best)
    work = 0
    swaps = len(order) <= SWAP_MAX_GROUPS
    while work < SEARCH_BUDGET:
        best: tuple[float, int, str, int, str] | None = None
        for g in order:
            for s in state.splits:
                work += 1
                d = state.delta(g, s)
                if d < -1e-9 and (best is None or d < best[0]):
                    best = (d, g, s, -1, "")
        if swaps:
            for i, g in enumerate(order):
                for h in order[i + 1 :]:
                    sg, sh = state.where[g], state.where[h]
                    if sg == sh:
                        continue
                    work += 1
                    d = state.delta(g, sh)
                    state.move(g, sh)
                    d += state.delta(h, sg)
                    state.move(g, sg)
                    if d < -1e-9 and (best is None or d < best[0]):
                        best = (d, g, sh, h, sg)
        if best is None:
            return
        _, g, s, h, sh = best
        state.move(g, s)
        if h >= 0:
            state.move(h, sh)


def group_split(
    groups: Sequence[str],
    types: Sequence[str],
    terms: Sequence[Sequence[str]],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    stratify_by: Sequence[str] = ("type", "term"),
) -> SplitResult:
    """Split by group (the sample's document): every group lies in one split, so no held-out sample shares a
    document with training. Within that constraint sizes follow ``fractions`` as closely as the group sizes
    allow, then types and terms are balanced (see _State). Deterministic for a seed (it orders equal-sized
    groups).

    Degrades in steps, each with a warning: fewer groups than non-empty splits → the per-sample
    stratified_split (held-out samples then share documents with train); realised fractions off by more than
    FRACTION_TOLERANCE → said with the numbers; a type that cannot reach a split → said with its documents.
    """
    n = len(types)
    fr = dict(zip(SPLITS, fractions, strict=True))
    sizes = target_sizes(n, fractions)
    agg, of_sample = _aggregate(groups, types, terms)
    wanted = [s for s in SPLITS if sizes[s] > 0]
    if len(agg.names) < len(wanted):
        res = stratified_split(types, terms, fractions, seed, stratify_by)
        res.warnings.insert(
            0,
            f"only {len(agg.names)} document(s) for {len(wanted)} splits: split by sample instead of by "
            "document, so val/test samples come from training documents (see leakage in report.json); "
            "add documents for an honest evaluation",
        )
        return res
    rng = random.Random(seed)
    state: _State | None = None
    restarts = RESTARTS if len(agg.names) <= SWAP_MAX_GROUPS else 1
    for attempt in range(restarts):  # local search ends in a local minimum: keep the best of a few
        order = list(range(len(agg.names)))
        rng.shuffle(order)
        cand = _State(agg, fr, sizes, "type" in stratify_by, "term" in stratify_by)
        _search(cand, order, largest_first=attempt == 0)
        if state is None or cand.cost() < state.cost() - 1e-9:
            state = cand
    for s in wanted:  # a configured split never ends empty while another split has documents to spare
        if state.size[s] == 0:
            donor = max(SPLITS, key=lambda x: (sum(1 for w in state.where if w == x), state.size[x]))
            g = min((k for k in order if state.where[k] == donor), key=lambda k: agg.size[k])
            state.move(g, s)
    assignment = [state.where[k] or "train" for k in of_sample]
    counts = Counter(assignment)
    result = SplitResult(assignment=assignment, sizes={s: counts.get(s, 0) for s in SPLITS}, by_group=True)
    result.warnings = _size_warnings(n, result.sizes, fr) + _group_warnings(agg, state, fr, n)
    return result


def _group_warnings(agg: _Groups, state: _State, fr: dict[str, float], n: int) -> list[str]:
    out: list[str] = []
    real = {s: state.size[s] / n if n else 0.0 for s in SPLITS}
    if any(abs(real[s] - fr[s]) > FRACTION_TOLERANCE for s in SPLITS):
        out.append(
            "split by document: realised fractions "
            + "/".join(f"{real[s]:.2f}" for s in SPLITS)
            + " instead of "
            + "/".join(f"{fr[s]:.2f}" for s in SPLITS)
            + f" (train/val/test; {len(agg.names)} documents of uneven size); add or split documents"
        )
    type_docs: dict[str, list[str]] = {}
    for name, c in zip(agg.names, agg.types, strict=True):
        for t in c:
            type_docs.setdefault(t, []).append(name)
    for t in sorted(type_docs):
        missing = [s for s in SPLITS if fr[s] > 0 and state.tcount[s][t] == 0]
        if missing:
            docs = type_docs[t]
            out.append(
                f"type {t!r} has no {'/'.join(missing)} samples: its samples come from {len(docs)} document(s) "
                f"({', '.join(docs[:5])}{', …' if len(docs) > 5 else ''}) and a document is never divided"
            )
    return out


def _size_warnings(n: int, counts: dict[str, int], fr: dict[str, float]) -> list[str]:
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
    return warnings
