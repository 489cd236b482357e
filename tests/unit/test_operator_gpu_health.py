"""GPU-health classification: infrastructure vs application failure from pod and node state."""

from __future__ import annotations

import pytest
from thinktune import contract
from thinktune.contract import EXIT_GPU_FAILURE as GPU_FAILURE_EXIT_CODE
from thinktune_operator.gpu_health import DETAIL_CHARS, classify_pod, node_health
from thinktune_sandbox.testing import termination_text


def failure(category="gpu_failure", message="uncorrectable ECC error", **kw):
    reason = contract.FAILURE_REASON[category]
    code = kw.pop("exit_code", GPU_FAILURE_EXIT_CODE if category == "gpu_failure" else 1)
    return termination_text(
        contract.FailureMessage(reason=reason, category=category, message=message, exit_code=code, **kw)
    )


def node(name="gpu-0", ready="True", unschedulable=False, taints=(), cap=8, alloc=8, conditions=()):
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": unschedulable, "taints": list(taints)},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}, *conditions],
            "capacity": {"nvidia.com/gpu": str(cap)},
            "allocatable": {"nvidia.com/gpu": str(alloc)},
        },
    }


def pod(
    phase="Running",
    exit_code=None,
    message=None,
    reason=None,
    conditions=(),
    node_name="gpu-0",
    pod_reason=None,
    alloc_status=None,
):
    cs = {"name": "trainer", "state": {}}
    if exit_code is not None:
        cs["state"] = {"terminated": {"exitCode": exit_code, "reason": reason or "Error", "message": message}}
    if alloc_status:
        cs["allocatedResourcesStatus"] = alloc_status
    st = {"phase": phase, "containerStatuses": [cs], "conditions": list(conditions)}
    if pod_reason:
        st["reason"] = pod_reason
    return {"metadata": {"name": "j-a0-w0"}, "spec": {"nodeName": node_name}, "status": st}


def test_healthy_node():
    h = node_health(node())
    assert h.healthy and h.reasons == [] and h.gpu_capacity == 8


@pytest.mark.parametrize(
    "kw,reason",
    [
        ({"ready": "False"}, "NodeNotReady"),
        ({"ready": "Unknown"}, "NodeUnknown"),
        ({"unschedulable": True}, "NodeCordoned"),
        (
            {"taints": [{"key": "nvidia.com/gpu-unhealthy", "effect": "NoSchedule"}]},
            "Taint:nvidia.com/gpu-unhealthy",
        ),
        (
            {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]},
            "Taint:node.kubernetes.io/out-of-service",
        ),
        ({"alloc": 7}, "GPUAllocatableReduced"),
        (
            {"conditions": [{"type": "GpuXidError", "status": "True", "message": "Xid 79 on GPU 3"}]},
            "GPUCondition:GpuXidError",
        ),
        ({"conditions": [{"type": "NvidiaGPUHealthy", "status": "False"}]}, "GPUCondition:NvidiaGPUHealthy"),
    ],
)
def test_unhealthy_node_signals(kw, reason):
    h = node_health(node(**kw))
    assert not h.healthy and h.reasons[0] == reason


def test_benign_node_taints_and_conditions_are_ignored():
    # a dedicated-GPU-pool taint and a healthy GPU condition are normal
    h = node_health(
        node(
            taints=[
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"},
            ],
            conditions=[
                {"type": "GpuXidError", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
            ],
        )
    )
    assert h.healthy


def test_not_ready_taint_does_not_duplicate_reason():
    h = node_health(
        node(ready="False", taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])
    )
    assert h.reasons == ["NodeNotReady"]


def test_allocatable_drop_says_how_many():
    h = node_health(node(alloc=6))
    assert h.gpu == "2 of 8 GPUs unhealthy"


def test_gpu_exit_code_with_termination_message():
    msg = failure(message="CUDA error: uncorrectable ECC error encountered", gpu="3", node="gpu-0")
    v = classify_pod(pod("Failed", GPU_FAILURE_EXIT_CODE, msg), node_health(node()))
    assert v.kind == "infrastructure" and v.reason == "GPUFailure"
    assert v.gpu == "3" and v.node == "gpu-0" and "ECC" in v.message


