"""FineTuneJob state machine (pure), as ordered phases.

Gang semantics: worker pods are named `<job>-a<attempt>-w<rank>`. status.attempt is the commit point: a
restart first bumps it in status (with counters and failedNodes), then the old gang is deleted and a new gang
with the new attempt number is created. Whatever the operator was doing when killed, the next reconcile sees
the same picture and converges: pods of older attempts are deleted, missing pods of the current attempt are
created (409 AlreadyExists is success), counters never double count because they move together with the attempt.

`plan` runs the phases of PHASES in order; each reads and extends one `Job` (the CR, its pods, the Plan being
built) and returns True when the Plan is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from thinktune import contract
from thinktune.spec import FineTuneJobSpec, Volume

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
    terminated_state,
    termination_message,
)
from .common import (
    Delete,
    Event,
    GangRunning,
    GangScheduled,
    GpuFailure,
    Plan,
    Restart,
    StatusBuilder,
    admit,
    is_scheduled,
    is_terminating,
    pod_phase,
    unschedulable,
)

TERMINAL = ("Succeeded", "Failed")
# infrastructure verdicts that say nothing about the node: the worker was taken away (eviction, preemption,
# deletion), its node did not break it. Recorded in failedNodes (and charged to the infra budget), not avoided.
NODE_NEUTRAL = ("DisruptionTarget", "PodDeleted", "PodLost")


def _avoided(failed_nodes: list[dict[str, Any]]) -> list[str]:
    """Nodes new gangs keep off: every recorded failure's node but those the failure did not implicate."""
    return sorted({f["node"] for f in failed_nodes if f.get("node") and f.get("avoided") is not False})


@dataclass
class Job:
    """One reconcile's view of a FineTuneJob: inputs, the status being built, and what earlier phases found."""

    body: dict[str, Any]
    spec: FineTuneJobSpec
    nodes: dict[str, dict[str, Any]]
    dataset: dict[str, Any] | None  # the referenced DatasetBuild CR
    now: datetime
    cfg: OperatorConfig
    sb: StatusBuilder
    p: Plan
    attempt: int
    current: dict[int, dict[str, Any]]  # rank -> pod of the current attempt
    old: list[dict[str, Any]]  # pods of earlier attempts
    all_pods: list[dict[str, Any]]
    # attempt -> rank -> final state of a deleted worker (by attempt: a resume moves to the next one mid-plan)
    gone: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    dataset_vol: Volume | None = None
    blocking: list[str] = field(default_factory=list)  # old pods a new gang must wait for

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def s(self) -> dict[str, Any]:
        return self.sb.s

    def event(self, type_: str, reason: str, message: str) -> None:
        self.p.events.append(Event(type_, reason, message))


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


def unhealthy_nodes(
    nodes: dict[str, dict[str, Any]], selector: dict[str, str], cfg: OperatorConfig
) -> list[str]:
    """Nodes matching the job's nodeSelector that look broken now (NotReady, cordoned, tainted, GPUs missing)."""
    return sorted(
        name
        for name, node in nodes.items()
        if _selector_matches(node, selector)
        and not node_health(node, cfg.gpu_fault_taints, cfg.gpu_resource).healthy
    )


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
    gone: Sequence[dict[str, Any]] = (),
) -> Plan:
    """`gone`: the last seen states of this job's pods that no longer exist (handlers/runtime.py keeps them),
    so a worker deleted before any reconcile saw it terminating is still judged by its node and conditions."""
    spec, refused = admit(body, now, cfg, B.parse_spec)
    if refused is not None:
        return refused
    j = _observe(body, spec, pods, nodes, dataset, now, cfg)
    j.gone = _pods_by_attempt(list(gone))
    for phase in PHASES:
        if phase(j):
            break
    return j.p


