"""Training progress for FineTuneJob status, from the rank-0 worker. Pluggable sources:

- `http`: GET http://<podIP>:<metricsPort>/metrics and read the trainer's gauges, one gauge per progress field
  (contract.PROGRESS_FROM_METRIC) and the anomaly counter (contract.ANOMALIES_TOTAL).
- `annotation`: JSON in the pod annotation contract.PROGRESS_ANNOTATION (kwok pods run no process, so cluster
  tests and the sandbox demo write progress there).
- `auto`: annotation when present, else http.
Parsing is pure and tested on its own.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from thinktune import contract

log = logging.getLogger(__name__)


def parse_metrics_text(text: str, rank: str | None = "0") -> dict[str, float]:
    """Prometheus text exposition -> {name: value} of the thinktune_train_* samples (rank 0 preferred)."""
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.name.startswith(contract.TRAIN_METRIC_PREFIX):
                continue
            r = s.labels.get("rank")
            if rank is not None and r is not None and r != rank:
                continue
            values[s.name] = float(s.value)
    return values


def anomalies_from_text(text: str, rank: str | None = "0") -> dict[str, int]:
    """The trainer's anomaly counter (contract.ANOMALIES_TOTAL, label `kind`) -> {kind: count}."""
    out: dict[str, int] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name != contract.ANOMALIES_TOTAL:
                continue
            r = s.labels.get("rank")
            if rank is not None and r is not None and r != rank:
                continue
            kind = s.labels.get("kind", "unknown")
            out[kind] = out.get(kind, 0) + int(s.value)
    return out


def new_anomalies(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[tuple[str, int]]:
    """(kind, count) for every anomaly kind whose count grew since the last status: one Event each."""
    old = old or {}
    return [(k, int(v)) for k, v in sorted((new or {}).items()) if int(v) > int(old.get(k, 0) or 0)]


def progress_from_values(values: dict[str, float]) -> dict[str, Any]:
    out = {
        field_name: values[metric]
        for field_name, metric in contract.PROGRESS_FROM_METRIC.items()
        if metric in values and values[metric] == values[metric]  # NaN: the trainer has no value yet
    }
    return normalise(out)


def normalise(p: dict[str, Any]) -> dict[str, Any]:
    out = dict(p)
    for k in ("step", "totalSteps"):
        if out.get(k) is not None:
            out[k] = int(out[k])
    step, total = out.get("step"), out.get("totalSteps")
    if step is not None and total:
        pct = round(100.0 * step / total, 1)
        out["percent"] = pct
        out["summary"] = f"{step}/{total} ({pct:g}%)"
    elif step is not None:
        out["summary"] = str(step)
    return out


def parse_annotation(pod: dict[str, Any]) -> dict[str, Any] | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(contract.PROGRESS_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    allowed = set(contract.PROGRESS_FROM_METRIC)
    out = normalise({k: v for k, v in data.items() if k in allowed and isinstance(v, int | float)})
    anomalies = data.get("anomalies")
    if isinstance(anomalies, dict):
        out["anomalies"] = {str(k): int(v) for k, v in anomalies.items() if isinstance(v, int | float)}
    return out


def fetch_http(pod: dict[str, Any], port: int, timeout: float = 1.5) -> dict[str, Any] | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=timeout) as r:  # noqa: S310
            text = r.read().decode("utf-8", "replace")
    except Exception as e:  # unreachable pod, kwok fake IP, trainer not up yet
        log.debug("progress scrape of %s failed: %s", ip, e)
        return None
    vals = parse_metrics_text(text)
    if not vals:
        return None
    out = progress_from_values(vals)
    anomalies = anomalies_from_text(text)
    if anomalies:
        out["anomalies"] = anomalies
    return out


ProgressSource = Callable[[dict[str, Any], int], dict[str, Any] | None]


def make_source(kind: str) -> ProgressSource:
    if kind == "none":
        return lambda pod, port: None
    if kind == "annotation":
        return lambda pod, port: parse_annotation(pod)
    if kind == "http":
        return fetch_http

    def auto(pod: dict[str, Any], port: int) -> dict[str, Any] | None:
        ann = parse_annotation(pod)
        if ann:
            return ann
        # only pods with a real container (a kubelet sets containerID; kwok's simulated pods have none) can
        # answer; skipping the others avoids a connect timeout per poll on the sandbox's fake pod IPs
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if not any(cs.get("containerID") for cs in statuses):
            return None
        return fetch_http(pod, port)

    return auto
