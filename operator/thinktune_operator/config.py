"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from thinktune.contract import truthy


def _env_list(name: str, default: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, default).split(",") if x.strip())


DEFAULT_GPU_FAULT_TAINTS = (
    "thinktune.io/gpu-unhealthy,nvidia.com/gpu-unhealthy,nvidia.com/gpu.unhealthy,nvidia.com/gpu-error,"
    "node.kubernetes.io/out-of-service,node.kubernetes.io/unreachable,node.kubernetes.io/not-ready,"
    "node.kubernetes.io/unschedulable"
)


@dataclass(frozen=True)
class OperatorConfig:
    metrics_port: int = 8080
    # loopback unless told otherwise: a local operator (the sandbox) serves no one else; the chart sets 0.0.0.0
    metrics_address: str = "127.0.0.1"
    workspace_pvc: str = "thinktune-workspace"
    progress_source: str = "auto"  # auto | http | annotation | none
    progress_interval_s: float = 15.0
    resync_s: float = 30.0
    workers: int = 16
    gpu_resource: str = "nvidia.com/gpu"
    gpu_fault_taints: tuple[str, ...] = field(
        default_factory=lambda: tuple(DEFAULT_GPU_FAULT_TAINTS.split(","))
    )
    # old-gang pods on a healthy node get this long to terminate before they are force-deleted
    stop_grace_s: float = 30.0
    # a node that failed a job without showing it (exit 75 on a healthy-looking node) is avoided this long
    failed_node_ttl_s: float = 3600.0
    # a worker failed with an application error while others of its gang still run: wait this long (from its
    # finishedAt) for theirs, since the rank that caused it (a GPU failure) may report after its peers
    peer_settle_s: float = 15.0
    coscheduling_scheduler: str | None = None
    volcano_scheduler: str = "volcano"
    default_image: str | None = None
    # ServiceAccounts a CR's pod.serviceAccountName may name (the chart's operator.allowedServiceAccounts)
    allowed_service_accounts: tuple[str, ...] = ("default",)
    # trainer pods share compiled kernels on their output's PVC (.thinktune/kernel-cache at its root): a fresh
    # job skips the compile an earlier one paid; off: each job keeps its own on its output volume
    shared_kernel_cache: bool = True

    @classmethod
    def from_env(cls) -> OperatorConfig:
        e = os.environ.get
        return cls(
            metrics_port=int(e("THINKTUNE_METRICS_PORT", "8080")),
            metrics_address=e("THINKTUNE_METRICS_ADDRESS", "127.0.0.1"),
            workspace_pvc=e("THINKTUNE_WORKSPACE_PVC", "thinktune-workspace"),
            progress_source=e("THINKTUNE_PROGRESS_SOURCE", "auto"),
            progress_interval_s=float(e("THINKTUNE_PROGRESS_INTERVAL", "15")),
            resync_s=float(e("THINKTUNE_RESYNC_SECONDS", "30")),
            workers=int(e("THINKTUNE_WORKERS", "16")),
            gpu_resource=e("THINKTUNE_GPU_RESOURCE", "nvidia.com/gpu"),
            gpu_fault_taints=_env_list("THINKTUNE_GPU_FAULT_TAINTS", DEFAULT_GPU_FAULT_TAINTS),
            stop_grace_s=float(e("THINKTUNE_STOP_GRACE_SECONDS", "30")),
            failed_node_ttl_s=float(e("THINKTUNE_FAILED_NODE_TTL_SECONDS", "3600")),
            peer_settle_s=float(e("THINKTUNE_PEER_SETTLE_SECONDS", "15")),
            coscheduling_scheduler=e("THINKTUNE_COSCHEDULING_SCHEDULER") or None,
            volcano_scheduler=e("THINKTUNE_VOLCANO_SCHEDULER", "volcano"),
            default_image=e("THINKTUNE_DEFAULT_IMAGE") or None,
            allowed_service_accounts=_env_list("THINKTUNE_ALLOWED_SERVICE_ACCOUNTS", "default"),
            shared_kernel_cache=truthy(e("THINKTUNE_SHARED_KERNEL_CACHE", "true")),
        )