def _observe(
    body: dict[str, Any],
    spec: FineTuneJobSpec,
    pods: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    dataset: dict[str, Any] | None,
    now: datetime,
    cfg: OperatorConfig,
) -> Job:
    """Status defaults (attempt, restart counters, failedNodes) and the pods grouped by attempt."""
    sb = StatusBuilder(body.get("status"), now, body["metadata"].get("generation"))
    s = sb.s
    attempt = int(s.get("attempt") or 0)
    s["attempt"] = attempt
    s["restarts"] = {"application": 0, "infrastructure": 0, "oom": 0, **(s.get("restarts") or {})}
    s["failedNodes"] = list(s.get("failedNodes") or [])
    by_attempt = _pods_by_attempt(pods)
    return Job(
        body=body,
        spec=spec,
        nodes=nodes,
        dataset=dataset,
        now=now,
        cfg=cfg,
        sb=sb,
        p=Plan(status=s),
        attempt=attempt,
        current=by_attempt.get(attempt, {}),
        old=[pod for a, rs in by_attempt.items() if a != attempt for pod in rs.values()],
        all_pods=[pod for rs in by_attempt.values() for pod in rs.values()],
        dataset_vol=spec.dataset,
    )


def _accept(j: Job) -> bool:
    spec = j.spec
    if j.sb.cond("Created", True, "JobCreated", f"FineTuneJob {j.name} accepted") and not j.s.get("phase"):
        gpus = gpu_count(spec.resources_per_node, j.cfg.gpu_resource)
        j.event("Normal", "Created", f"accepted: {spec.num_nodes} worker(s), {gpus} GPU(s) each")
    if not j.s.get("phase"):
        j.sb.phase("Pending", "accepted")
    return False


def _finished(j: Job) -> bool:
    """A finished job only applies cleanPodPolicy and its TTL."""
    if j.s.get("phase") not in TERMINAL:
        return False
    rp = j.spec.run_policy
    j.p.deletes += _cleanup(j.all_pods, rp.clean_pod_policy)
    if rp.ttl_seconds_after_finished is not None:
        done = parse_time(j.s.get("completionTime")) or j.now
        left = rp.ttl_seconds_after_finished - (j.now - done).total_seconds()
        if left <= 0:
            j.p.delete_self = True
            j.event("Normal", "TTLExpired", "ttlSecondsAfterFinished passed: deleting the job")
        else:
            j.p.requeue(left)
    return True


def _suspend(j: Job) -> bool:
    if not j.spec.run_policy.suspend:
        return False
    deletes, _ = _stop(j.all_pods, j.nodes, j.cfg, j.now)
    j.p.deletes += deletes
    if j.sb.cond(
        "Suspended", True, "Suspended", "runPolicy.suspend is true: workers deleted, checkpoints kept"
    ):
        j.event("Normal", "Suspended", "job suspended; workers deleted, output kept")
    j.sb.cond_off("Running", "Suspended")
    j.sb.phase("Suspended", "suspended")
    return True


def _resume(j: Job) -> bool:
    """Resuming is a new attempt: the suspended gang's pods are all old now."""
    if j.s.get("phase") != "Suspended" and not j.sb.is_true("Suspended"):
        return False
    j.sb.cond("Suspended", False, "Resumed", "runPolicy.suspend set to false")
    j.attempt += 1
    j.s["attempt"] = j.attempt
    j.s["startTime"] = None  # activeDeadlineSeconds restarts on resume (as in Kubeflow Trainer)
    j.sb.phase("Pending", f"resumed as attempt {j.attempt}")
    j.event("Normal", "Resumed", f"resuming as attempt {j.attempt} from the last checkpoint")
    j.current, j.old = {}, j.all_pods
    return False


def _deadline(j: Job) -> bool:
    limit = j.spec.run_policy.active_deadline_seconds
    started = parse_time(j.s.get("startTime"))
    if not limit or started is None:
        return False
    left = limit - (j.now - started).total_seconds()
    if left <= 0:
        _fail(j, "DeadlineExceeded", f"activeDeadlineSeconds={limit} exceeded")
        return True
    j.p.requeue(left)
    return False


