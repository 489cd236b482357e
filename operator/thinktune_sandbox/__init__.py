"""Local Kubernetes test control plane (etcd, apiserver, controller-manager, scheduler, kwok GPU nodes).

Binaries come from tools/build-binaries.sh. Entry points: `ControlPlane` (Python/pytest) and
`thinktune sandbox up|down|status` (cli.app).
"""

from .controlplane import (
    GPU_RESOURCE,
    KWOK_TAINT,
    KWOK_TOLERATION,
    NODE_NOT_READY_LABEL,
    POD_FAILED_EXIT_CODE_ANNOTATION,
    POD_FAILED_LABEL,
    ControlPlane,
    ControlPlaneError,
    NodeSpec,
    SandboxStatus,
)
from .state import default_bin_dir, default_state_dir

__all__ = [
    "GPU_RESOURCE",
    "KWOK_TAINT",
    "KWOK_TOLERATION",
    "NODE_NOT_READY_LABEL",
    "POD_FAILED_EXIT_CODE_ANNOTATION",
    "POD_FAILED_LABEL",
    "ControlPlane",
    "ControlPlaneError",
    "NodeSpec",
    "SandboxStatus",
    "default_bin_dir",
    "default_state_dir",
]
