"""The sandbox pod runner without a cluster: the operator's real worker pods and ConfigMap translated into local
processes (paths, env, ports), real processes started and reported, a real TCP forwarder. The runner against a
real API server is tests/cluster/test_sandbox_pods.py."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from thinktune import contract
from thinktune.spec import Volume
from thinktune_operator.builders import finetunejob as B
from thinktune_operator.config import OperatorConfig
from thinktune_sandbox import controlplane
from thinktune_sandbox import podrunner as R

CFG = OperatorConfig()
WS = "/workspace/thinktune-workspace"


def gang(nodes: int = 2) -> tuple[list[dict], dict]:
    body = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "crypto", "namespace": "default", "uid": "u-1", "generation": 1},
        "spec": {
            "model": {"nameOrPath": "out/tiny-qwen3", "makeTiny": True},
            "datasetRef": {"name": "ds"},
            "numNodes": nodes,
            "resourcesPerNode": {"limits": {"nvidia.com/gpu": 1}},
            "output": {"path": "out/lora"},
        },
    }
    spec = B.parse_spec(body)
    ds = Volume(path="out/dataset")
    pods = B.worker_pods(body, spec, CFG, attempt=0, avoid=[], dataset=ds)
    for i, p in enumerate(pods):
        p["metadata"]["uid"] = f"pod-uid-{i}"
        p["spec"]["nodeName"] = f"kwok-gpu-{i}"
    cm = B.job_configmap(body, B.resolved_job(body, spec, CFG, ds), 0)
    return pods, cm


def lookups(tmp_path: Path, cm: dict) -> R.Lookups:
    """Lookups answered from the operator's real ConfigMap and a bound hostPath PV, as the API would."""
    look = R.Lookups(None, "default")
    look._cache[f"/api/v1/namespaces/default/configmaps/{cm['metadata']['name']}"] = cm
    look._cache["/api/v1/namespaces/default/persistentvolumeclaims/thinktune-workspace"] = {
        "spec": {"volumeName": "default-thinktune-workspace"},
        "status": {"phase": "Bound"},
    }
    look._cache["/api/v1/persistentvolumes/default-thinktune-workspace"] = {
        "spec": {"hostPath": {"path": str(tmp_path / "ws")}}
    }
    return look


def test_path_map_matches_whole_components_and_maps_back():
    pm = R.PathMap()
    pm.add("/tmp", "/h/tmp")
    pm.add("/workspace/ws", "/h/ws")
    assert pm.to_host("/tmp/hf") == "/h/tmp/hf"
    assert pm.to_host("/tmpfoo /xtmp/a") == "/tmpfoo /xtmp/a"
    assert (
        pm.to_host("path: /workspace/ws/out\nother: /workspace/wsx")
        == "path: /h/ws/out\nother: /workspace/wsx"
    )
    assert pm.to_pod('{"adapterPath": "/h/ws/out/lora"}') == '{"adapterPath": "/workspace/ws/out/lora"}'


def test_var_expansion_as_kubernetes_does():
    env = {"A": "1", "B": "x"}
    assert R.expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-x-$(C)-$(A)"


def test_operator_gang_becomes_local_processes_that_can_rendezvous(tmp_path):
    pods, cm = gang()
    look = lookups(tmp_path, cm)
    peers_by_uid = {
        p["metadata"]["uid"]: R.Peer(f"127.1.0.{i + 1}", R.allocate_host_ports([9400, 29500]))
        for i, p in enumerate(pods)
    }
    peers = {n: peers_by_uid[p["metadata"]["uid"]] for p in pods for n in R.pod_dns_names(p)}
    plans = [
        R.plan_pod(
            p, tmp_path / p["metadata"]["name"], peers_by_uid[p["metadata"]["uid"]], peers, look, "sbx:"
        )
        for p in pods
    ]
    w0 = peers_by_uid["pod-uid-0"]
    for rank, (pod, plan) in enumerate(zip(pods, plans, strict=True)):
        (c,) = plan.containers
        env = c.env
        own = peers_by_uid[pod["metadata"]["uid"]]
        # rendezvous: both ranks reach rank 0's TCP store through its address and host port
        assert env[contract.ENV_MASTER_ADDR] == w0.ip
        assert env[contract.ENV_MASTER_PORT] == str(w0.host_ports[29500])
        # each process binds its own metrics port; the downward API and the contract env are there
        assert env[contract.ENV_METRICS_PORT] == str(own.host_ports[9400])
        assert env[contract.ENV_NODE_RANK] == str(rank) and env[contract.ENV_NNODES] == "2"
        assert env[contract.ENV_POD_NAME] == pod["metadata"]["name"]
        assert env[contract.ENV_NODE_NAME] == f"kwok-gpu-{rank}"
        assert env[contract.ENV_TERMINATION_LOG] == str(c.termination_file)
        assert c.termination_file.parent == tmp_path / pod["metadata"]["name"]
        assert env["HOME"] == str(tmp_path / pod["metadata"]["name"] / "volumes" / "tmp")
        assert env[R.POD_ENV_MARKER] == f"sbx:{pod['metadata']['uid']}/trainer"
        assert Path(env["PATH"].split(":")[0]) == Path(sys.executable).parent
        # the command reads the materialised ConfigMap, whose in-pod paths now name the workspace's host dir
        assert c.argv[:3] == ["thinktune", "train", "-f"]
        job_file = Path(c.argv[3])
        assert job_file in plan.files
        job = yaml.safe_load(plan.files[job_file])
        assert job["spec"]["output"]["path"] == str(tmp_path / "ws" / "out" / "lora")
        assert job["spec"]["dataset"]["path"] == str(tmp_path / "ws" / "out" / "dataset")
        assert job["spec"]["model"]["nameOrPath"] == str(tmp_path / "ws" / "out" / "tiny-qwen3")
        assert WS not in plan.files[job_file]
        assert (tmp_path / "ws") in plan.dirs