def _dataset(j: Job) -> bool:
    """With datasetRef the job waits for the DatasetBuild to succeed and trains on its output."""
    if j.spec.dataset_ref is None:
        return False
    ref = j.spec.dataset_ref.name
    if j.dataset is None:
        if j.sb.cond("DatasetReady", False, "DatasetNotFound", f"DatasetBuild {ref} not found"):
            j.event("Normal", "WaitingForDataset", f"waiting for DatasetBuild {ref} to exist")
        j.sb.phase("Pending", f"waiting for DatasetBuild {ref}")
        j.p.requeue(10)
        return True
    dphase = (j.dataset.get("status") or {}).get("phase")
    if dphase != "Succeeded":
        shown = dphase or "Pending"
        reason = "DatasetFailed" if dphase == "Failed" else "WaitingForDataset"
        if j.sb.cond("DatasetReady", False, reason, f"DatasetBuild {ref} is {shown}"):
            level = "Warning" if dphase == "Failed" else "Normal"
            j.event(level, reason, f"DatasetBuild {ref} is {shown}; the job waits for it")
        j.sb.phase("Pending", f"waiting for DatasetBuild {ref} ({shown})")
        j.p.requeue(10)
        return True
    out = (j.dataset.get("spec") or {}).get("output") or {}
    j.dataset_vol = Volume(path=out.get("path", ""), pvc=out.get("pvc"))
    if j.sb.cond("DatasetReady", True, "DatasetSucceeded", f"DatasetBuild {ref} succeeded"):
        j.event("Normal", "DatasetReady", f"DatasetBuild {ref} succeeded")
    return False


def _stop_old_gangs(j: Job) -> bool:
    """BlockingRecreate: old attempts are deleted first; a new gang waits for `blocking`."""
    deletes, j.blocking = _stop(j.old, j.nodes, j.cfg, j.now)
    j.p.deletes += deletes
    return False


def _judge(j: Job) -> bool:
    """Any failed, deleted or lost worker restarts the whole gang; an infrastructure verdict wins."""
    verdicts = _verdicts(j)
    infra = next(((r, v) for r, v in verdicts if v.kind == "infrastructure"), None)
    app = next(((r, v) for r, v in verdicts if v.kind == "application"), None)
    chosen = infra or app
    if chosen is None:
        return False
    if infra is None and _peers_settling(j, verdicts):
        j.p.requeue(1)
        return True
    _restart(j, *chosen)
    return True


def _peers_settling(j: Job, verdicts: list[tuple[int, Verdict]]) -> bool:
    """One rank's failure takes its peers down with it (their collective loses a member), and a peer may report
    first, with an application error, before the rank that caused it (say its GPU failed: exit 75). While a
    worker of the gang still runs and the first failure ended less than `peer_settle_s` ago, wait for the
    other workers' own verdicts, so that the cause, not the collateral, is judged and its node avoided."""
    if j.cfg.peer_settle_s <= 0:
        return False
    failed = {r for r, _ in verdicts}
    if not any(pod_phase(p) not in TERMINAL for r, p in j.current.items() if r not in failed):
        return False
    ended = [
        parse_time((terminated_state(j.current[r]) or {}).get("finishedAt")) for r in failed if r in j.current
    ]
    ended = [t for t in ended if t is not None]
    return bool(ended) and (j.now - min(ended)).total_seconds() < j.cfg.peer_settle_s


def _verdicts(j: Job) -> list[tuple[int, Verdict]]:
    out: list[tuple[int, Verdict]] = []
    for rank, pod in sorted(j.current.items()):
        if is_terminating(pod) and pod_phase(pod) not in TERMINAL:
            out.append((rank, _deleted(j, pod)))
            continue
        v = classify_pod(pod, _health(j.nodes, _node_of(pod), j.cfg))
        if v is not None:
            out.append((rank, v))
    n = j.spec.num_nodes
    missing = sorted(set(range(n)) - set(j.current))
    if missing and not out:
        # A missing rank that was seen (its final state is kept) was deleted from outside: the operator deletes
        # pods of the current attempt only after moving to the next one. That holds before the gang was ever
        # Running too (an eviction right after the pods start). Recreating it under the same attempt would hide
        # a lost worker from the counters and the Events.
        gone = j.gone.get(j.attempt, {})
        seen = [r for r in missing if r in gone]
        if seen:  # its final state says where it ran and why it went
            out.append((seen[0], _deleted(j, gone[seen[0]])))
        elif j.sb.is_true("Running"):
            # every rank of this attempt was seen running, so a missing one never is still being created: it
            # was deleted while the operator was down and is gone without a trace
            out.append((missing[0], Verdict("infrastructure", "PodLost", f"worker(s) {missing} disappeared")))
    return out


