"""Trainer anomaly warnings reach the cluster as Events: the operator reads the trainer's real
`thinktune_train_anomalies_total` counters and posts one Event per kind whose count grew."""

from __future__ import annotations

import json

from prometheus_client import generate_latest
from thinktune.train.exporter import PromMetrics
from thinktune_operator.progress import anomalies_from_text, new_anomalies, parse_annotation


def test_anomaly_counters_from_the_real_trainer_exporter():
    m = PromMetrics(job="j", namespace="ns", rank=0, port=None)
    m.set("step", 7)
    m.anomaly("loss_spike")
    m.anomaly("loss_spike")
    m.anomaly("nan")
    other = PromMetrics(job="j", namespace="ns", rank=1, port=None)
    other.anomaly("memory_growth")
    text = generate_latest(m.registry).decode() + generate_latest(other.registry).decode()
    assert anomalies_from_text(text) == {"loss_spike": 2, "nan": 1}  # rank 0 only
    assert anomalies_from_text(text, rank=None) == {"loss_spike": 2, "nan": 1, "memory_growth": 1}


def test_only_grown_counts_become_events():
    assert new_anomalies(None, {"nan": 1}) == [("nan", 1)]
    assert new_anomalies({"nan": 1, "plateau": 2}, {"nan": 1, "plateau": 3, "loss_spike": 1}) == [
        ("loss_spike", 1),
        ("plateau", 3),
    ]
    assert new_anomalies({"nan": 2}, {"nan": 2}) == []
    assert new_anomalies({"nan": 1}, None) == []


def test_annotation_source_carries_anomalies():
    pod = {
        "metadata": {
            "annotations": {
                "thinktune.io/progress": json.dumps(
                    {"step": 3, "totalSteps": 10, "anomalies": {"divergence": 1, "bad": "x"}}
                )
            }
        }
    }
    prog = parse_annotation(pod)
    assert prog["anomalies"] == {"divergence": 1} and prog["summary"] == "3/10 (30%)"
