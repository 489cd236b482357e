"""DatasetBuild and ModelExport: one pod per spec version; results from its termination message (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from thinktune import contract
from thinktune.spec import Volume

from ..builders import datasetbuild as DB
from ..builders import modelexport as ME
from ..builders.common import spec_hash
from ..config import OperatorConfig
from ..gpu_health import classify_pod, node_health, terminated_state, termination_message
from .common import (
    Delete,
    Event,
    Plan,
    StatusBuilder,
    admit,
    is_terminating,
    pod_phase,
    unschedulable,
)

TERMINAL = ("Succeeded", "Failed")
MAX_INFRA_RETRIES = 3


def _try_index(base: str, name: str) -> int | None:
    if name == base:
        return 0
    if name.startswith(base + "-r") and name[len(base) + 2 :].isdigit():
        return int(name[len(base) + 2 :])
    return None


def _common(
    body: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    now: datetime,
    cfg: OperatorConfig,
    base: str,
    what: str,
    build: Any,
    result_type: type[contract.DatasetResult] | type[contract.ExportResult],
    on_success: Any,
) -> Plan:
    """`base` is the pod name for this spec version (it carries the spec hash); infrastructure retries get
    `-r1`, `-r2`, ...: the failed pods stay (for `kubectl logs`) and also are the retry counter, so nothing
    about retries has to live in status."""
    meta = body["metadata"]
    old_status = body.get("status") or {}
    sb = StatusBuilder(old_status, now, meta.get("generation"))
    s = sb.s
    p = Plan(status=s)
    tries: dict[int, dict[str, Any]] = {}
    for x in pods:
        k = _try_index(base, x["metadata"]["name"])
        if k is None:
            # a pod of an older spec version: stop it if it still runs
            if not is_terminating(x) and pod_phase(x) not in TERMINAL:
                p.deletes.append(Delete("Pod", x["metadata"]["name"]))
        else:
            tries[k] = x
    if s.get("phase") in TERMINAL:
        if old_status.get("observedGeneration") == meta.get("generation"):
            return p
        p.events.append(Event("Normal", "SpecChanged", f"spec changed: {what} runs again"))
        s["completionTime"] = None
        s["startTime"] = None
        s["conditions"] = [c for c in s.get("conditions") or [] if c.get("type") == "Created"]
        sb.phase("Pending", "spec changed")
    if sb.cond("Created", True, "Created", f"{what} accepted"):
        p.events.append(Event("Normal", "Created", f"{what} accepted"))
    if not s.get("phase"):
        sb.phase("Pending", "accepted")
    k = max(tries) if tries else 0
    pod = tries.get(k)
    if pod is None:
        res = build()
        if isinstance(res, Plan):  # waiting for a dependency
            res.status = {**s, **res.status}
            return res
        cm, newpod = res
        if k:
            newpod["metadata"]["name"] = f"{base}-r{k}"
        p.creates += [cm, newpod]
        if s.get("startTime") is None:
            s["startTime"] = sb.ts()
        sb.phase("Pending", f"{what} pod created")
        p.requeue(10)
        return p
    ph = pod_phase(pod)
    if ph == "Pending":
        why = unschedulable([pod])
        sb.phase("Pending", f"{what} pod pending" + (f": {why}" if why else ""))
        if why and sb.cond("Scheduled", False, "Unschedulable", why):
            p.events.append(Event("Warning", "Unschedulable", f"{what} pod cannot be scheduled: {why}"))
        p.requeue(10)
    elif ph == "Running":
        if sb.cond("Running", True, "PodRunning", f"{what} running"):
            p.events.append(Event("Normal", "Running", f"{what} pod running"))
        sb.phase("Running", f"{what} running")
    elif ph == "Succeeded":
        result = termination_message(pod)
        if isinstance(result, result_type):
            on_success(s, result)
        else:
            p.events.append(
                Event("Warning", "NoResult", f"{what} pod exited 0 without a {result_type.__name__} message")
            )
        s["completionTime"] = sb.ts()
        sb.cond_off("Running", "Completed")
        sb.cond("Succeeded", True, "Completed", f"{what} finished")
        sb.phase("Succeeded", f"{what} finished")
        p.events.append(Event("Normal", "Succeeded", f"{what} finished"))
    elif ph == "Failed":
        node = (pod.get("spec") or {}).get("nodeName")
        h = node_health(nodes[node], cfg.gpu_fault_taints, cfg.gpu_resource) if node in nodes else None
        v = classify_pod(pod, h)
        if v is not None and v.kind == "infrastructure" and k < MAX_INFRA_RETRIES:
            res = build()
            if not isinstance(res, Plan):
                cm, newpod = res
                newpod["metadata"]["name"] = f"{base}-r{k + 1}"
                p.creates += [cm, newpod]
            p.events.append(
                Event(
                    "Warning",
                    "InfrastructureFailure",
                    f"{what} pod failed on {node}: {v.reason} {v.message}; retrying ({k + 1}/"
                    f"{MAX_INFRA_RETRIES})",
                )
            )
            sb.phase("Pending", f"retrying after {v.reason}")
            p.requeue(1)
            return p
        msg = (v.message if v else "") or f"exit code {(terminated_state(pod) or {}).get('exitCode')}"
        s["completionTime"] = sb.ts()
        sb.cond_off("Running", "Failed")
        sb.cond("Failed", True, v.reason if v else "PodFailed", msg)
        sb.phase("Failed", msg)
        p.events.append(Event("Warning", "Failed", f"{what} failed: {msg}"))
    return p


def plan_datasetbuild(
    body: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    now: datetime,
    cfg: OperatorConfig,
) -> Plan:
    spec, refused = admit(body, now, cfg, DB.parse_spec)
    if refused is not None:
        return refused
    h = spec_hash(body)

    def build():
        cm, pod, _out = DB.children(body, cfg)
        return cm, pod

    def on_success(s: dict[str, Any], result: contract.DatasetResult) -> None:
        s["counts"] = result.counts.model_dump(mode="json", by_alias=True)
        s["outputPath"] = spec.output.path
        s["contentHash"] = h
        s["reportPath"] = result.report_path

    return _common(
        body,
        pods,
        nodes,
        now,
        cfg,
        DB.pod_name(body),
        "dataset build",
        build,
        contract.DatasetResult,
        on_success,
    )


def plan_modelexport(
    body: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    job: dict[str, Any] | None,
    now: datetime,
    cfg: OperatorConfig,
) -> Plan:
    spec, refused = admit(body, now, cfg, ME.parse_spec)
    if refused is not None:
        return refused

    def build():
        adapter, base = None, None
        if spec.fine_tune_job_ref is not None:
            ref = spec.fine_tune_job_ref.name
            jphase = ((job or {}).get("status") or {}).get("phase")
            if job is None or jphase != "Succeeded":
                sb = StatusBuilder(body.get("status"), now, body["metadata"].get("generation"))
                reason = (
                    "FineTuneJobNotFound"
                    if job is None
                    else ("FineTuneJobFailed" if jphase == "Failed" else "WaitingForFineTuneJob")
                )
                w = Plan(status={})
                shown = "absent" if job is None else (jphase or "Pending")
                if sb.cond("FineTuneJobReady", False, reason, f"FineTuneJob {ref} is {shown}"):
                    w.events.append(Event("Normal", reason, f"waiting for FineTuneJob {ref} ({shown})"))
                w.status = {
                    "conditions": sb.s.get("conditions"),
                    "phase": "Pending",
                    "message": f"waiting for FineTuneJob {ref}",
                }
                w.requeue(10)
                return w
            jspec = job.get("spec") or {}
            out = jspec.get("output") or {}
            adapter = Volume(path=out.get("path", ""), pvc=out.get("pvc"))
            base = jspec.get("model") or None
        return ME.children(body, cfg, adapter, base)[:2]

    def on_success(s: dict[str, Any], result: contract.ExportResult) -> None:
        s["artifacts"] = [
            a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in result.artifacts
        ]
        if result.report_path:
            s["reportPath"] = result.report_path

    return _common(
        body, pods, nodes, now, cfg, ME.pod_name(body), "export", build, contract.ExportResult, on_success
    )