def _deleted(j: Job, pod: dict[str, Any]) -> Verdict:
    """A deleted worker: what its last state says (an eviction's DisruptionTarget, a GPU failure, a node gone
    bad, a failure of its own before it was deleted), else a deletion from outside, which is infrastructure:
    the training itself did not fail."""
    v = classify_pod(pod, _health(j.nodes, _node_of(pod), j.cfg))
    if v is not None:
        return v
    return Verdict("infrastructure", "PodDeleted", "worker deleted from outside", _node_of(pod))


def _succeeded(j: Job) -> bool:
    """All workers exited 0: rank 0's TrainResult fills the status."""
    n = j.spec.num_nodes
    if not (
        j.current and len(j.current) == n and all(pod_phase(x) == "Succeeded" for x in j.current.values())
    ):
        return False
    s = j.s
    s["completionTime"] = j.sb.ts()
    rank0 = j.current.get(0) or next(iter(j.current.values()))
    result = termination_message(rank0)
    if isinstance(result, contract.TrainResult):
        _record_result(s, result)
    else:
        j.event("Warning", "NoResult", "rank 0 exited 0 without a TrainResult termination message")
    prog = dict(s.get("progress") or {})
    if prog.get("totalSteps"):
        total = prog["totalSteps"]
        prog.update(step=total, percent=100.0, etaSeconds=0, summary=f"{total}/{total} (100%)")
        s["progress"] = prog
    j.sb.cond("Succeeded", True, "AllWorkersSucceeded", "training finished")
    j.sb.cond_off("Running", "Succeeded", "training finished")
    j.sb.cond_off("Restarting", "Succeeded")
    j.sb.phase("Succeeded", "training finished")
    j.event("Normal", "Succeeded", f"all {n} worker(s) succeeded (attempt {j.attempt})")
    rp = j.spec.run_policy
    j.p.deletes += _cleanup(j.all_pods, rp.clean_pod_policy)
    if rp.ttl_seconds_after_finished is not None:
        j.p.requeue(rp.ttl_seconds_after_finished)
    return True


def _record_result(s: dict[str, Any], result: contract.TrainResult) -> None:
    if result.adapter_path:
        s["adapterPath"] = result.adapter_path
    if result.metrics:
        s["metrics"] = dict(result.metrics)
    s["restarts"]["oom"] = result.oom_retries
    if result.plan is not None:
        s["plan"] = result.plan.model_dump(mode="json", by_alias=True, exclude_none=True)
    if result.report_path:
        s["reportPath"] = result.report_path


def _create_gang(j: Job) -> bool:
    """Create whatever of the current gang is missing, once old ranks are gone and healthy nodes suffice."""
    spec, s = j.spec, j.s
    if len(j.current) >= spec.num_nodes:
        return False
    if j.blocking:
        j.sb.phase(
            "Restarting" if j.attempt else "Pending",
            f"waiting for {len(j.blocking)} worker(s) of the previous attempt to terminate",
        )
        j.p.requeue(1)
        return True
    if not j.current:
        _forgive_nodes(j)
    avoid = _avoided(s["failedNodes"])
    if not j.current and j.nodes and _wait_for_capacity(j, avoid):
        return True
    if j.sb.cond_off("Waiting", "CapacityAvailable", "healthy capacity available"):
        j.event("Normal", "CapacityAvailable", "healthy capacity available again")
    if j.attempt > 0 and not j.current:  # the previous attempt's spec snapshot is not needed any more
        j.p.deletes.append(Delete("ConfigMap", N.job_configmap_name(j.name, j.attempt - 1)))
    j.p.creates.append(B.job_configmap(j.body, B.resolved_job(j.body, spec, j.cfg, j.dataset_vol), j.attempt))
    j.p.creates.append(B.rdzv_service(j.body))
    pg = B.pod_group(j.body, spec, j.attempt)
    if pg is not None:
        j.p.creates.append(pg)
    # nodes the operator already knows are bad (e.g. GPUs missing, NotReady before the taint is set) are kept
    # out of the new pods' affinity as well: the scheduler alone would still place a worker there
    exclude = sorted(set(avoid) | set(unhealthy_nodes(j.nodes, spec.pod.node_selector, j.cfg)))
    for pod in B.worker_pods(j.body, spec, j.cfg, j.attempt, exclude, j.dataset_vol):
        if int(pod["metadata"]["labels"][N.L_RANK]) not in j.current:
            j.p.creates.append(pod)
    if not j.current:
        resume = " resuming from the last checkpoint" if j.attempt else ""
        avoiding = f" avoiding {', '.join(avoid)}" if avoid else ""
        j.event(
            "Normal",
            "GangCreated",
            f"created {spec.num_nodes} worker(s) for attempt {j.attempt}{resume}{avoiding}",
        )
    if s.get("startTime") is None:
        s["startTime"] = j.sb.ts()
    if s.get("phase") != "Restarting":
        j.sb.phase("Pending", f"attempt {j.attempt}: {spec.num_nodes} worker(s) created")
    j.p.requeue(5)
    return True


