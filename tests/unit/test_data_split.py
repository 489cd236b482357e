"""Stratified, deterministic train/val/test split with small-dataset warnings."""

from __future__ import annotations

import random
from collections import Counter

from thinktune.data.split import stratified_split, target_sizes


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
