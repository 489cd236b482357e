"""A real Kubernetes control plane on 127.0.0.1 for tests and local development.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream binaries (built by
tools/build-binaries.sh); kwok plays the kubelets, so nodes carry fake `nvidia.com/gpu` capacity and pods
"run" without a container engine. Components are detached subprocesses (own session), so `up` can return
while they keep running and `down`/`status` can find them again through the state dir.
"""

from __future__ import annotations

import dataclasses
import fcntl
import http.client
import importlib.util
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .pki import ADMIN_USER, PkiFiles, ensure_pki, pki_files
from .state import ProcessRecord, SandboxState, default_bin_dir, default_state_dir, free_port

CORE_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KUBE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")

# Nodes that kwok manages carry this annotation; pods that should land on them tolerate this taint.
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
SANDBOX_NODE_LABEL = "thinktune.io/sandbox-node"
GPU_RESOURCE = "nvidia.com/gpu"

# Chaos knobs (kwok stage labels/annotations), for tests that inject failures.
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
POD_FAILED_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
POD_FAILED_EXIT_CODE_ANNOTATION = "pod-container-running-failed.stage.kwok.x-k8s.io/exit-code"

# Stages from kwok's module. The fast pod-complete stage is deliberately absent: it would turn Job-owned
# pods Succeeded at once, and simulated training pods must keep running until a test decides otherwise.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-delete.yaml",
    "node/chaos/node-not-ready.yaml",
    "pod/chaos/pod-container-running-failed.yaml",
)

# kwok renews node leases every duration/4; the node-lifecycle controller declares a node unreachable once
# the lease is older than the grace period. 8 s lease (2 s renewals) and 10 s grace keep NotReady quick
# when kwok is stopped or a node deleted, without flapping on a busy 2-core machine.
NODE_LEASE_SECONDS = 8
NODE_MONITOR_GRACE = "10s"
NODE_MONITOR_PERIOD = "1s"

SERVICE_CIDR = "10.96.0.0/12"
# Nodes whose pods thinktune_sandbox.podrunner runs (kept here, not imported from it: `python -m` of a module that
# the package already imported warns).
RUNNER_NODE_LABEL = "thinktune.io/sandbox-runner"
PODRUNNER_READY_FILE = "podrunner.ready"

# Component logs are appended across restarts; at start a log over LOG_ROTATE_BYTES becomes <name>.log.1 (the
# older ones shift up to LOG_KEEP), so a long-lived sandbox keeps its history without growing without bound.
LOG_ROTATE_BYTES = 20 * 1024 * 1024
LOG_KEEP = 3
# At most one of these per state dir: each holds an flock on <state-dir>/<name>.lock for as long as it lives.
SINGLETONS = ("operator", "podrunner")
REPO_ROOT = Path(__file__).resolve().parents[2]


class ControlPlaneError(RuntimeError):
    pass