def forgiven(
    rec: dict[str, Any], nodes: dict[str, dict[str, Any]], now: datetime, cfg: OperatorConfig
) -> bool:
    """A failed node is usable again when its failure record is older than cfg.failed_node_ttl_s, or when the
    failure was the node's own (NotReady, cordon, taint, missing GPUs) and the node is now Ready, schedulable,
    untainted and back at full GPU allocatable. A GPU failure the node never showed (exit code 75 on a node that
    looks fine) waits for the TTL: the node gives no signal that it was repaired."""
    since = parse_time(rec.get("time"))
    if since is not None and (now - since).total_seconds() >= cfg.failed_node_ttl_s:
        return True
    h = _health(nodes, rec.get("node"), cfg)
    return (
        bool(rec.get("nodeUnhealthy")) and h is not None and h.healthy and h.gpu_allocatable >= h.gpu_capacity
    )


def _forgive_nodes(j: Job) -> None:
    keep = []
    for rec in j.s["failedNodes"]:
        if forgiven(rec, j.nodes, j.now, j.cfg):
            j.event(
                "Normal",
                "NodeUsable",
                f"node {rec.get('node')} is usable again (failed: {rec.get('reason')})",
            )
        else:
            keep.append(rec)
    j.s["failedNodes"] = keep
    expiring = [parse_time(r.get("time")) for r in keep]
    if expiring := [t for t in expiring if t is not None]:
        j.p.requeue(max(1.0, j.cfg.failed_node_ttl_s - (j.now - min(expiring)).total_seconds()))


def _wait_for_capacity(j: Job, avoid: list[str]) -> bool:
    """Too few healthy nodes (failed ones excluded) is a wait, not a failure: capacity may come back."""
    n = j.spec.num_nodes
    gpus = gpu_count(j.spec.resources_per_node, j.cfg.gpu_resource)
    ok = eligible_nodes(j.nodes, set(avoid), gpus, j.spec.pod.node_selector, j.cfg)
    if len(ok) >= n:
        return False
    msg = f"needs {n} healthy node(s) with {gpus} allocatable GPU(s); {len(ok)} available" + (
        f"; avoiding failed node(s) {', '.join(avoid)}" if avoid else ""
    )
    if j.sb.cond("Waiting", True, "NoHealthyCapacity", msg):
        j.event("Warning", "NoHealthyCapacity", msg + "; waiting instead of failing")
    j.sb.phase("Waiting", msg)
    j.p.requeue(10)
    return True


