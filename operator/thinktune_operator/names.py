"""Names, labels and annotations shared by builders, planners and handlers.

Every child object gets a deterministic name (so a restarted operator finds, never duplicates, what it created)
and the same label set (so one label selector finds all children of a CR).
"""

from __future__ import annotations

import hashlib
import re

from thinktune import contract

GROUP = "thinktune.io"
MANAGED_BY = "thinktune-operator"

# labels
L_NAME = "app.kubernetes.io/name"
L_COMPONENT = "app.kubernetes.io/component"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_PART_OF = "app.kubernetes.io/part-of"
L_KIND = f"{GROUP}/kind"
L_OWNER = f"{GROUP}/owner"  # name of the owning CR (any kind)
L_JOB = f"{GROUP}/job"  # FineTuneJob name (workers only)
L_ATTEMPT = f"{GROUP}/attempt"
L_RANK = f"{GROUP}/rank"
L_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
L_KUEUE_POD_GROUP = "kueue.x-k8s.io/pod-group-name"
L_COSCHED_POD_GROUP = "scheduling.x-k8s.io/pod-group"

# annotations
A_ATTEMPT = f"{GROUP}/attempt"
A_RESUME = f"{GROUP}/resume-from-checkpoint"
A_PROGRESS = contract.PROGRESS_ANNOTATION  # JSON progress (the `annotation` progress source; kwok tests)
A_SPEC_HASH = f"{GROUP}/spec-hash"
A_GENERATION = f"{GROUP}/generation"  # metadata.generation of the CR a child was built from
# nodes a worker's affinity keeps it off (comma-separated), so a stuck gang can tell its exclusions went stale
A_AVOIDED_NODES = f"{GROUP}/avoided-nodes"
A_KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
A_VOLCANO_GROUP = "scheduling.k8s.io/group-name"

CONFIG_MOUNT = "/etc/thinktune"
CR_FILE = "cr.yaml"
WORKSPACE_ROOT = "/workspace"
# at a PVC's root: compiled kernels every trainer pod writing there shares (the trainer's own layout)
KERNEL_CACHE_PATH = contract.KERNEL_CACHE_PATH
TERMINATION_LOG = contract.DEFAULT_TERMINATION_LOG
MASTER_PORT = 29500

_DNS_BAD = re.compile(r"[^a-z0-9-]+")


def short_hash(*parts: object, n: int = 8) -> str:
    h = hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()
    return h[:n]


def dns_label(name: str, suffix: str = "", max_len: int = 63) -> str:
    """`name + suffix` as an RFC 1035 label (<=63, starts with a letter). Whenever the name had to change (cut
    to length, `x.y` -> `x-y`, a leading digit) it gets a hash of the original, so two CRs never map to one
    child name: `x.y` -> `x-y-<hash>` while `x-y` stays `x-y`."""
    base = _DNS_BAD.sub("-", name.lower()).strip("-") or "x"
    if not base[0].isalpha():
        base = "t-" + base
    full = base + suffix
    if base == name and len(full) <= max_len:
        return full
    keep = max_len - len(suffix) - 9
    return f"{base[:keep].rstrip('-')}-{short_hash(name)}{suffix}"


def worker_pod_name(job: str, attempt: int, rank: int) -> str:
    return dns_label(job, f"-a{attempt}-w{rank}")


def rdzv_service_name(job: str) -> str:
    return dns_label(job)


def job_configmap_name(job: str, attempt: int) -> str:
    return dns_label(job, f"-a{attempt}-job")


def podgroup_name(job: str, attempt: int) -> str:
    return dns_label(job, f"-a{attempt}")


def parse_worker_name(pod_name: str) -> tuple[int, int] | None:
    m = re.search(r"-a(\d+)-w(\d+)$", pod_name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def child_labels(kind: str, owner: str, component: str) -> dict[str, str]:
    return {
        L_NAME: "thinktune",
        L_COMPONENT: component,
        L_MANAGED_BY: MANAGED_BY,
        L_PART_OF: "thinktune",
        L_KIND: kind.lower(),
        L_OWNER: label_value(owner),
    }


def label_value(v: str) -> str:
    """Label values are <= 63 chars."""
    return v if len(v) <= 63 else f"{v[:54]}-{short_hash(v)}"