def rotate_log(log: Path) -> None:
    """<name>.log over LOG_ROTATE_BYTES -> <name>.log.1 (.1 -> .2, ...; at most LOG_KEEP old logs)."""
    try:
        if log.stat().st_size <= LOG_ROTATE_BYTES:
            return
    except OSError:
        return
    for i in range(LOG_KEEP - 1, 0, -1):
        older = log.with_name(f"{log.name}.{i}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{i + 1}"))
    log.replace(log.with_name(f"{log.name}.1"))


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class NodeSpec:
    """Resources of each simulated GPU node (an H200 box by default)."""

    gpus: int = 8
    cpu: str = "96"
    memory: str = "1536Gi"
    pods: str = "110"
    gpu_product: str = "NVIDIA-H200"
    gpu_memory_mib: int = 143771
    extra_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class SandboxStatus:
    state_dir: Path
    kubeconfig: Path | None
    components: dict[str, bool]
    apiserver_ready: bool
    nodes: list[dict[str, str]]

    @property
    def running(self) -> bool:
        """The cluster itself runs; the optional operator process does not count."""
        core = [alive for name, alive in self.components.items() if name in CORE_COMPONENTS]
        return len(core) == len(CORE_COMPONENTS) and all(core) and self.apiserver_ready


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, with N fake GPU nodes.

    >>> cp = ControlPlane(state_dir, nodes=2, gpus_per_node=8).up()
    >>> cp.kubectl("get", "nodes")
    >>> cp.down()
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        nodes: int = 2,
        gpus_per_node: int = 8,
        *,
        bin_dir: Path | str | None = None,
        crds_dir: Path | str | None = None,
        node_spec: NodeSpec | None = None,
        ready_timeout_s: float = 60.0,
        run_pods: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.crds_dir = Path(crds_dir) if crds_dir else REPO_ROOT / "crds"
        self.nodes = nodes
        self.node_spec = dataclasses.replace(node_spec or NodeSpec(), gpus=gpus_per_node)
        self.ready_timeout_s = ready_timeout_s
        # Popen handles for the processes this Python process started, so they get reaped (no zombies).
        self._children: dict[str, subprocess.Popen] = {}
        self._state: SandboxState | None = SandboxState.load(self.state_dir)
        # run_pods: pods on the sandbox's nodes run as local processes (thinktune_sandbox.podrunner), the nodes
        # carry no kwok taint (nothing about them is fake but the GPUs) and kwok keeps only their heartbeats
        # (a running sandbox keeps the mode it was started with; `up` of a fresh one takes the requested mode)
        self._want_run_pods = run_pods
        self.run_pods = self._state.run_pods if self._state is not None else run_pods

    # ----------------------------------------------------------------------------------------- paths

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki(self) -> PkiFiles:
        return pki_files(self.state_dir / "pki")

    @property
    def node_names(self) -> list[str]:
        return [f"kwok-gpu-{i}" for i in range(self.nodes)]

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def env(self) -> dict[str, str]:
        """Environment for clients (kubectl, kopf, helm) pointed at this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    # ----------------------------------------------------------------------------------------- up

    def up(self) -> ControlPlane:
        """Start everything and wait until nodes are Ready; a no-op if this state dir already runs one."""
        current = self.status()
        if current.running:
            assert self._state is not None
            self.run_pods = self._state.run_pods
            return self
        if current.components:
            # Half-alive leftovers (e.g. a crashed run): start clean rather than guess.
            self.down()
        self.run_pods = self._want_run_pods
        self._check_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        # Each `up` is a fresh cluster: stale objects from a previous run would confuse tests.
        shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
        pki = ensure_pki(self.state_dir / "pki")
        ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
        self._state = SandboxState(
            state_dir=str(self.state_dir),
            bin_dir=str(self.bin_dir),
            ports=ports,
            nodes=self.nodes,
            gpus_per_node=self.node_spec.gpus,
            kubeconfig=str(self.kubeconfig),
            started_at=time.time(),
            run_pods=self.run_pods,
        )
        self._state.save()
        try:
            self._start_etcd(ports)
            self._wait_http("etcd", f"http://127.0.0.1:{ports['etcd']}/health", tls=False)
            self._start_apiserver(ports, pki)
            self._wait_http("kube-apiserver", f"https://127.0.0.1:{ports['apiserver']}/readyz")
            self._write_kubeconfig(ports["apiserver"], pki)
            self._start_controller_manager(ports, pki)
            self._start_scheduler(ports, pki)
            self._start_kwok(ports)
            self._wait_http("kube-controller-manager", f"https://127.0.0.1:{ports['kcm']}/healthz")
            self._wait_http("kube-scheduler", f"https://127.0.0.1:{ports['scheduler']}/healthz")
            self._wait_http("kwok", f"http://127.0.0.1:{ports['kwok']}/healthz", tls=False)
            self.create_gpu_nodes()
            self.install_crds()
            self._wait_for_default_service_account()
            self.create_workspace()
            self.wait_nodes_ready()
            if self.run_pods:
                self.start_podrunner()
        except BaseException:
            self.down()
            raise
        return self

    def _check_binaries(self) -> None:
        missing = [b for b in KUBE_BINARIES if not os.access(self.binary(b), os.X_OK)]
        if missing:
            raise ControlPlaneError(
                f"missing binaries in {self.bin_dir}: {', '.join(missing)}; build them with "
                f"tools/build-binaries.sh (or set THINKTUNE_BIN_DIR)"
            )
        stages = self.bin_dir / "kwok-stages"
        absent = [s for s in KWOK_STAGES if not (stages / s).is_file()]
        if absent:
            raise ControlPlaneError(
                f"kwok stage files missing under {stages}: {absent}; rerun tools/build-binaries.sh"
            )

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        assert self._state is not None
        log = self.log_dir / f"{name}.log"
        rotate_log(log)
        lock_fd = self._lock(name) if name in SINGLETONS else None
        try:
            with open(log, "ab") as out:
                out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.state_dir,
                    env=env,
                    start_new_session=True,
                    # the child inherits the lock: it is held exactly as long as the child lives
                    pass_fds=(lock_fd,) if lock_fd is not None else (),
                )
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        self._children[name] = proc
        self._state.processes = [p for p in self._state.processes if p.name != name]
        self._state.processes.append(
            ProcessRecord(name=name, pid=proc.pid, binary=str(argv[0]), log=str(log))
        )
        self._state.save()

    def _start_etcd(self, ports: dict[str, int]) -> None:
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(self.binary("etcd")),
                "--name=node0",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=node0={peer}",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=2147483648",
                # A test cluster does not need durability; skipping fsync keeps it fast on shared disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, ports: dict[str, int], pki: PkiFiles) -> None:
        self._spawn(
            "kube-apiserver",
            [
                str(self.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--etcd-prefix=/registry",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki.admin_cert}",
                f"--tls-private-key-file={pki.admin_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.admin_key}",
                f"--service-account-signing-key-file={pki.admin_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                # No kube-proxy/endpoints for the apiserver itself: the "kubernetes" Service is not needed.
                "--endpoint-reconciler-type=none",
                f"--proxy-client-cert-file={pki.admin_cert}",
                f"--proxy-client-key-file={pki.admin_key}",
                f"--requestheader-client-ca-file={pki.ca_cert}",
                # Same CA as client certs, so only the proxy identity may set X-Remote-* headers.
                f"--requestheader-allowed-names={ADMIN_USER}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--cert-dir={self.state_dir / 'pki' / 'apiserver'}",
                "--v=1",
            ],
        )

    def _start_controller_manager(self, ports: dict[str, int], pki: PkiFiles) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binary("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                f"--tls-cert-file={pki.admin_cert}",
                f"--tls-private-key-file={pki.admin_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.admin_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # A single controller-manager: skipping the leader lease saves ~15 s at start.
                "--leader-elect=false",
                f"--node-monitor-period={NODE_MONITOR_PERIOD}",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                "--v=1",
            ],
        )

    def _start_scheduler(self, ports: dict[str, int], pki: PkiFiles) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.binary("kube-scheduler")),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                f"--tls-cert-file={pki.admin_cert}",
                f"--tls-private-key-file={pki.admin_key}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _lock(self, name: str) -> int:
        """Take <state-dir>/<name>.lock or say who holds it (one operator, one pod runner per sandbox)."""
        path = self.state_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ControlPlaneError(
                f"another {name} already runs for {self.state_dir} (it holds {path}); "
                "`thinktune sandbox down` stops it"
            ) from None
        return fd

    def locked(self, name: str) -> bool:
        path = self.state_dir / f"{name}.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def kwok_stages(self) -> list[str]:
        """All stages in kwok mode; node stages only when the pod runner owns the pods."""
        return [s for s in KWOK_STAGES if not (self.run_pods and s.startswith("pod/"))]

    def _start_kwok(self, ports: dict[str, int]) -> None:
        stages = self.bin_dir / "kwok-stages"
        argv = [
            str(self.binary("kwok")),
            f"--kubeconfig={self.kubeconfig}",
            # Only our annotated nodes: a developer's real nodes (if any shared this apiserver) stay untouched.
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ]
        argv += [f"--config={stages / s}" for s in self.kwok_stages()]
        self._spawn("kwok", argv)

    # ----------------------------------------------------------------------------------------- readiness

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return ctx

    def _probe(self, url: str, tls: bool, timeout: float = 2.0) -> tuple[int, str]:
        scheme, rest = url.split("://", 1)
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        conn: http.client.HTTPConnection
        if tls:
            conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", "/" + path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def _wait_http(self, name: str, url: str, tls: bool = True) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer yet"
        log = self.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            proc = self._children.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode} before becoming ready; see {log}, "
                    f"last lines:\n{tail(log)}"
                )
            try:
                code, body = self._probe(url, tls)
                if code == 200:
                    return
                last = f"HTTP {code}: {body[-300:]}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{name} did not become ready in {self.ready_timeout_s:.0f} s ({url}: {last}); see {log}, "
            f"last lines:\n{tail(log)}"
        )

    def _poll(self, what: str, check, timeout_s: float | None = None, interval_s: float = 0.5):
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"timed out after {timeout_s or self.ready_timeout_s:.0f} s waiting for {what}"
                )
            time.sleep(interval_s)

    def _wait_for_default_service_account(self) -> None:
        # The ServiceAccount admission plugin rejects pods until the controller-manager creates "default".
        self._poll(
            "serviceaccount default/default (created by kube-controller-manager)",
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
        )

    def wait_nodes_ready(self, timeout_s: float | None = None) -> None:
        def all_ready() -> bool:
            nodes = self._node_conditions()
            return len(nodes) >= self.nodes and all(n["Ready"] == "True" for n in nodes)

        self._poll(
            f"{self.nodes} kwok nodes to be Ready (kwok log: {self.log_dir / 'kwok.log'})",
            all_ready,
            timeout_s,
        )

    def _node_conditions(self) -> list[dict[str, str]]:
        res = self.kubectl("get", "nodes", "-l", SANDBOX_NODE_LABEL, "-o", "yaml", check=False)
        if res.returncode != 0:
            return []
        out = []
        for item in yaml.safe_load(res.stdout).get("items", []):
            conds = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", []) or []}
            alloc = item.get("status", {}).get("allocatable", {}) or {}
            out.append(
                {
                    "name": item["metadata"]["name"],
                    "Ready": conds.get("Ready", "Unknown"),
                    GPU_RESOURCE: str(alloc.get(GPU_RESOURCE, "0")),
                }
            )
        return out

    # ----------------------------------------------------------------------------------------- objects

    def _write_kubeconfig(self, port: int, pki: PkiFiles) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "thinktune-sandbox",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority": str(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "thinktune-admin",
                    "user": {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)},
                }
            ],
            "contexts": [
                {
                    "name": "thinktune-sandbox",
                    "context": {
                        "cluster": "thinktune-sandbox",
                        "user": "thinktune-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "thinktune-sandbox",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def gpu_node_manifest(self, name: str) -> dict:
        spec = self.node_spec
        resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, GPU_RESOURCE: str(spec.gpus)}
        runner = {RUNNER_NODE_LABEL: "true"} if self.run_pods else {}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    "node-role.kubernetes.io/gpu-worker": "",
                    "type": "kwok",
                    SANDBOX_NODE_LABEL: "true",
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": spec.gpu_product,
                    "nvidia.com/gpu.count": str(spec.gpus),
                    "nvidia.com/gpu.memory": str(spec.gpu_memory_mib),
                    **runner,
                    **spec.extra_labels,
                },
            },
            # the taint keeps pods that expect a real kubelet off simulated nodes; runner nodes run them for real
            "spec": {"taints": [] if self.run_pods else [KWOK_TAINT]},
            # kwok's node-initialize stage keeps capacity/allocatable that the node already declares.
            "status": {"capacity": resources, "allocatable": resources},
        }

    def create_gpu_nodes(self) -> None:
        docs = [self.gpu_node_manifest(n) for n in self.node_names]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def install_crds(self) -> list[Path]:
        """Apply every YAML in crds/ (if any) and wait until the API server serves them."""
        if not self.crds_dir.is_dir():
            return []
        files = sorted(p for p in self.crds_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            return []
        args = ["apply", "--server-side", "--force-conflicts"]
        for f in files:
            args += ["-f", str(f)]
        try:
            self.kubectl(*args)
        except ControlPlaneError as exc:
            raise ControlPlaneError(f"kube-apiserver rejected the CRDs in {self.crds_dir}: {exc}") from exc
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        return files

    def wait_for_garbage_collection(self, timeout: float = 120.0) -> float:
        """Wait until the garbage collector deletes the children of a thinktune.io object; returns the seconds.

        kube-controller-manager learns about CRDs installed after it started from discovery, which it re-reads
        every 30 s or so; until then it logs "unable to get REST mapping for thinktune.io/v1alpha1/..." and a
        deleted CR's pods, ConfigMaps and Services stay (seen: a chaos soak run first in a session reported
        them as orphans 30 s after the deletion). A probe CR with one owned ConfigMap, deleted at once: when the
        ConfigMap is gone, the collector handles thinktune.io kinds."""
        if not self.crds_dir.is_dir():
            return 0.0
        t0 = time.monotonic()
        ns = "thinktune-gc-probe"
        self.kubectl("create", "namespace", ns, check=False)
        cr = {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "DatasetBuild",
            "metadata": {"name": "gc-probe", "namespace": ns},
            "spec": {"source": {"path": "probe"}, "output": {"path": "probe-out"}},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(cr))
        uid = self.kubectl(
            "get", "datasetbuild", "gc-probe", "-n", ns, "-o", "jsonpath={.metadata.uid}"
        ).stdout
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "gc-probe-child",
                "namespace": ns,
                "ownerReferences": [
                    {
                        "apiVersion": "thinktune.io/v1alpha1",
                        "kind": "DatasetBuild",
                        "name": "gc-probe",
                        "uid": uid,
                    }
                ],
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(child))
        self.kubectl("delete", "datasetbuild", "gc-probe", "-n", ns, "--wait=false")
        while time.monotonic() - t0 < timeout:
            res = self.kubectl(
                "get", "configmap", "gc-probe-child", "-n", ns, "--ignore-not-found", "-o", "name"
            )
            if not res.stdout.strip():
                self.kubectl("delete", "namespace", ns, "--wait=false", check=False)
                return time.monotonic() - t0
            time.sleep(0.5)
        raise ControlPlaneError(
            f"the garbage collector did not delete a thinktune.io object's child within {timeout:.0f} s "
            f"(see {self.state_dir}/logs/kube-controller-manager.log)"
        )

    def create_workspace(self, namespace: str = "default", name: str = "thinktune-workspace") -> None:
        """The PVC the operator mounts by default (spec.*.pvc empty), bound to a static hostPath PV: there is no
        storage provisioner in the sandbox, and without the claim example CRs would stay Pending."""
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-{name}"},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(self.state_dir / "workspace" / namespace)},
                "claimRef": {"namespace": namespace, "name": name},
            },
        }
        (self.state_dir / "workspace" / namespace).mkdir(parents=True, exist_ok=True)
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv["metadata"]["name"],
                "resources": {"requests": {"storage": "10Gi"}},
            },
        }
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]})
        )

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the sandbox's kubectl against this control plane; raises with stderr when `check` fails."""
        argv = [str(self.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed with exit code {res.returncode}:\n{res.stderr.strip()}"
            )
        return res

    # ----------------------------------------------------------------------------------------- operator

    def start_operator(self, module: str = "thinktune_operator.main") -> ProcessRecord | None:
        """Run the kopf operator in the background against this cluster; None if `module` is not importable.

        At most one per state dir: when one already runs (it holds <state-dir>/operator.lock) its record is
        returned and nothing is started."""
        if self._state is None:
            raise ControlPlaneError("the control plane is not up; call up() first")
        running = self._state.record("operator")
        if self.locked("operator") and running is not None and running.alive():
            return running
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return None
        # --standalone: no peering objects (no CRD for them in a bare cluster); -A: watch all namespaces.
        argv = [sys.executable, "-m", "kopf", "run", "-A", "--standalone", "--verbose", "-m", module]
        port = self._state.ports.setdefault("operator-metrics", free_port())
        env = {
            # with the pod runner the trainer pods serve /metrics at podIP:metricsPort; kwok pods run no
            # process, so there progress comes from the annotation a simulated trainer (or a test) writes
            "THINKTUNE_PROGRESS_SOURCE": "auto" if self.run_pods else "annotation",
            "THINKTUNE_METRICS_PORT": str(port),
            **self.env(),
        }
        self._spawn("operator", argv, env=env)
        return self._check_started("operator")

    def start_podrunner(self, timeout_s: float = 30.0) -> ProcessRecord:
        """The kubelet stand-in for runner nodes (thinktune_sandbox.podrunner); one per state dir."""
        if self._state is None:
            raise ControlPlaneError("the control plane is not up; call up() first")
        running = self._state.record("podrunner")
        if self.locked("podrunner") and running is not None and running.alive():
            return running
        ready = self.state_dir / PODRUNNER_READY_FILE
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "thinktune_sandbox.podrunner",
            f"--kubeconfig={self.kubeconfig}",
            f"--state-dir={self.state_dir}",
        ]
        self._spawn("podrunner", argv, env=self.env())
        proc = self._children["podrunner"]
        log = self.log_dir / "podrunner.log"
        deadline = time.monotonic() + timeout_s
        while not ready.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"pod runner did not start (exit code {proc.poll()}); see {log}, last lines:\n{tail(log)}"
                )
            time.sleep(0.1)
        rec = self._state.record("podrunner")
        assert rec is not None
        return rec

    def _check_started(self, name: str) -> ProcessRecord | None:
        assert self._state is not None
        time.sleep(1.0)
        proc = self._children[name]
        if proc.poll() is not None:
            log = self.log_dir / f"{name}.log"
            raise ControlPlaneError(
                f"{name} exited with code {proc.returncode} right after start; see {log}, last lines:\n{tail(log)}"
            )
        return self._state.record(name)

    @property
    def workspace_dir(self) -> Path:
        """Host directory of the default namespace's workspace PVC (its PersistentVolume's hostPath)."""
        return self.state_dir / "workspace" / "default"

    # ----------------------------------------------------------------------------------------- down/status

    def down(self) -> None:
        """Stop every component (reverse start order); logs, PKI and kubeconfig stay for post-mortems."""
        state = self._state or SandboxState.load(self.state_dir)
        if state is None:
            return
        for rec in reversed(state.processes):
            rec.stop()
            child = self._children.pop(rec.name, None)
            if child is not None:
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        # pod processes outlive a pod runner that was SIGKILLed: they carry this sandbox's marker
        from .podrunner import kill_sandbox_processes

        kill_sandbox_processes(self.state_dir)
        state.processes = []
        state.remove()
        self._state = None

    def status(self) -> SandboxStatus:
        state = self._state = SandboxState.load(self.state_dir)
        if state is None:
            return SandboxStatus(self.state_dir, None, {}, False, [])
        components = {p.name: p.alive() for p in state.processes}
        ready = False
        nodes: list[dict[str, str]] = []
        port = state.ports.get("apiserver")
        if port and components.get("kube-apiserver") and self.pki.exist():
            try:
                ready = self._probe(f"https://127.0.0.1:{port}/readyz", tls=True)[0] == 200
            except (OSError, http.client.HTTPException):
                ready = False
        if ready and self.kubeconfig.is_file():
            nodes = self._node_conditions()
        return SandboxStatus(
            self.state_dir, self.kubeconfig if self.kubeconfig.is_file() else None, components, ready, nodes
        )

    def __enter__(self) -> ControlPlane:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