def _track_gang(j: Job) -> bool:
    """The gang exists: Running once every worker runs (or is done), else how far scheduling got."""
    n, a, pods = j.spec.num_nodes, j.attempt, list(j.current.values())
    running = [x for x in pods if pod_phase(x) == "Running"]
    scheduled = [x for x in pods if is_scheduled(x)]
    if len(scheduled) == n:
        j.p.observations.append(GangScheduled(a, _schedule_seconds(pods)))
    done = sum(1 for x in pods if pod_phase(x) == "Succeeded")
    if running and len(running) + done == n:
        if j.sb.cond("Running", True, "AllWorkersRunning", f"attempt {a}: {n} worker(s) running"):
            j.p.observations.append(GangRunning(a))
            resumed = " (resumed from checkpoint)" if a else ""
            j.event("Normal", "Running", f"attempt {a}: all {n} worker(s) running{resumed}")
        j.sb.cond_off("Restarting", "Recovered", f"attempt {a} running")
        j.sb.phase("Running", f"attempt {a} running")
        rank0 = j.current.get(0)
        if rank0 is not None and pod_phase(rank0) == "Running":
            j.p.progress_pod = rank0
            j.p.progress_port = j.spec.monitoring.metrics_port
        return True
    msg = f"attempt {a}: {len(scheduled)}/{n} worker(s) scheduled, {len(running)} running"
    why = unschedulable(pods)
    if why is not None:
        msg += f"; {why}"
        if j.sb.cond("Scheduled", False, "Unschedulable", why):
            j.event("Warning", "Unschedulable", f"attempt {a}: {why}")
        if _gang_timed_out(j, pods, why) or _exclusions_stale(j, pods):
            return True
    elif len(scheduled) == n and any(c.get("type") == "Scheduled" for c in j.s.get("conditions") or []):
        j.sb.cond("Scheduled", True, "AllScheduled", f"attempt {a}: {n} worker(s) scheduled")
    if j.s.get("phase") != "Restarting":
        j.sb.phase("Pending", msg)
    else:
        j.s["message"] = msg
    if len(scheduled) < len(pods):
        j.p.requeue(10)
    return True


def _gang_timed_out(j: Job, pods: list[dict[str, Any]], why: str) -> bool:
    """A gang not fully scheduled within schedulingPolicy.scheduleTimeoutSeconds releases what it holds (the
    scheduled workers keep GPUs the rest can never join) and waits; the next attempt tries again. Not a
    failure: no budget is charged."""
    timeout = j.spec.run_policy.scheduling_policy.schedule_timeout_seconds
    created = [c for c in (parse_time(x["metadata"].get("creationTimestamp")) for x in pods) if c]
    if not created:
        return False
    left = timeout - (j.now - min(created)).total_seconds()
    if left > 0:
        j.p.requeue(left)
        return False
    _release_gang(j, pods)
    msg = f"gang not fully scheduled within {timeout}s: released its workers ({why}); retrying as attempt {j.attempt}"
    j.sb.cond("Waiting", True, "GangScheduleTimeout", msg)
    j.sb.phase("Waiting", msg)
    j.event("Warning", "GangScheduleTimeout", msg)
    j.p.requeue(min(30.0, float(timeout)))
    return True


def _exclusions_stale(j: Job, pods: list[dict[str, Any]]) -> bool:
    """An unschedulable worker's affinity is fixed at creation: it keeps off the nodes avoided then. When one of
    them is usable again (its failure forgiven, the node repaired) the gang would otherwise sit until
    scheduleTimeoutSeconds although a node for it exists. Release it at once and let the next attempt place
    it with the current exclusions. Not a failure: no budget is charged."""
    excluded: set[str] = set()
    for p in pods:
        if not is_scheduled(p) and not is_terminating(p):
            listed = (p["metadata"].get("annotations") or {}).get(N.A_AVOIDED_NODES) or ""
            excluded |= {n for n in listed.split(",") if n}
    if not excluded:
        return False
    still = set(_avoided([f for f in j.s["failedNodes"] if not forgiven(f, j.nodes, j.now, j.cfg)]))
    gpus = gpu_count(j.spec.resources_per_node, j.cfg.gpu_resource)
    usable = sorted(excluded & set(eligible_nodes(j.nodes, still, gpus, j.spec.pod.node_selector, j.cfg)))
    if not usable:
        return False
    _release_gang(j, pods)
    msg = (
        f"gang not fully scheduled while node(s) {', '.join(usable)} its workers keep off are usable again: "
        f"released its workers; retrying as attempt {j.attempt} without them excluded"
    )
    if j.s.get("phase") != "Restarting":
        j.sb.phase("Pending", msg)
    else:
        j.s["message"] = msg
    j.event("Normal", "GangRescheduled", msg)
    j.p.requeue(0.2)
    return True


