"""The training anomaly detector (thinktune.train.anomalies): each kind of contract.ANOMALY_KINDS fires on the
pattern it names, a healthy run raises none, and a repeated anomaly waits for its cooldown."""

from __future__ import annotations

import math

import pytest
from thinktune.contract import ANOMALY_KINDS
from thinktune.train.anomalies import AnomalyDetector


def _kinds(found) -> list[str]:
    return [a.kind for a in found]


def test_nan_and_spike():
    d = AnomalyDetector(spike_factor=3.0)
    for i, v in enumerate([2.0, 2.1, 1.9, 2.0], start=1):
        assert d.on_train_log(i, v) == []
    (spike,) = d.on_train_log(5, 9.0)
    assert spike.kind == "loss_spike" and spike.step == 5 and "lower learningRate" in spike.message
    assert spike.record() == {"kind": "loss_spike", "step": 5, "message": spike.message}
    assert _kinds(d.on_train_log(6, math.nan)) == ["nan"]
    assert _kinds(d.on_train_log(7, 2.0, grad_norm=math.inf)) == ["nan"]
    assert _kinds(d.on_eval(7, math.nan)) == []  # one "nan" per step
    assert _kinds(d.on_eval(8, math.nan)) == ["nan"]


def test_divergence():
    d = AnomalyDetector(spike_factor=100.0)
    found = []
    for i, v in enumerate([2.0, 1.5, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], start=1):
        found += d.on_train_log(i, v)
    assert "divergence" in _kinds(found)


def test_no_false_alarms_on_a_healthy_run():
    d = AnomalyDetector()
    found = []
    for i in range(1, 200):
        found += d.on_train_log(
            i,
            3.0 * math.exp(-i / 50) + 0.5 + 0.05 * math.sin(i),
            grad_norm=1.0,
            memory_bytes=10 * 2**30 + (i % 3) * 2**20,
        )
    for j, v in enumerate([2.0, 1.8, 1.7, 1.65, 1.6]):
        found += d.on_eval(j * 10, v)
    assert found == []


def test_plateau():
    d = AnomalyDetector(plateau_evals=3)
    out = []
    for i, v in enumerate([2.0, 1.5, 1.6, 1.55, 1.7]):
        out += d.on_eval(i, v)
    assert _kinds(out) == ["plateau"]


def test_memory_growth_fires_on_a_steady_rise_only():
    d = AnomalyDetector()
    out = []
    for i in range(1, 15):
        out += d.on_train_log(i, 1.0, memory_bytes=(4 + i) * 2**30)
    assert _kinds(out) == ["memory_growth"]  # once: the cooldown (50 steps) holds the repeats back
    flat = AnomalyDetector()
    assert [a for i in range(1, 15) for a in flat.on_train_log(i, 1.0, memory_bytes=4 * 2**30)] == []


def test_cooldown_between_repeated_spikes():
    d = AnomalyDetector(spike_factor=3.0, window=3)
    found = []
    for step in range(1, 60):
        found += d.on_train_log(step, 50.0 if step % 5 == 0 else 1.0)
    steps = [a.step for a in found if a.kind == "loss_spike"]
    assert steps and all(b - a >= 20 for a, b in zip(steps, steps[1:], strict=False))


def test_every_kind_is_a_contract_kind_and_each_is_reachable():
    d = AnomalyDetector(spike_factor=3.0, plateau_evals=1)
    seen = set()
    for i in range(1, 15):
        seen |= set(_kinds(d.on_train_log(i, 1.0 if i < 5 else 2.0 + i, memory_bytes=(4 + i) * 2**30)))
    seen |= set(_kinds(d.on_train_log(20, math.nan)))
    seen |= set(_kinds(d.on_eval(20, 1.0) + d.on_eval(21, 1.0)))
    assert seen == set(ANOMALY_KINDS)
    with pytest.raises(KeyError, match="ANOMALY_KINDS"):
        d._report([], "made_up", 1, "x")