def test_failure_message_from_the_contract_writer():
    msg = failure(gpu="1", node="gpu-7", detail="uncorrectable ECC error", message="RuntimeError: ECC error")
    v = classify_pod(pod("Failed", GPU_FAILURE_EXIT_CODE, msg), None)
    assert v.kind == "infrastructure" and v.gpu == "1" and v.node == "gpu-7"
    assert v.message == "RuntimeError: ECC error"  # the error text beats the short classification
    # same verdict even if the exit code got lost (e.g. a wrapper shell)
    v = classify_pod(pod("Failed", 1, msg), None)
    assert v.kind == "infrastructure" and v.reason == "GPUFailure"
    app = failure("application", "KeyError: 'x'")
    v = classify_pod(pod("Failed", 1, app), node_health(node()))
    assert v.kind == "application" and "KeyError" in v.message
    # CUDA OOM that the launcher could not fix is the user's budget too
    v = classify_pod(pod("Failed", 1, failure("oom", "CUDA out of memory")), node_health(node()))
    assert v.kind == "application" and "out of memory" in v.message


def test_failure_message_after_log_lines_and_long_text():
    """FallbackToLogsOnError: the kubelet may hand over log lines before the JSON; a long error keeps its end."""
    text = "x" * 3000 + " device lost"
    msg = "epoch 1 ...\nTraceback ...\n" + failure(message=text, gpu="0")
    v = classify_pod(pod("Failed", 1, msg), None)
    assert v.kind == "infrastructure" and v.gpu == "0"
    assert v.message.endswith("device lost") and len(v.message) == DETAIL_CHARS + 3


def test_gpu_exit_code_without_message():
    v = classify_pod(pod("Failed", GPU_FAILURE_EXIT_CODE), None)
    assert v.kind == "infrastructure" and v.reason == "GPUFailure"


def test_hand_written_json_in_another_spelling_is_not_a_verdict():
    # an old spelling ({"kind": "gpu"}) is not our message: a crash with exit code 1 is an application failure
    v = classify_pod(
        pod("Failed", 1, '{"kind": "gpu", "reason": "Xid 48", "gpu": "GPU-abc"}'), node_health(node())
    )
    assert v.kind == "application" and v.reason == "ExitCode"


def test_plain_crash_is_application():
    v = classify_pod(pod("Failed", 1, "Traceback ...\nValueError: bad data"), node_health(node()))
    assert v.kind == "application" and v.reason == "ExitCode"


def test_oomkilled_is_application():
    v = classify_pod(pod("Failed", 137, reason="OOMKilled"), node_health(node()))
    assert v.kind == "application" and v.reason == "OOMKilled"


def test_failure_on_unhealthy_node_is_infrastructure():
    v = classify_pod(pod("Failed", 1), node_health(node(ready="False")))
    assert v.kind == "infrastructure" and v.reason == "NodeNotReady"


def test_running_pod_on_bad_node():
    for kw in (
        {"ready": "Unknown"},
        {"unschedulable": True},
        {"alloc": 7},
        {"taints": [{"key": "thinktune.io/gpu-unhealthy", "effect": "NoSchedule"}]},
    ):
        v = classify_pod(pod("Running"), node_health(node(**kw)))
        assert v is not None and v.kind == "infrastructure", kw


def test_running_pod_on_good_node_and_succeeded_pod():
    assert classify_pod(pod("Running"), node_health(node())) is None
    assert classify_pod(pod("Pending", node_name=None), None) is None
    assert classify_pod(pod("Succeeded", 0), node_health(node(ready="False"))) is None


def test_disruption_target():
    v = classify_pod(
        pod(
            "Running",
            conditions=[
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "drain",
                }
            ],
        ),
        None,
    )
    assert (
        v.kind == "infrastructure" and v.reason == "DisruptionTarget" and "EvictionByEvictionAPI" in v.message
    )


def test_evicted_pod_reason():
    v = classify_pod(pod("Failed", pod_reason="Evicted"), None)
    assert v.kind == "infrastructure" and v.reason == "PodEvicted"


def test_kep4680_unhealthy_device():
    v = classify_pod(
        pod(
            "Running",
            alloc_status=[
                {
                    "name": "nvidia.com/gpu",
                    "resources": [
                        {"resourceID": "GPU-1234", "health": "Unhealthy"},
                        {"resourceID": "GPU-5678", "health": "Healthy"},
                    ],
                }
            ],
        ),
        None,
    )
    assert v.kind == "infrastructure" and v.gpu == "GPU-1234"