def _release_gang(j: Job, pods: list[dict[str, Any]]) -> None:
    """Delete a gang that never fully scheduled (it never trained) and move on to the next attempt."""
    deletes, _ = _stop(pods, j.nodes, j.cfg, j.now)
    j.p.deletes += deletes
    j.attempt += 1
    j.s["attempt"] = j.attempt


PHASES: tuple[Callable[[Job], bool], ...] = (
    _accept,
    _finished,
    _suspend,
    _resume,
    _deadline,
    _dataset,
    _stop_old_gangs,
    _judge,
    _succeeded,
    _create_gang,
    _track_gang,
)


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


def _fail(j: Job, reason: str, message: str) -> None:
    deletes, _ = _stop([x for x in j.all_pods if pod_phase(x) not in TERMINAL], j.nodes, j.cfg, j.now)
    j.p.deletes += deletes
    j.sb.cond("Failed", True, reason, message)
    j.sb.cond_off("Running", reason)
    j.sb.cond_off("Restarting", reason)
    j.s["completionTime"] = j.sb.ts()
    j.sb.phase("Failed", message)
    j.event("Warning", reason, message)


def _restart(j: Job, rank: int, v: Verdict) -> None:
    """Charge the verdict to its budget (infrastructure or application); over budget fails the job, otherwise
    the gang is stopped and the next attempt resumes from the last checkpoint."""
    s, rp = j.s, j.spec.run_policy
    restarts = s["restarts"]
    where = f" on node {v.node}" if v.node else ""
    gpu = f" (GPU {v.gpu})" if v.gpu else ""
    infra = v.kind == "infrastructure"
    budget_key, limit_name, limit = (
        ("infrastructure", "infraFailureLimit", rp.infra_failure_limit)
        if infra
        else ("application", "backoffLimit", rp.backoff_limit)
    )
    restarts[budget_key] += 1
    if infra:
        j.p.observations.append(GpuFailure(v.node or "", v.reason))
        if v.node:
            h = _health(j.nodes, v.node, j.cfg)
            # the node itself looked broken: it is forgiven once it looks healthy again (else after a TTL)
            rec = {
                "node": v.node,
                "gpu": v.gpu,
                "reason": v.reason,
                "time": j.sb.ts(),
                "nodeUnhealthy": bool(h is not None and not h.healthy),
                "avoided": v.reason not in NODE_NEUTRAL,
            }
            s["failedNodes"] = [f for f in s["failedNodes"] if f.get("node") != v.node] + [rec]
    j.p.observations.append(Restart(budget_key, v.reason))
    if restarts[budget_key] > limit:
        _fail(
            j,
            "InfraFailureLimitExceeded" if infra else "BackoffLimitExceeded",
            f"worker {rank}{where}{gpu if infra else ''}: {v.reason} {v.message}; {budget_key} failures "
            f"{restarts[budget_key]} > {limit_name} {limit}",
        )
        return
    budget = f"{budget_key} failure {restarts[budget_key]}/{limit}"
    j.attempt += 1
    s["attempt"] = j.attempt
    avoid = _avoided(s["failedNodes"])
    detail = v.reason + (f" ({v.message})" if v.message else "")
    msg = (
        f"worker {rank}{where}{gpu}: {detail}; {budget}; stopping the gang "
        f"and restarting as attempt {j.attempt} from the last checkpoint"
        + (f", avoiding {', '.join(avoid)}" if infra and avoid else "")
    )
    j.sb.cond("Restarting", True, v.reason if infra else "ApplicationFailure", msg)
    j.sb.cond_off("Running", "Restarting", msg)
    j.sb.phase("Restarting", msg)
    j.event("Warning", "GPUFailure" if infra else "WorkerFailed", msg)
    deletes, _ = _stop(list(j.current.values()), j.nodes, j.cfg, j.now)
    j.p.deletes += deletes
    j.p.requeue(0.2)