def test_missing_configmap_keeps_the_pod_pending_with_a_reason(tmp_path):
    pods, cm = gang(1)
    look = lookups(tmp_path, cm)
    look._cache[f"/api/v1/namespaces/default/configmaps/{cm['metadata']['name']}"] = None
    with pytest.raises(R.PodConfigError, match=f'configmap "{cm["metadata"]["name"]}" not found'):
        R.plan_pod(pods[0], tmp_path / "p", R.Peer("127.1.0.1", {9400: 1, 29500: 2}), {}, look)


def _plan(tmp_path: Path, code: str, marker: str) -> R.ContainerPlan:
    return R.ContainerPlan(
        name="c",
        argv=[sys.executable, "-c", code],
        env={**R.base_env(), R.POD_ENV_MARKER: marker},
        cwd=tmp_path,
        log=tmp_path / "c.log",
        termination_file=tmp_path / "termination-log",
        fallback_to_logs=True,
        image="img",
        marker=marker,
    )


def _wait(rc: R.RunningContainer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not rc.poll():
        assert time.monotonic() < deadline, "process did not exit"
        time.sleep(0.05)


def test_exit_code_and_the_real_termination_message_reach_the_container_status(tmp_path):
    """The workload's own writer (contract.write_termination_message) in a real process, read back as the
    operator reads it (contract.read_termination_message), with host paths mapped back to pod paths."""
    pm = R.PathMap()
    pm.add("/workspace/ws", tmp_path / "ws")
    code = (
        "import os, sys; from thinktune import contract; "
        "contract.write_termination_message(contract.FailureMessage(reason='GPUFailure', category='gpu_failure', "
        f"exit_code=75, message='ECC error; see {tmp_path / 'ws'}/out/log'), os.environ['TL']); sys.exit(75)"
    )
    plan = _plan(tmp_path, code, "t:1/c")
    plan.env["TL"] = str(plan.termination_file)
    rc = R.start_container(plan)
    _wait(rc)
    st = R.container_status(rc, pm)
    term = st["state"]["terminated"]
    assert term["exitCode"] == 75 and term["reason"] == "Error"
    msg = contract.read_termination_message(term["message"])
    assert isinstance(msg, contract.FailureMessage) and msg.exit_code == 75
    assert msg.message == "ECC error; see /workspace/ws/out/log"


def test_sigkill_is_128_plus_signal_and_takes_the_containers_other_processes(tmp_path):
    marker = f"t:{time.time_ns()}/c"
    # the child starts its own session, as torchrun's workers do: only the env marker ties it to the container
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
        "print('ready', flush=True); time.sleep(120)"
    )
    rc = R.start_container(_plan(tmp_path, code, marker))
    deadline = time.monotonic() + 30
    while len(R.processes_with_marker(marker)) < 2:
        assert time.monotonic() < deadline, "child did not start"
        time.sleep(0.05)
    child = [p for p in R.processes_with_marker(marker) if p != rc.proc.pid][0]
    rc.proc.send_signal(signal.SIGKILL)
    _wait(rc)
    assert rc.exit_code == 137 and rc.signal == signal.SIGKILL
    term = R.container_status(rc, R.PathMap())["state"]["terminated"]
    assert term["exitCode"] == 137 and term["signal"] == 9
    deadline = time.monotonic() + 10
    while R.processes_with_marker(marker):
        assert time.monotonic() < deadline, f"child {child} survived its container"
        time.sleep(0.05)


