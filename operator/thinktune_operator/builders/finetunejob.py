"""FineTuneJob children: resolved-job ConfigMap, headless rendezvous Service, PodGroup, N worker Pods."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinktune import contract
from thinktune.spec import FineTuneJobSpec, SchedulingPolicy, Volume, parse_cluster

from .. import names as N
from ..config import OperatorConfig
from . import common
from .common import Mounts, base_pod, cr_configmap, env, gpu_count, object_meta, resolved_cr

COMPONENT = "worker"
JOB_FILE = "job.yaml"


def parse_spec(body: dict[str, Any]) -> FineTuneJobSpec:
    return parse_cluster(FineTuneJobSpec, body.get("spec") or {})  # in-cluster rules: paths inside the PVC


def mounts_for(spec: FineTuneJobSpec, cfg: OperatorConfig, dataset: Volume | None) -> Mounts:
    m = Mounts(cfg.workspace_pvc)
    m.claim_of(spec.output)
    if dataset is not None:
        m.claim_of(dataset)
    if spec.model.pvc or spec.model.make_tiny:
        m.claim_of(pvc=spec.model.pvc)  # a tiny model is made on the volume, where export finds it
    return m


def resolved_job(
    body: dict[str, Any], spec: FineTuneJobSpec, cfg: OperatorConfig, dataset: Volume | None
) -> dict[str, Any]:
    """The CR as the pod sees it: volume paths are absolute in-pod paths, datasetRef replaced by the directory."""
    mounts = mounts_for(spec, cfg, dataset)
    s = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    s["output"] = {"path": mounts.path(spec.output)}
    if dataset is not None:
        s.pop("datasetRef", None)
        s["dataset"] = {"path": mounts.path(dataset)}
    if spec.model.pvc or spec.model.make_tiny:
        rel = spec.model.name_or_path.strip("/")
        s["model"]["nameOrPath"] = f"{N.WORKSPACE_ROOT}/{spec.model.pvc or cfg.workspace_pvc}/{rel}"
        s["model"].pop("pvc", None)
    return resolved_cr(body, s)


def job_configmap(body: dict[str, Any], resolved: dict[str, Any], attempt: int) -> dict[str, Any]:
    """One ConfigMap per attempt, written from the spec of the generation that starts the attempt: spec edits
    reach the workload at the next attempt (a restart after a failure, or suspend/resume)."""
    cm = cr_configmap(
        body, N.job_configmap_name(body["metadata"]["name"], attempt), COMPONENT, resolved, key=JOB_FILE
    )
    cm["metadata"]["annotations"] = {
        N.A_ATTEMPT: str(attempt),
        N.A_GENERATION: str(body["metadata"].get("generation") or ""),
    }
    return cm


def rdzv_service(body: dict[str, Any]) -> dict[str, Any]:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(body, N.rdzv_service_name(name), "rendezvous"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # ranks rendezvous before any readiness
            "selector": {N.L_JOB: N.label_value(name)},
            "ports": [{"name": "rdzv", "port": N.MASTER_PORT, "targetPort": N.MASTER_PORT}],
        },
    }


def nproc_per_node(spec: FineTuneJobSpec, cfg: OperatorConfig) -> int:
    if spec.num_proc_per_node != "auto":
        return int(spec.num_proc_per_node)
    return max(1, gpu_count(spec.resources_per_node, cfg.gpu_resource))


def avoid_nodes_affinity(
    affinity: dict[str, Any] | None, nodes: list[str], job: str, attempt: int
) -> dict[str, Any]:
    """User affinity + node anti-affinity away from failed nodes + one worker per node (hostname anti-affinity)."""
    aff = copy.deepcopy(affinity) if affinity else {}
    if nodes:
        # metadata.name is what a Node *is* (hostname labels can differ from it). A node field selector takes
        # exactly one value per requirement, so one NotIn per node (requirements of a term are ANDed).
        excl = [{"key": "metadata.name", "operator": "NotIn", "values": [n]} for n in sorted(set(nodes))]
        na = aff.setdefault("nodeAffinity", {})
        req = na.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = req.setdefault("nodeSelectorTerms", [])
        if not terms:
            terms.append({})
        for t in terms:  # terms are ORed, so every term must exclude the nodes
            t.setdefault("matchFields", []).extend(dict(e, values=list(e["values"])) for e in excl)
    pa = aff.setdefault("podAntiAffinity", {})
    pa.setdefault("requiredDuringSchedulingIgnoredDuringExecution", []).append(
        {
            "labelSelector": {"matchLabels": {N.L_JOB: N.label_value(job), N.L_ATTEMPT: str(attempt)}},
            "topologyKey": "kubernetes.io/hostname",
        }
    )
    return aff


def worker_pod(
    body: dict[str, Any],
    spec: FineTuneJobSpec,
    cfg: OperatorConfig,
    attempt: int,
    rank: int,
    avoid: list[str],
    dataset: Volume | None,
) -> dict[str, Any]:
    name = body["metadata"]["name"]
    mounts = mounts_for(spec, cfg, dataset)
    nnodes = spec.num_nodes
    nproc = nproc_per_node(spec, cfg)
    svc = N.rdzv_service_name(name)
    port = spec.monitoring.metrics_port
    # LLaMA Factory resumes from the last checkpoint in output_dir by itself (overwrite_output_dir stays false),
    # and the output dir is the same every attempt: a resume needs no env of its own.
    worker_env = [
        env(contract.ENV_METRICS_PORT, str(port)),
        env(contract.ENV_NNODES, str(nnodes)),
        env(contract.ENV_NODE_RANK, str(rank)),
        env(contract.ENV_NPROC_PER_NODE, str(nproc)),
        env(contract.ENV_MASTER_ADDR, f"{N.worker_pod_name(name, attempt, 0)}.{svc}"),
        env(contract.ENV_MASTER_PORT, str(N.MASTER_PORT)),
    ]
    if nnodes > 1 or nproc > 1:
        worker_env.append(env(contract.ENV_FORCE_TORCHRUN, "1"))
    if cfg.shared_kernel_cache:
        # on the output's PVC, which the pod mounts anyway (a namespace whose CRs all name their own PVCs may have
        # no workspace PVC): jobs writing to one PVC share one cache
        claim = mounts.claim_of(spec.output)
        worker_env.append(env(contract.ENV_KERNEL_CACHE, f"{N.WORKSPACE_ROOT}/{claim}/{N.KERNEL_CACHE_PATH}"))
    container = {
        "name": "trainer",
        "command": ["thinktune", "train", "-f", f"{N.CONFIG_MOUNT}/{JOB_FILE}"],
        "env": worker_env,
        "resources": copy.deepcopy(spec.resources_per_node),
        # the trainer serves metrics on metricsPort + LOCAL_RANK in each process
        "ports": [
            {"name": "metrics", "containerPort": port},
            {"name": "rdzv", "containerPort": N.MASTER_PORT},
        ]
        + [{"name": f"metrics-r{lr}", "containerPort": port + lr} for lr in range(1, min(nproc, 16))],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    labels = {N.L_JOB: N.label_value(name), N.L_ATTEMPT: str(attempt), N.L_RANK: str(rank)}
    annotations = {
        N.A_ATTEMPT: str(attempt),
        N.A_RESUME: "true" if attempt > 0 else "false",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    if avoid:
        annotations[N.A_AVOIDED_NODES] = ",".join(sorted(set(avoid)))
    sp = spec.run_policy.scheduling_policy
    group = N.podgroup_name(name, attempt)
    scheduler = GANG_SCHEDULERS[sp.gang_scheduler]
    if sp.queue and sp.gang_scheduler != "volcano":
        kueue(labels, annotations, sp, group, nnodes)
    scheduler_name = scheduler.mark(labels, annotations, group, cfg)
    pod = base_pod(
        body,
        N.worker_pod_name(name, attempt, rank),
        COMPONENT,
        spec.pod,
        container,
        mounts,
        N.job_configmap_name(name, attempt),
        labels,
        annotations,
        image=common.default_image_for(spec.pod, cfg),
    )
    ps = pod["spec"]
    ps["hostname"] = N.worker_pod_name(name, attempt, rank)
    ps["subdomain"] = svc
    ps["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    ps["affinity"] = avoid_nodes_affinity(spec.pod.affinity, avoid, name, attempt)
    if spec.run_policy.active_deadline_seconds:
        # belt and braces: the kubelet stops a pod even if the operator is down
        ps["activeDeadlineSeconds"] = int(spec.run_policy.active_deadline_seconds)
    if scheduler_name:
        ps["schedulerName"] = scheduler_name
    if sp.priority_class and not ps.get("priorityClassName"):
        ps["priorityClassName"] = sp.priority_class
    return pod


def worker_pods(
    body: dict[str, Any],
    spec: FineTuneJobSpec,
    cfg: OperatorConfig,
    attempt: int,
    avoid: list[str],
    dataset: Volume | None,
) -> list[dict[str, Any]]:
    return [worker_pod(body, spec, cfg, attempt, r, avoid, dataset) for r in range(spec.num_nodes)]


def pod_group(body: dict[str, Any], spec: FineTuneJobSpec, attempt: int) -> dict[str, Any] | None:
    """The gang's PodGroup for the chosen scheduler (none for plain scheduling)."""
    sp = spec.run_policy.scheduling_policy
    build = GANG_SCHEDULERS[sp.gang_scheduler].pod_group
    if build is None:
        return None
    m = object_meta(body, N.podgroup_name(body["metadata"]["name"], attempt), "podgroup")
    return build(m, spec)


