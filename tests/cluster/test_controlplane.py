"""The sandbox control plane behaves like a real cluster: real scheduler, real node lifecycle, kwok chaos."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from thinktune_sandbox import (
    GPU_RESOURCE,
    KWOK_TOLERATION,
    NODE_NOT_READY_LABEL,
    POD_FAILED_EXIT_CODE_ANNOTATION,
    POD_FAILED_LABEL,
    ControlPlane,
)
from thinktune_sandbox.cli import app as sandbox_app
from typer.testing import CliRunner

pytestmark = pytest.mark.cluster


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def get_json(cp: ControlPlane, *args: str) -> dict:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def gpu_pod(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "thinktune-test"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [KWOK_TOLERATION],
            "containers": [
                {
                    "name": "trainer",
                    "image": "thinktune/trainer:test",
                    "resources": {"limits": {GPU_RESOURCE: str(gpus)}, "requests": {GPU_RESOURCE: str(gpus)}},
                }
            ],
        },
    }


def apply(cp: ControlPlane, obj: dict) -> None:
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def pod(cp: ControlPlane, name: str) -> dict:
    return get_json(cp, "pod", name, "-n", "default")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def node_ready(cp: ControlPlane, name: str) -> str:
    node = get_json(cp, "node", name)
    conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
    return conds.get("Ready", "Unknown")


def test_server_and_client_report_the_built_release(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    server, client = versions["serverVersion"], versions["clientVersion"]
    # ldflags must reach both version packages, or this would read v0.0.0-master.
    assert server["gitVersion"].startswith("v1.35."), server
    assert (server["major"], server["minor"]) == ("1", "35")
    assert client["gitVersion"] == server["gitVersion"], versions


def test_gpu_nodes_are_ready_with_gpu_allocatable(control_plane: ControlPlane) -> None:
    nodes = get_json(control_plane, "nodes", "-l", "thinktune.io/sandbox-node=true")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(control_plane.node_names) <= set(by_name)
    for name in control_plane.node_names:
        node = by_name[name]
        assert node_ready(control_plane, name) == "True"
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["status"]["capacity"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H200"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_status_is_visible_from_another_process_view(control_plane: ControlPlane) -> None:
    # A fresh object on the same state dir (what `thinktune sandbox status` does) sees the running cluster.
    st = ControlPlane(control_plane.state_dir, bin_dir=control_plane.bin_dir).status()
    assert st.running, st
    assert {n["name"] for n in st.nodes} >= set(control_plane.node_names)

    result = CliRunner().invoke(sandbox_app, ["status", "--state-dir", str(control_plane.state_dir)])
    assert result.exit_code == 0, result.output
    assert f"export KUBECONFIG={control_plane.kubeconfig}" in result.output.replace("\n", "")


def test_gpu_pod_is_scheduled_by_the_real_scheduler_and_runs(control_plane: ControlPlane) -> None:
    name = unique("gpu4")
    apply(control_plane, gpu_pod(name, gpus=4))
    try:
        running = wait_for(
            f"pod {name} Running",
            lambda: (p := pod(control_plane, name))["status"].get("phase") == "Running" and p,
        )
        assert running["spec"]["nodeName"] in control_plane.node_names
        conds = {c["type"]: c["status"] for c in running["status"]["conditions"]}
        assert conds["PodScheduled"] == "True" and conds["Ready"] == "True"
        assert running["status"]["containerStatuses"][0]["state"].get("running") is not None
    finally:
        control_plane.kubectl("delete", "pod", name, "--wait=false", check=False)


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(control_plane: ControlPlane) -> None:
    # Proves the scheduler counts the extended resource rather than binding blindly.
    name = unique("gpu9")
    apply(control_plane, gpu_pod(name, gpus=9))
    try:

        def unschedulable() -> bool:
            conds = pod(control_plane, name)["status"].get("conditions", [])
            return any(
                c["type"] == "PodScheduled"
                and c.get("reason") == "Unschedulable"
                and "nvidia.com/gpu" in c.get("message", "")
                for c in conds
            )

        wait_for(
            f"pod {name} to be Unschedulable for insufficient nvidia.com/gpu", unschedulable, timeout_s=30
        )
        assert pod(control_plane, name)["status"]["phase"] == "Pending"
    finally:
        control_plane.kubectl("delete", "pod", name, "--wait=false", check=False)


def test_node_not_ready_chaos_label_turns_node_not_ready(control_plane: ControlPlane) -> None:
    # A dedicated node, so the shared ones stay Ready for the other tests.
    name = unique("kwok-gpu-chaos")
    apply(control_plane, control_plane.gpu_node_manifest(name))
    try:
        wait_for(f"node {name} Ready", lambda: node_ready(control_plane, name) == "True")
        control_plane.kubectl(
            "annotate",
            "node",
            name,
            f"{NODE_NOT_READY_LABEL}/reason=GPUXidError",
            f"{NODE_NOT_READY_LABEL}/message=Xid 79: GPU has fallen off the bus",
        )
        control_plane.kubectl("label", "node", name, f"{NODE_NOT_READY_LABEL}=true")
        wait_for(f"node {name} NotReady", lambda: node_ready(control_plane, name) == "False")
        ready = next(
            c for c in get_json(control_plane, "node", name)["status"]["conditions"] if c["type"] == "Ready"
        )
        assert ready["reason"] == "GPUXidError"
        # The node-lifecycle controller in kube-controller-manager reacts with the not-ready taint.
        wait_for(
            f"node {name} tainted node.kubernetes.io/not-ready",
            lambda: any(
                t["key"] == "node.kubernetes.io/not-ready"
                for t in get_json(control_plane, "node", name)["spec"].get("taints", [])
            ),
        )
    finally:
        control_plane.kubectl("delete", "node", name, "--wait=false", check=False)


def test_pod_chaos_label_fails_the_pod_with_the_annotated_exit_code(control_plane: ControlPlane) -> None:
    name = unique("gpu-fail")
    apply(control_plane, gpu_pod(name, gpus=2))
    try:
        wait_for(f"pod {name} Running", lambda: pod(control_plane, name)["status"].get("phase") == "Running")
        control_plane.kubectl("annotate", "pod", name, f"{POD_FAILED_EXIT_CODE_ANNOTATION}=137")
        control_plane.kubectl("label", "pod", name, f"{POD_FAILED_LABEL}=true")
        failed = wait_for(
            f"pod {name} Failed",
            lambda: (p := pod(control_plane, name))["status"].get("phase") == "Failed" and p,
        )
        terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 137
    finally:
        control_plane.kubectl("delete", "pod", name, "--wait=false", check=False)
