"""FineTuneJob state machine (pure).

Gang semantics: worker pods are named `<job>-a<attempt>-w<rank>`. status.attempt is the commit point: a
restart first bumps it in status (with counters and failedNodes), then the old gang is deleted and a new gang
with the new attempt number is created. Whatever the operator was doing when killed, the next reconcile sees
the same picture and converges: pods of older attempts are deleted, missing pods of the current attempt are
created (409 AlreadyExists is success), counters never double count because they move together with the attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from thinktune.spec import Volume

from .. import names as N
from ..builders import finetunejob as B
from ..builders.common import gpu_count
from ..conditions import parse_time
from ..config import OperatorConfig
from ..gpu_health import (
    NodeHealth,
    Verdict,
    classify_pod,
    node_health,
    parse_termination_message,
    terminated_state,
)
from .common import Delete, Event, Plan, StatusBuilder, is_scheduled, is_terminating, pod_phase

TERMINAL = ("Succeeded", "Failed")


def _pods_by_attempt(pods: list[dict[str, Any]]) -> dict[int, dict[int, dict[str, Any]]]:
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for p in pods:
        parsed = N.parse_worker_name(p["metadata"]["name"])
        if parsed is None:
            continue
        a, r = parsed
        out.setdefault(a, {})[r] = p
    return out


def _node_of(pod: dict[str, Any]) -> str | None:
    return (pod.get("spec") or {}).get("nodeName")


def _health(nodes: dict[str, dict[str, Any]], name: str | None, cfg: OperatorConfig) -> NodeHealth | None:
    if not name or name not in nodes:
        return None
    return node_health(nodes[name], cfg.gpu_fault_taints, cfg.gpu_resource)


def _selector_matches(node: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def eligible_nodes(
    nodes: dict[str, dict[str, Any]],
    avoid: set[str],
    gpus: int,
    selector: dict[str, str],
    cfg: OperatorConfig,
) -> list[str]:
    out = []
    for name, node in nodes.items():
        if name in avoid or not _selector_matches(node, selector):
            continue
        h = node_health(node, cfg.gpu_fault_taints, cfg.gpu_resource)
        if not h.healthy:
            continue
        if gpus and h.gpu_allocatable < gpus:
            continue
        out.append(name)
    return sorted(out)


def _cleanup(pods: list[dict[str, Any]], policy: str) -> list[Delete]:
    out = []
    for p in pods:
        if is_terminating(p):
            continue
        ph = pod_phase(p)
        if policy == "All" or (policy == "Running" and ph not in TERMINAL):
            out.append(Delete("Pod", p["metadata"]["name"]))
    return out


def _stop(
    pods: list[dict[str, Any]], nodes: dict[str, dict[str, Any]], cfg: OperatorConfig, now: datetime
) -> tuple[list[Delete], list[str]]:
    """Delete a gang. Returns (deletes, names still blocking a new gang)."""
    deletes, blocking = [], []
    for p in pods:
        name = p["metadata"]["name"]
        h = _health(nodes, _node_of(p), cfg)
        ph = pod_phase(p)
        dead_node = h is not None and any(r in ("NodeNotReady", "NodeUnknown") for r in h.reasons)
        if ph in TERMINAL or not is_scheduled(p):
            # holds no GPU and no rendezvous port: delete, do not wait for it
            if not is_terminating(p):
                deletes.append(Delete("Pod", name, force=not is_scheduled(p)))
            continue
        if dead_node:
            # no kubelet will ever confirm termination (trainer #2072): force delete, never wait
            deletes.append(Delete("Pod", name, force=True))
            continue
        if is_terminating(p):
            since = parse_time(p["metadata"].get("deletionTimestamp"))
            grace = (p["metadata"].get("deletionGracePeriodSeconds") or 0) + cfg.stop_grace_s
            if since is not None and (now - since).total_seconds() > grace:
                deletes.append(Delete("Pod", name, force=True))
        else:
            deletes.append(Delete("Pod", name))
        blocking.append(name)  # BlockingRecreate: old ranks must be gone before new ones rendezvous
    return deletes, blocking


def plan(
    body: dict[str, Any],
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    dataset: dict[str, Any] | None,
    now: datetime,
    cfg: OperatorConfig,
) -> Plan:
    meta = body["metadata"]
    name = meta["name"]
    sb = StatusBuilder(body.get("status"), now, meta.get("generation"))
    s = sb.s
    p = Plan(status=s)
    try:
        spec = B.parse_spec(body)
    except ValidationError as e:
        if sb.cond("Failed", True, "InvalidSpec", str(e)[:1000]):
            p.events.append(Event("Warning", "InvalidSpec", str(e)[:1000]))
        sb.phase("Failed", "invalid spec")
        return p
    rp = spec.run_policy
    attempt = int(s.get("attempt") or 0)
    s.setdefault("attempt", attempt)
    restarts = dict(s.get("restarts") or {})
    for k in ("application", "infrastructure", "oom"):
        restarts.setdefault(k, 0)
    s["restarts"] = restarts
    failed_nodes: list[dict[str, Any]] = list(s.get("failedNodes") or [])
    s["failedNodes"] = failed_nodes
    by_attempt = _pods_by_attempt(pods)
    current = by_attempt.get(attempt, {})
    old = [pod for a, rs in by_attempt.items() if a != attempt for pod in rs.values()]
    all_pods = [pod for rs in by_attempt.values() for pod in rs.values()]

    if sb.cond("Created", True, "JobCreated", f"FineTuneJob {name} accepted") and not s.get("phase"):
        p.events.append(
            Event(
                "Normal",
                "Created",
                f"accepted: {spec.num_nodes} worker(s), "
                f"{gpu_count(spec.resources_per_node, cfg.gpu_resource)} GPU(s) each",
            )
        )
    if not s.get("phase"):
        sb.phase("Pending", "accepted")

    # ---- finished: cleanPodPolicy, TTL
    if s.get("phase") in TERMINAL:
        p.deletes += _cleanup(all_pods, rp.clean_pod_policy)
        if rp.ttl_seconds_after_finished is not None:
            done = parse_time(s.get("completionTime")) or now
            left = rp.ttl_seconds_after_finished - (now - done).total_seconds()
            if left <= 0:
                p.delete_self = True
                p.events.append(
                    Event("Normal", "TTLExpired", "ttlSecondsAfterFinished passed: deleting the job")
                )
            else:
                p.requeue(left)
        return p

    # ---- suspend / resume
    if rp.suspend:
        deletes, _ = _stop(all_pods, nodes, cfg, now)
        p.deletes += deletes
        if sb.cond(
            "Suspended", True, "Suspended", "runPolicy.suspend is true: workers deleted, checkpoints kept"
        ):
            p.events.append(Event("Normal", "Suspended", "job suspended; workers deleted, output kept"))
        sb.cond_off("Running", "Suspended")
        sb.phase("Suspended", "suspended")
        return p
    if s.get("phase") == "Suspended" or sb.is_true("Suspended"):
        sb.cond("Suspended", False, "Resumed", "runPolicy.suspend set to false")
        attempt += 1
        s["attempt"] = attempt
        s["startTime"] = None  # activeDeadlineSeconds restarts on resume (as in Kubeflow Trainer)
        sb.phase("Pending", f"resumed as attempt {attempt}")
        p.events.append(Event("Normal", "Resumed", f"resuming as attempt {attempt} from the last checkpoint"))
        current, old = {}, all_pods

    # ---- deadline
    started = parse_time(s.get("startTime"))
    if rp.active_deadline_seconds and started is not None:
        left = rp.active_deadline_seconds - (now - started).total_seconds()
        if left <= 0:
            return _fail(
                p,
                sb,
                "DeadlineExceeded",
                f"activeDeadlineSeconds={rp.active_deadline_seconds} exceeded",
                all_pods,
                nodes,
                cfg,
                now,
            )
        p.requeue(left)

    # ---- dataset
    dataset_vol: Volume | None = spec.dataset
    if spec.dataset_ref is not None:
        ref = spec.dataset_ref.name
        if dataset is None:
            if sb.cond("DatasetReady", False, "DatasetNotFound", f"DatasetBuild {ref} not found"):
                p.events.append(
                    Event("Normal", "WaitingForDataset", f"waiting for DatasetBuild {ref} to exist")
                )
            sb.phase("Pending", f"waiting for DatasetBuild {ref}")
            p.requeue(10)
            return p
        dphase = (dataset.get("status") or {}).get("phase")
        if dphase != "Succeeded":
            reason = "DatasetFailed" if dphase == "Failed" else "WaitingForDataset"
            if sb.cond("DatasetReady", False, reason, f"DatasetBuild {ref} is {dphase or 'Pending'}"):
                p.events.append(
                    Event(
                        "Warning" if dphase == "Failed" else "Normal",
                        reason,
                        f"DatasetBuild {ref} is {dphase or 'Pending'}; the job waits for it",
                    )
                )
            sb.phase("Pending", f"waiting for DatasetBuild {ref} ({dphase or 'Pending'})")
            p.requeue(10)
            return p
        dspec = dataset.get("spec") or {}
        out = dspec.get("output") or {}
        dataset_vol = Volume(path=out.get("path", ""), pvc=out.get("pvc"))
        if sb.cond("DatasetReady", True, "DatasetSucceeded", f"DatasetBuild {ref} succeeded"):
            p.events.append(Event("Normal", "DatasetReady", f"DatasetBuild {ref} succeeded"))

    # ---- old gangs: stop them first (BlockingRecreate)
    deletes, blocking = _stop(old, nodes, cfg, now)
    p.deletes += deletes

    # ---- judge the current gang
    verdicts: list[tuple[int, Verdict]] = []
    for rank, pod in sorted(current.items()):
        if is_terminating(pod) and pod_phase(pod) not in TERMINAL:
            verdicts.append(
                (
                    rank,
                    Verdict(
                        "infrastructure", "PodDeleted", "worker deleted from outside", node=_node_of(pod)
                    ),
                )
            )
            continue
        v = classify_pod(pod, _health(nodes, _node_of(pod), cfg))
        if v is not None:
            verdicts.append((rank, v))
    created = [parse_time(pod["metadata"].get("creationTimestamp")) for pod in current.values()]
    created = [c for c in created if c is not None]
    if (
        current
        and len(current) < spec.num_nodes
        and created
        and not verdicts
        and (now - min(created)).total_seconds() > cfg.gang_lost_after_s
        and sb.is_true("Running")
    ):
        missing = sorted(set(range(spec.num_nodes)) - set(current))
        verdicts.append(
            (missing[0], Verdict("infrastructure", "PodLost", f"worker(s) {missing} disappeared"))
        )

    infra = next(((r, v) for r, v in verdicts if v.kind == "infrastructure"), None)
    app = next(((r, v) for r, v in verdicts if v.kind == "application"), None)
    if infra is not None or app is not None:
        rank, v = infra if infra is not None else app  # type: ignore[misc]
        return _restart(
            p, sb, spec, name, attempt, rank, v, list(current.values()), nodes, cfg, now, all_pods
        )

    # ---- success
    if (
        current
        and len(current) == spec.num_nodes
        and all(pod_phase(x) == "Succeeded" for x in current.values())
    ):
        s["completionTime"] = sb.ts()
        rank0 = current.get(0) or next(iter(current.values()))
        info = parse_termination_message((terminated_state(rank0) or {}).get("message"))
        if info.get("adapterPath") or info.get("adapter_path"):
            s["adapterPath"] = info.get("adapterPath") or info.get("adapter_path")
        metrics = info.get("metrics")
        if isinstance(metrics, dict):
            s["metrics"] = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if isinstance(info.get("oomRetries"), int):
            restarts["oom"] = info["oomRetries"]
        if isinstance(info.get("plan"), dict):
            s["plan"] = info["plan"]
        prog = dict(s.get("progress") or {})
        if prog.get("totalSteps"):
            prog.update(
                step=prog["totalSteps"],
                percent=100.0,
                etaSeconds=0,
                summary=f"{prog['totalSteps']}/{prog['totalSteps']} (100%)",
            )
            s["progress"] = prog
        sb.cond("Succeeded", True, "AllWorkersSucceeded", "training finished")
        sb.cond_off("Running", "Succeeded", "training finished")
        sb.cond_off("Restarting", "Succeeded")
        sb.phase("Succeeded", "training finished")
        p.events.append(
            Event("Normal", "Succeeded", f"all {spec.num_nodes} worker(s) succeeded (attempt {attempt})")
        )
        p.deletes += _cleanup(all_pods, rp.clean_pod_policy)
        if rp.ttl_seconds_after_finished is not None:
            p.requeue(rp.ttl_seconds_after_finished)
        return p

    avoid = sorted({f["node"] for f in failed_nodes if f.get("node")})
    gpus = gpu_count(spec.resources_per_node, cfg.gpu_resource)

    # ---- (re)create the gang
    if len(current) < spec.num_nodes:
        if blocking:
            sb.phase(
                "Restarting" if attempt else "Pending",
                f"waiting for {len(blocking)} worker(s) of the previous attempt to terminate",
            )
            p.requeue(1)
            return p
        if not current and nodes:
            ok = eligible_nodes(nodes, set(avoid), gpus, spec.pod.node_selector, cfg)
            if len(ok) < spec.num_nodes:
                msg = (
                    f"needs {spec.num_nodes} healthy node(s) with {gpus} allocatable GPU(s); {len(ok)} available"
                    + (f"; avoiding failed node(s) {', '.join(avoid)}" if avoid else "")
                )
                if sb.cond("Waiting", True, "NoHealthyCapacity", msg):
                    p.events.append(
                        Event("Warning", "NoHealthyCapacity", msg + "; waiting instead of failing")
                    )
                sb.phase("Waiting", msg)
                p.requeue(10)
                return p
        if sb.cond_off("Waiting", "CapacityAvailable", "healthy capacity available"):
            p.events.append(Event("Normal", "CapacityAvailable", "healthy capacity available again"))
        resolved = B.resolved_job(body, spec, cfg, dataset_vol)
        p.creates.append(B.job_configmap(body, resolved))
        p.creates.append(B.rdzv_service(body))
        pg = B.pod_group(body, spec, attempt)
        if pg is not None:
            p.creates.append(pg)
        for pod in B.worker_pods(body, spec, cfg, attempt, avoid, dataset_vol):
            rank = int(pod["metadata"]["labels"][N.L_RANK])
            if rank not in current:
                p.creates.append(pod)
        if not current:
            resume = " resuming from the last checkpoint" if attempt else ""
            p.events.append(
                Event(
                    "Normal",
                    "GangCreated",
                    f"created {spec.num_nodes} worker(s) for attempt {attempt}{resume}"
                    + (f" avoiding {', '.join(avoid)}" if avoid else ""),
                )
            )
            p.observations.append(("gang_created", attempt))
        if s.get("startTime") is None:
            s["startTime"] = sb.ts()
        if s.get("phase") not in ("Restarting",):
            sb.phase("Pending", f"attempt {attempt}: {spec.num_nodes} worker(s) created")
        p.requeue(5)
        return p

    # ---- gang exists: running / scheduling
    running = [x for x in current.values() if pod_phase(x) == "Running"]
    scheduled = [x for x in current.values() if is_scheduled(x)]
    if len(scheduled) == spec.num_nodes:
        p.observations.append(("gang_scheduled", attempt, _schedule_seconds(list(current.values()))))
    if (
        len(running) + sum(1 for x in current.values() if pod_phase(x) == "Succeeded") == spec.num_nodes
        and running
    ):
        if sb.cond(
            "Running", True, "AllWorkersRunning", f"attempt {attempt}: {spec.num_nodes} worker(s) running"
        ):
            p.events.append(
                Event(
                    "Normal",
                    "Running",
                    f"attempt {attempt}: all {spec.num_nodes} worker(s) running"
                    + (" (resumed from checkpoint)" if attempt else ""),
                )
            )
        if sb.cond_off("Restarting", "Recovered", f"attempt {attempt} running"):
            pass
        sb.phase("Running", f"attempt {attempt} running")
        rank0 = current.get(0)
        if rank0 is not None and pod_phase(rank0) == "Running":
            p.progress_pod = rank0
            p.progress_port = spec.monitoring.metrics_port
    else:
        unsched = [x["metadata"]["name"] for x in current.values() if not is_scheduled(x)]
        msg = f"attempt {attempt}: {len(scheduled)}/{spec.num_nodes} worker(s) scheduled, {len(running)} running"
        if s.get("phase") not in ("Restarting",):
            sb.phase("Pending", msg)
        else:
            s["message"] = msg
        if unsched:
            p.requeue(10)
    return p


def _schedule_seconds(pods: list[dict[str, Any]]) -> float | None:
    created = [parse_time(x["metadata"].get("creationTimestamp")) for x in pods]
    sched = []
    for x in pods:
        for c in (x.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "True":
                sched.append(parse_time(c.get("lastTransitionTime")))
    created = [c for c in created if c]
    sched = [c for c in sched if c]
    if not created or len(sched) < len(pods):
        return None
    return max(0.0, (max(sched) - min(created)).total_seconds())


def _fail(
    p: Plan,
    sb: StatusBuilder,
    reason: str,
    message: str,
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    cfg: OperatorConfig,
    now: datetime,
) -> Plan:
    deletes, _ = _stop([x for x in pods if pod_phase(x) not in TERMINAL], nodes, cfg, now)
    p.deletes += deletes
    sb.cond("Failed", True, reason, message)
    sb.cond_off("Running", reason)
    sb.cond_off("Restarting", reason)
    sb.s["completionTime"] = sb.ts()
    sb.phase("Failed", message)
    p.events.append(Event("Warning", reason, message))
    return p


def _restart(
    p: Plan,
    sb: StatusBuilder,
    spec: Any,
    name: str,
    attempt: int,
    rank: int,
    v: Verdict,
    gang: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    cfg: OperatorConfig,
    now: datetime,
    all_pods: list[dict[str, Any]],
) -> Plan:
    s = sb.s
    rp = spec.run_policy
    restarts = s["restarts"]
    where = f" on node {v.node}" if v.node else ""
    gpu = f" (GPU {v.gpu})" if v.gpu else ""
    if v.kind == "infrastructure":
        restarts["infrastructure"] += 1
        p.observations.append(("gpu_failure", v.node or "", v.reason))
        p.observations.append(("restart", "infrastructure", v.reason))
        if v.node:
            rec = {"node": v.node, "gpu": v.gpu, "reason": v.reason, "time": sb.ts()}
            s["failedNodes"] = [f for f in s["failedNodes"] if f.get("node") != v.node] + [rec]
        if restarts["infrastructure"] > rp.infra_failure_limit:
            return _fail(
                p,
                sb,
                "InfraFailureLimitExceeded",
                f"worker {rank}{where}{gpu}: {v.reason} {v.message}; infrastructure failures "
                f"{restarts['infrastructure']} > infraFailureLimit {rp.infra_failure_limit}",
                all_pods,
                nodes,
                cfg,
                now,
            )
        budget = f"infrastructure failure {restarts['infrastructure']}/{rp.infra_failure_limit}"
    else:
        restarts["application"] += 1
        p.observations.append(("restart", "application", v.reason))
        if restarts["application"] > rp.backoff_limit:
            return _fail(
                p,
                sb,
                "BackoffLimitExceeded",
                f"worker {rank}{where}: {v.reason} {v.message}; application failures "
                f"{restarts['application']} > backoffLimit {rp.backoff_limit}",
                all_pods,
                nodes,
                cfg,
                now,
            )
        budget = f"application failure {restarts['application']}/{rp.backoff_limit}"
    new_attempt = attempt + 1
    s["attempt"] = new_attempt
    avoid = sorted({f["node"] for f in s["failedNodes"] if f.get("node")})
    detail = f"{v.reason}" + (f" ({v.message})" if v.message else "")
    msg = (
        f"worker {rank}{where}{gpu}: {detail}; {budget}; stopping the gang "
        f"and restarting as attempt {new_attempt} from the last checkpoint"
        + (f", avoiding {', '.join(avoid)}" if v.kind == "infrastructure" and avoid else "")
    )
    sb.cond("Restarting", True, v.reason if v.kind == "infrastructure" else "ApplicationFailure", msg)
    sb.cond_off("Running", "Restarting", msg)
    sb.phase("Restarting", msg)
    p.events.append(Event("Warning", "GPUFailure" if v.kind == "infrastructure" else "WorkerFailed", msg))
    deletes, _ = _stop(gang, nodes, cfg, now)
    p.deletes += deletes
    p.requeue(0.2)
    return p
