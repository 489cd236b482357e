"""Pure classification of pod and node state: infrastructure (GPU/node) failure vs application failure.

No API calls here: the planner feeds pod and node dicts (as the API returns them) and acts on the verdicts.
Signals (see notes/k8s-operator-anchors.md §3.4), strongest first:
  1. the trainer's own verdict: exit code contract.EXIT_GPU_FAILURE and/or a contract.FailureMessage in the
     termination message (category gpu_failure, with the GPU and node)
  2. pod condition DisruptionTarget=True (eviction, preemption, taint manager, node shutdown), pod.status.reason
     Evicted/NodeLost/..., KEP-4680 allocatedResourcesStatus health Unhealthy
  3. the node: Ready False/Unknown, cordoned (spec.unschedulable), GPU-fault taints, GPU health conditions
     (node-problem-detector / NVSentinel style), nvidia.com/gpu allocatable < capacity (device plugin marked a
     GPU unhealthy after a critical XID)
Anything else that makes a worker fail is an application failure (bug, bad data, OOM) and uses backoffLimit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from thinktune import contract

GPU_RESOURCE = "nvidia.com/gpu"

DEFAULT_FAULT_TAINTS = frozenset(
    {
        "thinktune.io/gpu-unhealthy",
        "nvidia.com/gpu-unhealthy",
        "nvidia.com/gpu.unhealthy",
        "nvidia.com/gpu-error",
        "node.kubernetes.io/out-of-service",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unschedulable",
    }
)

# pod.status.reason values that mean the node/kubelet, not the program, ended the pod
INFRA_POD_REASONS = {
    "Evicted",
    "NodeLost",
    "NodeShutdown",
    "Terminated",
    "UnexpectedAdmissionError",
    "NodeAffinity",
    "OutOfnvidia.com/gpu",
    "Shutdown",
}
# node condition types from NPD / NVSentinel / AKS GPU checks that are bad when True
_BAD_WHEN_TRUE = re.compile(r"(gpu|xid|nvlink|ecc|infiniband|nvidia)", re.I)

Kind = Literal["infrastructure", "application"]


@dataclass
class NodeHealth:
    name: str
    healthy: bool = True
    reasons: list[str] = field(default_factory=list)
    gpu: str | None = None  # e.g. "2 of 8 GPUs unhealthy" or a GPU id from a condition message
    gpu_capacity: int = 0
    gpu_allocatable: int = 0

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else "Healthy"


@dataclass
class Verdict:
    kind: Kind
    reason: str
    message: str = ""
    node: str | None = None
    gpu: str | None = None


def _qty_int(v: Any) -> int:
    if v is None:
        return 0
    try:
        return int(str(v))
    except ValueError:
        s = str(v)
        if s.endswith("k"):
            return int(float(s[:-1]) * 1000)
        try:
            return int(float(s))
        except ValueError:
            return 0


def node_health(
    node: dict[str, Any],
    fault_taints: frozenset[str] | set[str] | tuple[str, ...] = DEFAULT_FAULT_TAINTS,
    gpu_resource: str = GPU_RESOURCE,
) -> NodeHealth:
    name = node.get("metadata", {}).get("name", "")
    status = node.get("status") or {}
    spec = node.get("spec") or {}
    h = NodeHealth(name=name)
    for c in status.get("conditions") or []:
        ctype, cstatus = c.get("type", ""), c.get("status")
        if ctype == "Ready":
            if cstatus == "False":
                h.reasons.append("NodeNotReady")
            elif cstatus == "Unknown":
                h.reasons.append("NodeUnknown")
        elif ctype.endswith(("Healthy", "Ready")) and _BAD_WHEN_TRUE.search(ctype):
            if cstatus == "False":
                h.reasons.append(f"GPUCondition:{ctype}")
                h.gpu = h.gpu or _gpu_from_text(c.get("message", ""))
        elif _BAD_WHEN_TRUE.search(ctype) and cstatus == "True":
            h.reasons.append(f"GPUCondition:{ctype}")
            h.gpu = h.gpu or _gpu_from_text(c.get("message", ""))
    if spec.get("unschedulable"):
        h.reasons.append("NodeCordoned")
    for t in spec.get("taints") or []:
        if t.get("key") in fault_taints and t.get("effect") in ("NoSchedule", "NoExecute"):
            # the standard not-ready/unschedulable taints duplicate the signals above; keep the first wording
            r = f"Taint:{t['key']}"
            if t["key"] == "node.kubernetes.io/unschedulable" and "NodeCordoned" in h.reasons:
                continue
            if t["key"] in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable") and any(
                x in h.reasons for x in ("NodeNotReady", "NodeUnknown")
            ):
                continue
            h.reasons.append(r)
    cap = _qty_int((status.get("capacity") or {}).get(gpu_resource))
    alloc_raw = (status.get("allocatable") or {}).get(gpu_resource)
    alloc = cap if alloc_raw is None else _qty_int(alloc_raw)
    h.gpu_capacity, h.gpu_allocatable = cap, alloc
    if cap and alloc < cap:
        h.reasons.append("GPUAllocatableReduced")
        h.gpu = h.gpu or f"{cap - alloc} of {cap} GPUs unhealthy"
    h.healthy = not h.reasons
    return h


def _gpu_from_text(text: str) -> str | None:
    m = re.search(r"(GPU-[0-9a-fA-F-]{8,}|gpu[ =:#]*\d+)", text or "", re.I)
    return m.group(1) if m else None


DETAIL_CHARS = 500


def _detail(failure: contract.FailureMessage | None) -> str:
    """Human text of a failure: the error text beats the short classification. Verdict messages end up in
    conditions and Events, so a long traceback keeps its end (what broke), marked as cut."""
    if failure is None:
        return ""
    text = failure.message or failure.detail
    return text if len(text) <= DETAIL_CHARS else "..." + text[-DETAIL_CHARS:]


def terminated_state(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The terminated state of the main (first non-zero, else first) container."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    found = None
    for cs in statuses:
        t = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if t:
            if t.get("exitCode", 0) != 0:
                return t
            found = found or t
    return found


def termination_message(pod: dict[str, Any]) -> contract.TerminationMessage | None:
    """What the workload wrote to its termination log (contract.write_termination_message), if anything."""
    return contract.read_termination_message((terminated_state(pod) or {}).get("message"))


def pod_condition(pod: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def unhealthy_devices(pod: dict[str, Any], gpu_resource: str = GPU_RESOURCE) -> list[str]:
    """KEP-4680 allocatedResourcesStatus: device ids reported Unhealthy for this pod."""
    out = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for rs in cs.get("allocatedResourcesStatus") or []:
            if rs.get("name", "").endswith(gpu_resource.split("/")[-1]) or rs.get("name") == gpu_resource:
                for r in rs.get("resources") or []:
                    if r.get("health") == "Unhealthy":
                        out.append(str(r.get("resourceID")))
    return out


def classify_pod(
    pod: dict[str, Any], node: NodeHealth | None = None, gpu_exit_code: int = contract.EXIT_GPU_FAILURE
) -> Verdict | None:
    """Verdict for one worker pod, or None when it is fine (pending/running on a healthy node/succeeded).

    A *running* pod gets an infrastructure verdict when its node went bad or it is being disrupted: the gang
    must be stopped before NCCL hangs on the lost rank.
    """
    status = pod.get("status") or {}
    phase = status.get("phase")
    node_name = (pod.get("spec") or {}).get("nodeName")
    if phase == "Succeeded":
        return None

    dt = pod_condition(pod, "DisruptionTarget")
    if dt and dt.get("status") == "True":
        return Verdict(
            "infrastructure",
            "DisruptionTarget",
            f"{dt.get('reason', '')}: {dt.get('message', '')}".strip(": "),
            node=node_name,
            gpu=node.gpu if node else None,
        )

    bad_devices = unhealthy_devices(pod)
    if bad_devices:
        return Verdict(
            "infrastructure",
            "GPUUnhealthy",
            "device plugin reports unhealthy GPU(s) for this pod",
            node=node_name,
            gpu=",".join(bad_devices),
        )

    if phase == "Failed":
        term = terminated_state(pod) or {}
        msg = contract.read_termination_message(term.get("message"))
        failure = msg if isinstance(msg, contract.FailureMessage) else None
        code = term.get("exitCode")
        msg_node = (failure.node if failure else None) or node_name
        gpu = (failure.gpu if failure else None) or (node.gpu if node else None)
        # the exit code alone suffices (a wrapper may lose the message), and so does the message alone (a
        # wrapper shell may lose the exit code)
        if code == gpu_exit_code or (failure is not None and failure.category == "gpu_failure"):
            return Verdict(
                "infrastructure",
                "GPUFailure",
                _detail(failure) or f"exit code {code}",
                node=msg_node,
                gpu=gpu,
            )
        if status.get("reason") in INFRA_POD_REASONS:
            return Verdict(
                "infrastructure", f"Pod{status['reason']}", status.get("message", ""), node=node_name, gpu=gpu
            )
        if node is not None and not node.healthy:
            return Verdict(
                "infrastructure",
                node.reason,
                f"worker failed on unhealthy node ({', '.join(node.reasons)})",
                node=node_name,
                gpu=node.gpu,
            )
        reason = term.get("reason") or "Error"
        if reason == "OOMKilled":
            return Verdict("application", "OOMKilled", "container exceeded its memory limit", node=node_name)
        return Verdict(
            "application",
            "ExitCode" if code is not None else reason,
            _detail(failure) or f"exit code {code} ({reason})",
            node=node_name,
        )

    if node is not None and not node.healthy and node_name:
        return Verdict(
            "infrastructure", node.reason, ", ".join(node.reasons[1:]), node=node_name, gpu=node.gpu
        )
    return None
