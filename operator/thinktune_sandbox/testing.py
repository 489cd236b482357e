"""Helpers for cluster tests and benchmarks of the operator on the sandbox control plane (like kopf.testing,
plus the sandbox specifics): run the operator as a real `kopf run` subprocess, add kwok GPU node pools,
create a bound workspace PVC, build FineTuneJob manifests, poll."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from thinktune import contract

T = TypeVar("T")

POOL_LABEL = "thinktune.io/test-pool"
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def termination_text(msg: contract.TerminationMessage) -> str:
    """What the kubelet would put in a pod's terminated state: the file that the workload's own writer
    (contract.write_termination_message) leaves, so tests feed the operator the real writer's output."""
    with tempfile.TemporaryDirectory() as d:
        path = contract.write_termination_message(msg, Path(d) / "termination-log")
        assert path is not None, "the termination message writer wrote nothing"
        return path.read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 - transient API errors while polling
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class OperatorProcess:
    """`python -m kopf run -A --standalone -m thinktune_operator.main` against a kubeconfig."""

    def __init__(
        self,
        kubeconfig: Path | str,
        log_path: Path | str,
        env: dict[str, str] | None = None,
        namespaces: list[str] | None = None,
    ) -> None:
        self.kubeconfig = str(kubeconfig)
        self.scope = [f"--namespace={n}" for n in namespaces] if namespaces else ["-A"]
        self.log_path = Path(log_path)
        self.metrics_port = free_port()
        self.extra_env = {
            "THINKTUNE_PROGRESS_SOURCE": "annotation",
            "THINKTUNE_RESYNC_SECONDS": "10",
            "THINKTUNE_PROGRESS_INTERVAL": "2",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: bool = True) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "THINKTUNE_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                *self.scope,
                "--standalone",
                "--verbose",
                "-m",
                "thinktune_operator.main",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        if wait:
            wait_for(
                "operator metrics endpoint", lambda: self.alive() and self.metrics_text() is not None, 60
            )
        return self

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(
                f"operator exited ({self.proc.returncode if self.proc else None}):\n{self.log_tail()}"
            )
        return True

    def metrics_text(self) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, as if the node died mid-reconcile."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Cluster:
    """kubectl-level helpers over a sandbox ControlPlane (anything with .kubectl(*args, input=, check=))."""

    def __init__(self, cp: Any) -> None:
        self.cp = cp

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return self.cp.kubectl(*args, input=input, check=check)

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(list(docs)))

    def create(self, *docs: dict[str, Any]) -> None:
        self.kubectl("create", "-f", "-", input=yaml.safe_dump_all(list(docs)))

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
        r = self.kubectl(*args, check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise RuntimeError(r.stderr)
        return json.loads(r.stdout)

    def list(self, kind: str, ns: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (
            ["-n", ns] if ns else ["-A"] if kind not in ("nodes", "pv") else []
        )
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)["items"]

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events", ns) if e["involvedObject"].get("name") == name]

    # ---- fixtures
    def gpu_pool(self, pool: str, n: int, gpus: int = 8) -> list[str]:
        names = [f"{pool}-{i}" for i in range(n)]
        docs = []
        for name in names:
            m = self.cp.gpu_node_manifest(name)
            m["metadata"]["labels"][POOL_LABEL] = pool
            m["metadata"]["labels"].pop(
                "thinktune.io/sandbox-node", None
            )  # not one of the fixture's own nodes
            for section in ("capacity", "allocatable"):
                m["status"][section]["nvidia.com/gpu"] = str(gpus)
            docs.append(m)
        self.apply(*docs)

        def ready() -> bool:
            nodes = self.list("nodes", selector=f"{POOL_LABEL}={pool}")
            return len(nodes) == n and all(
                any(c["type"] == "Ready" and c["status"] == "True" for c in x["status"].get("conditions", []))
                for x in nodes
            )

        wait_for(f"pool {pool} Ready", ready, 60)
        return names

    def delete_pool(self, pool: str) -> None:
        self.kubectl("delete", "nodes", "-l", f"{POOL_LABEL}={pool}", "--wait=false", check=False)

    def namespace(self, ns: str, workspace: str = "thinktune-workspace") -> None:
        """Namespace plus a bound workspace PVC (static hostPath PV, no storage class needed)."""
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"{ns}-{workspace}"},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": f"/tmp/{ns}-{workspace}"},
                    "claimRef": {"namespace": ns, "name": workspace},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": workspace, "namespace": ns},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": f"{ns}-{workspace}",
                    "resources": {"requests": {"storage": "10Gi"}},
                },
            },
        )
        wait_for(
            f"PVC {ns}/{workspace} Bound",
            lambda: (self.get("pvc", workspace, ns) or {}).get("status", {}).get("phase") == "Bound",
            60,
        )

    def worker_pods(self, ns: str, job: str) -> list[dict[str, Any]]:
        return [p for p in self.list("pods", ns, f"thinktune.io/job={job}")]

    def patch_status(self, kind: str, name: str, patch: dict[str, Any], ns: str | None = None) -> None:
        args = ["patch", kind, name, "--subresource=status", "--type=merge", "-p", json.dumps(patch)]
        if ns:
            args += ["-n", ns]
        self.kubectl(*args)

    def complete_pod(self, ns: str, name: str, message: contract.TerminationMessage) -> None:
        """The pod exits 0 with what the workload's writer leaves in the termination log (kwok runs no
        process): what a kubelet would report."""
        pod = self.get("pod", name, ns)
        assert pod is not None, f"pod {ns}/{name} not found"
        statuses = terminated_statuses(pod, 0, message)
        self.patch_status("pod", name, {"status": {"phase": "Succeeded", "containerStatuses": statuses}}, ns)


def terminated_statuses(
    pod: dict[str, Any], exit_code: int, message: contract.TerminationMessage
) -> list[dict[str, Any]]:
    """containerStatuses of a pod whose containers exited with `exit_code` and left `message` (through the
    workload's own writer) in their termination log, as a kubelet reports them."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "message": termination_text(message),
                    "startedAt": now,
                    "finishedAt": now,
                }
            },
        }
        for c in pod["spec"]["containers"]
    ]


def token_kubeconfig(admin_kubeconfig: Path | str, token: str, out: Path | str) -> Path:
    """A kubeconfig for the same cluster that authenticates with a ServiceAccount token (RBAC tests)."""
    cfg = yaml.safe_load(Path(admin_kubeconfig).read_text())
    cfg["users"] = [{"name": "sa", "user": {"token": token}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = "sa"
    Path(out).write_text(yaml.safe_dump(cfg))
    return Path(out)


def ftj(name: str, ns: str, pool: str | None, nodes: int = 1, gpus: int = 8, **spec: Any) -> dict[str, Any]:
    pod = {"tolerations": [KWOK_TOLERATION], "image": "ghcr.io/thinktune/trainer:0.1.0"}
    if pool:
        pod["nodeSelector"] = {POOL_LABEL: pool}
    s: dict[str, Any] = {
        "dataset": {"path": "datasets/crypto"},
        "numNodes": nodes,
        "resourcesPerNode": {"limits": {"nvidia.com/gpu": gpus}},
        "output": {"path": f"runs/{name}"},
        "pod": pod,
    }
    if nodes > 1:
        s["finetuning"] = {"strategy": "ddp"}
    s.update(spec)
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": s,
    }