# ---- scheduler variants: how a worker pod joins its gang, and the gang's PodGroup


def kueue(
    labels: dict[str, str], annotations: dict[str, str], sp: SchedulingPolicy, group: str, n: int
) -> None:
    """Kueue admits the gang as one pod group of `n` pods in local queue `sp.queue` (Volcano has its own)."""
    labels[N.L_KUEUE_QUEUE] = sp.queue or ""
    labels[N.L_KUEUE_POD_GROUP] = group
    annotations[N.A_KUEUE_TOTAL] = str(n)


def _mark_none(
    labels: dict[str, str], annotations: dict[str, str], group: str, cfg: OperatorConfig
) -> str | None:
    return None


def _mark_coscheduling(
    labels: dict[str, str], annotations: dict[str, str], group: str, cfg: OperatorConfig
) -> str | None:
    labels[N.L_COSCHED_POD_GROUP] = group
    return cfg.coscheduling_scheduler or None


def _mark_volcano(
    labels: dict[str, str], annotations: dict[str, str], group: str, cfg: OperatorConfig
) -> str | None:
    annotations[N.A_VOLCANO_GROUP] = group
    return cfg.volcano_scheduler


def _coscheduling_group(m: dict[str, Any], spec: FineTuneJobSpec) -> dict[str, Any]:
    sp = spec.run_policy.scheduling_policy
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": m,
        "spec": {"minMember": spec.num_nodes, "scheduleTimeoutSeconds": sp.schedule_timeout_seconds},
    }


