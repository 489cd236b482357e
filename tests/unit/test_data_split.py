"""Stratified, deterministic train/val/test split with small-dataset warnings."""

from __future__ import annotations

import random
from collections import Counter

from thinktune.data.split import group_split, stratified_split, target_sizes


def corpus(n=200, seed=0):
    rng = random.Random(seed)
    types = [rng.choice(["qa", "qa", "section", "code", "thinking"]) for _ in range(n)]
    common = ["SM4", "SM2", "GCM", "TLS", "HMAC"]
    terms = [rng.sample(common, 2) + ([f"rare{i % 20}"] if i % 3 == 0 else []) for i in range(n)]
    return types, terms


def test_target_sizes_exact_and_nonempty():
    assert target_sizes(100, (0.7, 0.15, 0.15)) == {"train": 70, "val": 15, "test": 15}
    assert target_sizes(3, (0.7, 0.15, 0.15)) == {"train": 1, "val": 1, "test": 1}
    assert target_sizes(10, (0.8, 0.2, 0.0)) == {"train": 8, "val": 2, "test": 0}


def test_split_sizes_follow_fractions():
    types, terms = corpus()
    r = stratified_split(types, terms, (0.7, 0.15, 0.15), seed=1)
    assert r.sizes == {"train": 140, "val": 30, "test": 30}
    assert Counter(r.assignment) == Counter(r.sizes)
    assert r.warnings == []


def test_deterministic_with_seed_and_seed_matters():
    types, terms = corpus()
    a = stratified_split(types, terms, seed=7).assignment
    assert a == stratified_split(types, terms, seed=7).assignment
    assert a != stratified_split(types, terms, seed=8).assignment


def test_stratified_by_type():
    types, terms = corpus()
    r = stratified_split(types, terms, seed=3)
    for t, n in Counter(types).items():
        got = Counter(s for s, tt in zip(r.assignment, types, strict=True) if tt == t)
        assert abs(got["train"] - 0.7 * n) <= 2, (t, got, n)
        assert abs(got["val"] - 0.15 * n) <= 2 and abs(got["test"] - 0.15 * n) <= 2


def test_terms_spread_across_splits():
    types, terms = corpus()
    r = stratified_split(types, terms, seed=3)
    freq = Counter(t for ts in terms for t in ts)
    for term, n in freq.items():
        splits = {s for s, ts in zip(r.assignment, terms, strict=True) if term in ts}
        if n >= 3:
            assert splits == {"train", "val", "test"}, (term, n, splits)
    # without term stratification rare terms often miss a split
    plain = stratified_split(types, terms, seed=3, stratify_by=["type"])
    missing = sum(
        1
        for term, n in freq.items()
        if n >= 3
        and {s for s, ts in zip(plain.assignment, terms, strict=True) if term in ts}
        != {"train", "val", "test"}
    )
    assert missing > 0


def test_small_dataset_warnings():
    r = stratified_split(["qa"] * 20, [[]] * 20)
    assert any("only 20 samples" in w and "overfit" in w for w in r.warnings)
    assert any(w.startswith("val split has only") for w in r.warnings)
    assert any(w.startswith("test split has only") for w in r.warnings)


def doc_corpus(n_docs=60, seed=0):
    """Samples grouped into documents of uneven size; each document leans to one type and one topic."""
    rng = random.Random(seed)
    groups, types, terms = [], [], []
    topics = ["SM4", "SM2", "GCM", "TLS", "HMAC", "RSA"]
    for d in range(n_docs):
        lean = rng.choice(["qa", "section", "code", "thinking"])
        topic = topics[d % len(topics)]
        for _ in range(rng.randint(1, 8)):
            groups.append(f"doc{d:02d}.md")
            types.append(lean if rng.random() < 0.7 else rng.choice(["qa", "section"]))
            terms.append([topic, rng.choice(topics)] + ([f"rare{d % 15}"] if d % 2 else []))
    return groups, types, terms


def test_group_split_keeps_documents_whole_and_fractions_close():
    groups, types, terms = doc_corpus()
    r = group_split(groups, types, terms, (0.7, 0.15, 0.15), seed=1)
    assert r.by_group
    where: dict[str, set[str]] = {}
    for g, s in zip(groups, r.assignment, strict=True):
        where.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in where.values())
    n = len(groups)
    for s, f in zip(("train", "val", "test"), (0.7, 0.15, 0.15), strict=True):
        assert abs(r.sizes[s] / n - f) <= 0.02, r.sizes
    for t, k in Counter(types).items():  # still stratified by type
        got = Counter(s for s, tt in zip(r.assignment, types, strict=True) if tt == t)
        assert abs(got["test"] - 0.15 * k) <= max(2, 0.2 * k), (t, got, k)
    # terms found in ≥ 3 documents reach every split (the ones a document split can spread)
    docs: dict[str, set[str]] = {}
    for g, ts in zip(groups, terms, strict=True):
        for t in ts:
            docs.setdefault(t, set()).add(g)
    for t, ds in docs.items():
        if len(ds) >= 3:
            assert {s for s, ts in zip(r.assignment, terms, strict=True) if t in ts} == {
                "train",
                "val",
                "test",
            }, t
    assert r.warnings == []


def test_group_split_deterministic_and_seed_matters():
    groups, types, terms = doc_corpus()
    a = group_split(groups, types, terms, seed=7).assignment
    assert a == group_split(groups, types, terms, seed=7).assignment
    assert a != group_split(groups, types, terms, seed=8).assignment


def test_group_split_too_few_documents_falls_back_to_samples_with_a_warning():
    r = group_split(["a.md"] * 30 + ["b.md"] * 30, ["qa"] * 60, [[]] * 60)
    assert not r.by_group and r.sizes == {"train": 42, "val": 9, "test": 9}
    assert r.warnings[0].startswith("only 2 document(s) for 3 splits: split by sample instead of by document")


def test_group_split_uneven_documents_and_unbalanced_type_are_warned():
    groups = ["big.md"] * 40 + ["s1.md"] * 3 + ["s2.md"] * 3 + ["s3.md"] * 3
    types = ["qa"] * 40 + ["code"] * 3 + ["qa"] * 6
    r = group_split(groups, types, [[]] * len(groups))
    assert r.by_group and r.sizes["train"] == 40  # the big document cannot be divided
    assert any(
        w.startswith("split by document: realised fractions 0.82/") and "instead of 0.70/0.15/0.15" in w
        for w in r.warnings
    ), r.warnings
    # code comes from one document: it cannot reach all splits, and says so with the document
    assert any(w.startswith("type 'code' has no") and "1 document(s) (s1.md)" in w for w in r.warnings), (
        r.warnings
    )
