"""The trainer's Prometheus exporter: one per training process, on ``metricsPort + LOCAL_RANK``.

It registers exactly the gauges of ``thinktune.contract.TRAIN_GAUGES`` (names from ``contract.train_metric``)
and the anomalies Counter ``thinktune_train_anomalies_total{kind}``, every series labelled
``contract.METRIC_LABELS`` (job, namespace, rank). The operator (``thinktune_operator.progress``) and the
Grafana dashboard read these names from the same contract, so a gauge cannot be renamed on one side only.
"""

from __future__ import annotations

import math

from thinktune import contract


class PromMetrics:
    def __init__(self, *, job: str, namespace: str, rank: int, port: int | None):
        """``port`` None: no HTTP server (the registry can still be rendered); 0: any free port."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.labels = dict(zip(contract.METRIC_LABELS, (job, namespace, str(rank)), strict=True))
        self.gauges = {
            name: Gauge(
                contract.train_metric(name), help_text, contract.METRIC_LABELS, registry=self.registry
            )
            for name, help_text in contract.TRAIN_GAUGES.items()
        }
        self.anomalies = Counter(
            contract.train_metric(contract.TRAIN_ANOMALIES),
            "anomalies seen, by kind",
            [*contract.METRIC_LABELS, "kind"],
            registry=self.registry,
        )
        self.port: int | None = None
        self.server = None
        if port is not None:
            self._serve(port)

    def _serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        try:
            res = start_http_server(port, registry=self.registry)
        except OSError as e:  # a busy port must not stop training
            print(f"[thinktune] metrics port {port} unavailable ({e}); Prometheus endpoint disabled")
            return
        self.server = res
        self.port = port if port else (res[0].server_port if isinstance(res, tuple) else None)

    def set(self, name: str, value: float | None) -> None:
        """Set gauge ``name`` (a key of contract.TRAIN_GAUGES); None and NaN/Inf leave it unchanged."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return
        self.gauges[name].labels(**self.labels).set(float(value))

    def anomaly(self, kind: str) -> None:
        if kind not in contract.ANOMALY_KINDS:
            raise KeyError(f"{kind!r} is not an anomaly kind (thinktune.contract.ANOMALY_KINDS)")
        self.anomalies.labels(**self.labels, kind=kind).inc()

    def close(self) -> None:
        if isinstance(self.server, tuple):
            try:
                self.server[0].shutdown()
            except Exception:  # noqa: BLE001 - shutting down at exit; nothing left to report to
                pass
