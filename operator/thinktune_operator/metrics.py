"""Prometheus metrics of the operator (prometheus_client; served by the startup handler in main.py).

Per-object gauges (jobs by phase, progress, dataset stats, evaluation metrics) come from a scrape-time Collector
over an in-memory view that every reconcile refreshes and deletion clears, so no stale label series survive a
deleted CR (the crate-operator / KubeRay pattern). Counters and histograms are ordinary prometheus_client objects.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "thinktune_operator"
PHASES = ("Pending", "Waiting", "Blocked", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
KINDS = ("DatasetBuild", "FineTuneJob", "ModelExport")


class ObjectView:
    """Thread-safe latest known state per CR: (kind, namespace, name) -> summary dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objs: dict[tuple[str, str, str], dict[str, Any]] = {}

    def update(self, kind: str, namespace: str, name: str, status: dict[str, Any] | None) -> None:
        with self._lock:
            self._objs[(kind, namespace, name)] = dict(status or {})

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objs.pop((kind, namespace, name), None)

    def snapshot(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        with self._lock:
            return dict(self._objs)


class StateCollector(Collector):
    def __init__(self, view: ObjectView) -> None:
        self.view = view

    def describe(self):  # no describe -> no collect at registration time
        return []

    def collect(self):
        snap = self.view.snapshot()
        by_phase = GaugeMetricFamily(
            f"{PREFIX}_jobs",
            "Custom resources by kind, namespace and phase",
            labels=["kind", "namespace", "phase"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        namespaces = {(k, ns) for (k, ns, _n) in snap}
        for (kind, ns, _name), st in snap.items():
            ph = st.get("phase") or "Pending"
            counts[(kind, ns, ph)] = counts.get((kind, ns, ph), 0) + 1
        for kind, ns in namespaces:  # explicit zeros so "by phase" panels and alerts see every phase
            for ph in PHASES:
                by_phase.add_metric([kind, ns, ph], counts.get((kind, ns, ph), 0))
        yield by_phase

        prog = GaugeMetricFamily(
            f"{PREFIX}_job_progress_percent",
            "FineTuneJob progress (step/total)",
            labels=["namespace", "finetunejob"],
        )
        step = GaugeMetricFamily(
            f"{PREFIX}_job_step", "FineTuneJob optimizer step", labels=["namespace", "finetunejob"]
        )
        loss = GaugeMetricFamily(
            f"{PREFIX}_job_loss", "FineTuneJob latest training loss", labels=["namespace", "finetunejob"]
        )
        eta = GaugeMetricFamily(
            f"{PREFIX}_job_eta_seconds",
            "FineTuneJob estimated time left",
            labels=["namespace", "finetunejob"],
        )
        attempt = GaugeMetricFamily(
            f"{PREFIX}_job_attempt", "FineTuneJob gang attempt", labels=["namespace", "finetunejob"]
        )
        failed_nodes = GaugeMetricFamily(
            f"{PREFIX}_job_failed_nodes",
            "Nodes a FineTuneJob avoids after failures",
            labels=["namespace", "finetunejob"],
        )
        evalm = GaugeMetricFamily(
            f"{PREFIX}_job_eval_metric",
            "Final evaluation metrics of a FineTuneJob",
            labels=["namespace", "finetunejob", "metric"],
        )
        ds = GaugeMetricFamily(
            f"{PREFIX}_dataset_samples",
            "DatasetBuild counts from report.json",
            labels=["namespace", "datasetbuild", "count"],
        )
        art = GaugeMetricFamily(
            f"{PREFIX}_export_artifacts",
            "ModelExport artifacts (verified label)",
            labels=["namespace", "modelexport", "verified"],
        )
        for (kind, ns, name), st in snap.items():
            if kind == "FineTuneJob":
                p = st.get("progress") or {}
                if p.get("percent") is not None:
                    prog.add_metric([ns, name], float(p["percent"]))
                if p.get("step") is not None:
                    step.add_metric([ns, name], float(p["step"]))
                if p.get("loss") is not None:
                    loss.add_metric([ns, name], float(p["loss"]))
                if p.get("etaSeconds") is not None:
                    eta.add_metric([ns, name], float(p["etaSeconds"]))
                attempt.add_metric([ns, name], float(st.get("attempt") or 0))
                failed_nodes.add_metric([ns, name], float(len(st.get("failedNodes") or [])))
                for m, v in (st.get("metrics") or {}).items():
                    if isinstance(v, int | float):
                        evalm.add_metric([ns, name, m], float(v))
            elif kind == "DatasetBuild":
                for c, v in (st.get("counts") or {}).items():
                    if isinstance(v, int | float):
                        ds.add_metric([ns, name, c], float(v))
            elif kind == "ModelExport":
                arts = st.get("artifacts") or []
                for verified in ("true", "false", "unknown"):
                    n = sum(
                        1
                        for a in arts
                        if str(a.get("verified")).lower().replace("none", "unknown") == verified
                    )
                    if arts:
                        art.add_metric([ns, name, verified], float(n))
        yield from (prog, step, loss, eta, attempt, failed_nodes, evalm, ds, art)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else REGISTRY
        self.registry = r
        self.view = ObjectView()
        r.register(StateCollector(self.view))
        self.restarts = Counter(
            f"{PREFIX}_restarts",
            "Gang restarts by reason",
            ["kind", "namespace", "type", "reason"],
            registry=r,
        )
        self.gpu_failures = Counter(
            f"{PREFIX}_gpu_failures",
            "Infrastructure (GPU/node) failures detected",
            ["namespace", "node", "reason"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time of one reconcile",
            ["kind"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors",
            "Reconciles that raised or whose children the API server refused, by reason "
            "(http_<status>, an exception class, or a Blocked condition reason such as ChildForbidden)",
            ["kind", "reason"],
            registry=r,
        )
        self.queue_wait_seconds = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time a key waited in the work queue before its reconcile started",
            ["kind"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Keys waiting in the work queue", registry=r)
        self.gang_schedule_seconds = Histogram(
            f"{PREFIX}_gang_schedule_seconds",
            "Time from gang creation until every worker is scheduled",
            registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.replacement_seconds = Histogram(
            f"{PREFIX}_gpu_failure_replacement_seconds",
            "Time from detecting an infrastructure failure until every worker of the replacement gang runs",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.events = Counter(
            f"{PREFIX}_events", "Kubernetes Events posted", ["kind", "type", "reason"], registry=r
        )


_METRICS: OperatorMetrics | None = None


def get_metrics() -> OperatorMetrics:
    global _METRICS
    if _METRICS is None:
        _METRICS = OperatorMetrics()
    return _METRICS