def test_fallback_to_logs_when_the_process_wrote_no_message(tmp_path):
    rc = R.start_container(_plan(tmp_path, "import sys; print('boom: bad config'); sys.exit(3)", "t:2/c"))
    _wait(rc)
    term = R.container_status(rc, R.PathMap())["state"]["terminated"]
    assert term["exitCode"] == 3 and "boom: bad config" in term["message"]


def test_a_missing_entrypoint_is_a_start_error(tmp_path):
    plan = _plan(tmp_path, "", "t:3/c")
    plan.argv = ["/nonexistent/thinktune", "train"]
    rc = R.start_container(plan)
    term = R.container_status(rc, R.PathMap())["state"]["terminated"]
    assert (
        term["reason"] == "StartError"
        and term["exitCode"] == 128
        and "/nonexistent/thinktune" in term["message"]
    )


def test_forwarder_makes_the_pod_reachable_at_its_own_address():
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen()
    port = R.free_port_block(1)
    fwd = R.Forwarder("127.1.0.77", port, target.getsockname()[1])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.1.0.77", port), timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "forwarder did not listen"
                time.sleep(0.05)
        server, _ = target.accept()
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        server.sendall(b"pong")
        assert client.recv(4) == b"pong"
        client.close()
        server.close()
    finally:
        fwd.close()
        target.close()


def test_consecutive_container_ports_stay_consecutive():
    ports = R.allocate_host_ports([9400, 9401, 9402, 29500])
    assert ports[9401] == ports[9400] + 1 and ports[9402] == ports[9400] + 2
    assert len(set(ports.values())) == 4


def test_host_port_annotations_name_the_scrape_address():
    pods, _ = gang(1)
    ann = R.host_port_annotations(pods[0], {9400: 40001, 29500: 40002})
    assert json.loads(ann[R.HOST_PORTS_ANNOTATION]) == {"9400": 40001, "29500": 40002}
    assert ann[R.SCRAPE_ADDRESS_ANNOTATION] == "127.0.0.1:40001"


def test_constants_shared_with_the_control_plane_agree():
    assert controlplane.RUNNER_NODE_LABEL == R.RUNNER_NODE_LABEL
    assert controlplane.PODRUNNER_READY_FILE == R.READY_FILE


def test_runner_nodes_carry_no_kwok_taint_and_kwok_gets_no_pod_stages(tmp_path):
    cp = controlplane.ControlPlane(tmp_path, run_pods=True)
    node = cp.gpu_node_manifest("n0")
    assert node["metadata"]["labels"][R.RUNNER_NODE_LABEL] == "true" and node["spec"]["taints"] == []
    assert cp.kwok_stages() and not any(s.startswith("pod/") for s in cp.kwok_stages())
    plain = controlplane.ControlPlane(tmp_path / "plain")
    assert plain.gpu_node_manifest("n0")["spec"]["taints"] == [controlplane.KWOK_TAINT]
    assert any(s.startswith("pod/") for s in plain.kwok_stages())


def test_second_singleton_is_refused_while_the_first_lives(tmp_path):
    """The flock is held by the child itself: a second start fails, and the lock frees when the child exits."""
    cp = controlplane.ControlPlane(tmp_path)
    cp.log_dir.mkdir(parents=True)
    cp._state = controlplane.SandboxState(state_dir=str(tmp_path), bin_dir=str(tmp_path))
    cp._spawn("operator", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert cp.locked("operator")
        with pytest.raises(controlplane.ControlPlaneError, match="another operator already runs"):
            cp._spawn("operator", [sys.executable, "-c", "pass"])
    finally:
        cp._children["operator"].kill()
        cp._children["operator"].wait()
    assert not cp.locked("operator")
    # logs are appended: both starts are in the one log
    assert (cp.log_dir / "operator.log").read_text().count("===== ") == 1


def test_logs_rotate_when_large(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"x" * (controlplane.LOG_ROTATE_BYTES + 1))
    controlplane.rotate_log(log)
    assert not log.exists() and (tmp_path / "x.log.1").stat().st_size == controlplane.LOG_ROTATE_BYTES + 1
    log.write_text("small")
    controlplane.rotate_log(log)
    assert log.read_text() == "small"


def test_runner_module_starts_without_the_kubernetes_client():
    """The runner imports only the standard library and yaml (fast start on a busy machine)."""
    code = (
        "import sys, thinktune_sandbox.podrunner; print('kubernetes' in sys.modules, 'kopf' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