def _volcano_group(m: dict[str, Any], spec: FineTuneJobSpec) -> dict[str, Any]:
    sp = spec.run_policy.scheduling_policy
    s: dict[str, Any] = {"minMember": spec.num_nodes}
    if sp.queue:
        s["queue"] = sp.queue
    if sp.priority_class:
        s["priorityClassName"] = sp.priority_class
    limits = spec.resources_per_node.get("limits") or spec.resources_per_node.get("requests") or {}
    if limits:
        s["minResources"] = {k: _mul(v, spec.num_nodes) for k, v in limits.items()}
    return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "metadata": m, "spec": s}


@dataclass(frozen=True)
class GangScheduler:
    # labels/annotates a worker pod for its gang; returns the pod's schedulerName (None: the default scheduler)
    mark: Callable[[dict[str, str], dict[str, str], str, OperatorConfig], str | None]
    pod_group: Callable[[dict[str, Any], FineTuneJobSpec], dict[str, Any]] | None


# spec.runPolicy.schedulingPolicy.gangScheduler -> its variant
GANG_SCHEDULERS: dict[str, GangScheduler] = {
    "none": GangScheduler(_mark_none, None),
    "coscheduling": GangScheduler(_mark_coscheduling, _coscheduling_group),
    "volcano": GangScheduler(_mark_volcano, _volcano_group),
}


def _mul(v: Any, n: int) -> Any:
    try:
        return str(int(str(v)) * n)
    except ValueError:
        return v  # quantities like "40Gi" are left per-pod; Volcano only needs a lower bound
