"""The trainer's Prometheus exporter (thinktune.train.exporter) serves exactly the names of thinktune.contract:
rendered with prometheus_client's own text format, parsed back with its own parser."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from thinktune import contract
from thinktune.train.exporter import PromMetrics


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_registers_exactly_the_contract_gauges_and_the_anomaly_counter():
    m = PromMetrics(job="j", namespace="ns", rank=0, port=None)
    fams = _families(generate_latest(m.registry).decode())
    ours = {name for name in fams if name.startswith(contract.TRAIN_METRIC_PREFIX)}
    gauges = {contract.train_metric(n) for n in contract.TRAIN_GAUGES}
    assert ours == gauges | {contract.train_metric(contract.TRAIN_ANOMALIES)}  # nothing else of ours
    assert all(fams[g].type == "gauge" for g in gauges)
    assert fams[contract.train_metric(contract.TRAIN_ANOMALIES)].type == "counter"
    for n, help_text in contract.TRAIN_GAUGES.items():
        assert fams[contract.train_metric(n)].documentation == help_text
    assert set(contract.PROGRESS_FROM_METRIC.values()) <= gauges  # the operator reads only names we serve


def test_every_gauge_can_be_set_and_carries_the_contract_labels():
    m = PromMetrics(job="ftj-a", namespace="team", rank=1, port=None)
    for i, name in enumerate(contract.TRAIN_GAUGES):
        m.set(name, float(i + 1))
    m.set("eval_loss", float("nan"))  # ignored: NaN is not exported
    m.set("loss", None)  # ignored
    for kind in contract.ANOMALY_KINDS:
        m.anomaly(kind)
    fams = _families(generate_latest(m.registry).decode())
    labels = {"job": "ftj-a", "namespace": "team", "rank": "1"}
    for i, name in enumerate(contract.TRAIN_GAUGES):
        (sample,) = fams[contract.train_metric(name)].samples
        assert sample.labels == labels
        if name not in ("eval_loss", "loss"):
            assert sample.value == float(i + 1), name
    totals = [
        s
        for s in fams[contract.train_metric(contract.TRAIN_ANOMALIES)].samples
        if s.name == contract.ANOMALIES_TOTAL
    ]
    assert {s.labels["kind"]: s.value for s in totals} == dict.fromkeys(contract.ANOMALY_KINDS, 1.0)
    assert all(set(s.labels) == set(contract.METRIC_LABELS) | {"kind"} for s in totals)


def test_unknown_names_are_programming_errors():
    m = PromMetrics(job="j", namespace="ns", rank=0, port=None)
    with pytest.raises(KeyError):
        m.set("char_accuracy", 0.5)  # evaluation's name, not a trainer gauge
    with pytest.raises(KeyError, match="ANOMALY_KINDS"):
        m.anomaly("made_up")


def test_http_endpoint_serves_the_registry():
    p = PromMetrics(job="ftj-a", namespace="team", rank=1, port=0)
    try:
        assert p.port
        p.set("loss", 1.25)
        p.anomaly("loss_spike")
        body = urllib.request.urlopen(f"http://127.0.0.1:{p.port}/metrics", timeout=5).read().decode()
    finally:
        p.close()
    assert 'thinktune_train_loss{job="ftj-a",namespace="team",rank="1"} 1.25' in body
    assert (
        'thinktune_train_anomalies_total{job="ftj-a",kind="loss_spike",namespace="team",rank="1"} 1.0' in body
    )


def test_every_trainer_metric_the_dashboard_queries_is_served():
    """The Grafana dashboard (helm/thinktune/dashboards/thinktune.json) against the real exporter's output."""
    import re
    from pathlib import Path

    dashboard = Path(__file__).resolve().parents[2] / "helm" / "thinktune" / "dashboards" / "thinktune.json"
    queried = set(re.findall(r"thinktune_train_[a-z_]+", dashboard.read_text()))
    m = PromMetrics(job="j", namespace="ns", rank=0, port=None)
    m.anomaly("nan")
    served = {
        s.name
        for f in text_string_to_metric_families(generate_latest(m.registry).decode())
        for s in f.samples
    }
    served |= {f.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
    assert queried and queried <= served, sorted(queried - served)
