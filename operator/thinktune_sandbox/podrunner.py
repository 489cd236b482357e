"""The sandbox pod runner: a kubelet stand-in that runs the pods bound to the sandbox's nodes as local processes.

`thinktune sandbox up --run-pods` labels its nodes ``thinktune.io/sandbox-runner=true`` and starts kwok with node
stages only, so kwok keeps the nodes' heartbeats and leases while this runner owns the lifecycle of every pod on
those nodes. It polls the API server, and for each pod bound to a runner node:

* **root** — a per-pod directory ``<state-dir>/pods/<namespace>/<pod>-<uid8>/`` holds the container logs
  (``<container>.log``), the termination message files and the materialised volumes (``volumes/<name>/``).
* **volumes** — configMap, secret and projected (configMap, secret, downwardAPI, serviceAccountToken) volumes
  become files; emptyDir a directory; a persistentVolumeClaim its bound PersistentVolume's ``hostPath``/``local``
  directory; hostPath itself. ``subPath`` is honoured.
* **path rewrite** (no chroot, no mount namespace): every ``mountPath`` and the ``terminationMessagePath`` is
  mapped to its host path wherever it appears as a path prefix in the command, args, env values, workingDir and
  in the text of configMap/secret files. The termination message is mapped back (host → pod paths) before it goes
  into the pod status, so what the operator reads names the paths the pod saw.
* **network** — each pod gets its own loopback address 127.1.x.y (``status.podIP``). An env value that names a
  pod by its DNS name (``<hostname>.<subdomain>[.<namespace>[.svc[.cluster.local]]]``) becomes that pod's IP.
  Every ``containerPort`` P gets a free host port H, and a forwarder listens on podIP:P and connects to
  127.0.0.1:H, so other pods, the operator and Prometheus reach podIP:containerPort as in a cluster. The process
  binds H: an env value equal to one of the pod's containerPorts becomes H, except ``X_PORT`` when ``X_ADDR``
  names another pod (that is the peer's port, reached through the peer's forwarder).
* **env** — ``env`` (values, configMap/secret keys, downward-API fields: metadata.name/namespace/uid/labels/
  annotations, spec.nodeName/serviceAccountName, status.podIP/hostIP), ``envFrom`` and ``$(VAR)`` expansion as
  the kubelet does; on top of a base PATH that starts with the runner's Python environment (there is no image:
  the command runs against the sandbox's own install), ``HOSTNAME``, ``GLOO_SOCKET_IFNAME=lo`` and
  ``THINKTUNE_SANDBOX_POD=<uid>/<container>`` (how the runner finds every process of a container, torchrun's
  workers in their own sessions included).
* **fault injection** — a runner node annotated ``sandbox.thinktune.io/inject-env: '{"NAME": "value"}'`` adds
  that env to every container starting on it (``THINKTUNE_INJECT_FAILURE``: the node's GPU is broken).
* **metrics** — ``<state-dir>/prometheus-targets.json`` lists the running pods annotated
  ``prometheus.io/scrape: "true"`` at podIP:``prometheus.io/port`` (Prometheus ``file_sd_configs``: the sandbox's
  PodMonitor; Debian's Prometheus is built without kubernetes_sd).
* **lifecycle** — start → ``Running`` with the podIP, container ``running`` states and Ready conditions; exit →
  ``terminated`` (exit code, 128+signal when killed, reason Completed/Error, the termination message or, with
  ``FallbackToLogsOnError``, the log tail) and phase ``Succeeded``/``Failed``; when the main process exits the
  container's other processes are killed (as when PID 1 of a container ends); deletion → SIGTERM, SIGKILL after
  the grace period (at most 30 s), then the pod object is removed with grace 0, as a kubelet does;
  ``activeDeadlineSeconds`` → killed, ``Failed``/``DeadlineExceeded``.

Not supported (the operator's pods need none of them): restarts (restartPolicy other than Never runs once),
init containers and probes; resource limits and ``securityContext`` are not enforced (processes run as the
runner's user).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .kubeapi import ApiError, KubeApi

RUNNER_NODE_LABEL = (
    "thinktune.io/sandbox-runner"  # == controlplane.RUNNER_NODE_LABEL (test_sandbox_podrunner)
)
HOST_PORTS_ANNOTATION = "sandbox.thinktune.io/host-ports"
SCRAPE_ADDRESS_ANNOTATION = "sandbox.thinktune.io/scrape-address"
# Fault injection: a runner node annotated with a JSON object of env vars gives them to every container that
# starts on it (say THINKTUNE_INJECT_FAILURE: this node's GPU is broken, whatever job lands there).
NODE_ENV_ANNOTATION = "sandbox.thinktune.io/inject-env"
POD_ENV_MARKER = "THINKTUNE_SANDBOX_POD"
PROMETHEUS_TARGETS_FILE = (
    "prometheus-targets.json"  # file_sd of the running pods annotated prometheus.io/scrape
)
READY_FILE = "podrunner.ready"  # == controlplane.PODRUNNER_READY_FILE
MAX_GRACE_S = 30.0
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
LOOPBACK_BASE = (127, 1)  # pod i gets 127.1.(i // 250).(i % 250 + 1)


class PodConfigError(Exception):
    """The pod refers to something that does not exist (yet): it stays Pending with this message."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------ path rewrite


@dataclass
class PathMap:
    """In-pod paths -> host paths, longest prefix first; `to_host` on the pod's strings, `to_pod` on its output."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, pod_path: str, host_path: Path | str) -> None:
        self.pairs.append((pod_path.rstrip("/") or "/", str(host_path).rstrip("/")))
        self.pairs.sort(key=lambda p: -len(p[0]))

    @staticmethod
    def _sub(text: str, pairs: list[tuple[str, str]]) -> str:
        if not pairs:
            return text
        # a prefix counts only as a whole path component: /tmp matches /tmp and /tmp/x, never /tmpfoo
        alt = "|".join(re.escape(a) for a, _ in pairs)
        table = dict(pairs)
        rx = re.compile(rf"(?<![\w.\-/])({alt})(?=/|$|[^\w.\-])")
        return rx.sub(lambda m: table[m.group(1)], text)

    def to_host(self, text: str) -> str:
        return self._sub(text, self.pairs)

    def to_pod(self, text: str) -> str:
        return self._sub(text, sorted(((h, p) for p, h in self.pairs), key=lambda p: -len(p[0])))

    def host_file(self, pod_path: str) -> Path:
        return Path(self.to_host(pod_path))


# ------------------------------------------------------------------------------------------ env


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined references are replaced, undefined ones kept, $$ escapes."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(one, text)


_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref(pod: dict[str, Any], path: str, pod_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    m = _FIELD_SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path not in values:
        raise PodConfigError(f"downward API field {path!r} is not supported by the sandbox pod runner")
    return str(values[path])


class Lookups:
    """What a pod refers to in the API (ConfigMaps, Secrets, PVC -> PV, peer pods), fetched on demand."""

    def __init__(self, api: KubeApi | None, namespace: str) -> None:
        self.api, self.ns = api, namespace
        self._cache: dict[str, Any] = {}

    def _get(self, path: str) -> Any:
        if path not in self._cache:
            if self.api is None:
                raise PodConfigError(f"{path} not found")
            self._cache[path] = self.api.get_or_none(path)
        return self._cache[path]

    def configmap(self, name: str, optional: bool = False) -> dict[str, str] | None:
        cm = self._get(f"/api/v1/namespaces/{self.ns}/configmaps/{name}")
        if cm is None:
            if optional:
                return None
            raise PodConfigError(f'configmap "{name}" not found')
        data = dict(cm.get("data") or {})
        for k, v in (cm.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v).decode(errors="replace")
        return data

    def secret(self, name: str, optional: bool = False) -> dict[str, str] | None:
        s = self._get(f"/api/v1/namespaces/{self.ns}/secrets/{name}")
        if s is None:
            if optional:
                return None
            raise PodConfigError(f'secret "{name}" not found')
        out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (s.get("data") or {}).items()}
        out.update(s.get("stringData") or {})
        return out

    def claim_dir(self, claim: str) -> Path:
        pvc = self._get(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        if pvc is None:
            raise PodConfigError(f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if not pv_name or (pvc.get("status") or {}).get("phase") != "Bound":
            raise PodConfigError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self._get(f"/api/v1/persistentvolumes/{pv_name}") or {}
        spec = pv.get("spec") or {}
        path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
        if not path:
            raise PodConfigError(
                f'persistentvolume "{pv_name}" of claim "{claim}" is neither hostPath nor local: '
                "the sandbox pod runner can only mount host directories"
            )
        return Path(path)

    def token(self, service_account: str, expiration_s: int) -> str:
        if self.api is None:
            raise PodConfigError("no API to request a service account token from")
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        body["spec"] = {"expirationSeconds": max(600, expiration_s)}
        res = self.api.post(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{service_account}/token", body)
        return res["status"]["token"]


def env_value(item: dict[str, Any], pod: dict[str, Any], pod_ip: str, look: Lookups) -> str | None:
    if "value" in item:
        return str(item["value"])
    src = item.get("valueFrom") or {}
    if "fieldRef" in src:
        return field_ref(pod, src["fieldRef"]["fieldPath"], pod_ip)
    for kind, fetch in (("configMapKeyRef", look.configmap), ("secretKeyRef", look.secret)):
        if kind in src:
            ref = src[kind]
            data = fetch(ref["name"], bool(ref.get("optional")))
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise PodConfigError(f'key "{ref["key"]}" not found in {kind[:-6]} "{ref["name"]}"')
            return data[ref["key"]]
    if "resourceFieldRef" in src:
        raise PodConfigError("env resourceFieldRef is not supported by the sandbox pod runner")
    return ""


def container_env(
    pod: dict[str, Any], container: dict[str, Any], pod_ip: str, look: Lookups
) -> dict[str, str]:
    """The container's own environment (envFrom, then env in order, with $(VAR) expansion)."""
    out: dict[str, str] = {}
    for ef in container.get("envFrom") or []:
        prefix = ef.get("prefix", "")
        for kind, fetch in (("configMapRef", look.configmap), ("secretRef", look.secret)):
            if kind in ef:
                data = fetch(ef[kind]["name"], bool(ef[kind].get("optional"))) or {}
                out.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        v = env_value(item, pod, pod_ip, look)
        if v is not None:
            out[item["name"]] = expand(v, out)
    return out


# ------------------------------------------------------------------------------------------ network


def pod_dns_names(pod: dict[str, Any]) -> list[str]:
    """The names a pod answers to through its headless Service (spec.hostname + spec.subdomain)."""
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    host, sub, ns = spec.get("hostname"), spec.get("subdomain"), meta.get("namespace", "default")
    if not host or not sub:
        return []
    base = f"{host}.{sub}"
    return [base, f"{base}.{ns}", f"{base}.{ns}.svc", f"{base}.{ns}.svc.cluster.local"]


def container_ports(container: dict[str, Any]) -> list[int]:
    return sorted({int(p["containerPort"]) for p in container.get("ports") or [] if "containerPort" in p})


def free_port_block(n: int, attempts: int = 200) -> int:
    """A base port B with B..B+n-1 all free on 127.0.0.1 (a run of consecutive container ports stays
    consecutive: the trainer serves metricsPort + LOCAL_RANK)."""
    for _ in range(attempts):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                t.bind(("127.0.0.1", p))
                socks.append(t)
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError(f"no block of {n} free ports on 127.0.0.1")


def allocate_host_ports(ports: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    runs: list[list[int]] = []
    for p in sorted(ports):
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    for run in runs:
        base = free_port_block(len(run))
        out.update({p: base + i for i, p in enumerate(run)})
    return out


def host_port_annotations(pod: dict[str, Any], host_ports: dict[int, int]) -> dict[str, str]:
    """Where the pod's ports answer on the host: every containerPort, and the prometheus.io/port one as an
    address that Prometheus' kubernetes_sd relabelling can use as is (the sandbox's PodMonitor)."""
    out = {HOST_PORTS_ANNOTATION: json.dumps({str(k): v for k, v in host_ports.items()}, sort_keys=True)}
    scrape = ((pod.get("metadata") or {}).get("annotations") or {}).get("prometheus.io/port")
    if scrape and scrape.isdigit() and int(scrape) in host_ports:
        out[SCRAPE_ADDRESS_ANNOTATION] = f"127.0.0.1:{host_ports[int(scrape)]}"
    return out


@dataclass(frozen=True)
class Peer:
    """How another pod (or this one) is reached: its IP and its containerPort -> host port map."""

    ip: str
    host_ports: dict[int, int]


def rewrite_network_env(env: dict[str, str], own: Peer, peers: dict[str, Peer]) -> dict[str, str]:
    """Pod DNS names -> pod IPs; a containerPort number -> the host port that answers for it: the peer's when
    the variable is X_PORT and X_ADDR names a pod, this pod's otherwise. Host ports rather than the peer's
    forwarder: a foreign process listening on 0.0.0.0:<containerPort> would capture podIP:containerPort."""
    out = dict(env)
    peer_of = {k: peers[v] for k, v in env.items() if v in peers}
    out.update({k: p.ip for k, p in peer_of.items()})
    for k, v in env.items():
        if not v.isdigit():
            continue
        addr_key = k[: -len("_PORT")] + "_ADDR" if k.endswith("_PORT") else ""
        target = peer_of.get(addr_key, own)
        if int(v) in target.host_ports:
            out[k] = str(target.host_ports[int(v)])
    return out


class Forwarder:
    """podIP:containerPort -> 127.0.0.1:hostPort (TCP), so the pod is reachable at its own address.

    A host process listening on 0.0.0.0:containerPort (say a local `thinktune run` serving metrics on 9400)
    blocks the bind: the forwarder then says so once and retries every few seconds; the pod runs regardless and
    stays reachable at 127.0.0.1:hostPort (annotation HOST_PORTS_ANNOTATION)."""

    RETRY_S = 3.0

    def __init__(self, listen_ip: str, listen_port: int, target_port: int, log=print) -> None:
        self.addr = (listen_ip, listen_port)
        self.target = target_port
        self.closed = False
        self.sock: socket.socket | None = None
        self.log = log
        threading.Thread(target=self._serve, daemon=True).start()

    def _bind(self) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(self.addr)
            s.listen(64)
        except OSError:
            s.close()
            raise
        return s

    def _serve(self) -> None:
        warned = False
        while not self.closed and self.sock is None:
            try:
                self.sock = self._bind()
            except OSError as e:
                if not warned:
                    warned = True
                    self.log(
                        f"[podrunner] cannot listen on {self.addr[0]}:{self.addr[1]} ({e.strerror}; another "
                        f"process holds the port on all addresses): retrying; the pod answers on "
                        f"127.0.0.1:{self.target} meanwhile"
                    )
                time.sleep(self.RETRY_S)
        if self.closed:
            if self.sock is not None:
                self.sock.close()
            return
        if warned:
            self.log(f"[podrunner] now listening on {self.addr[0]}:{self.addr[1]}")
        self._accept()

    def _accept(self) -> None:
        assert self.sock is not None
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()  # nothing listens yet: the client sees a refused/closed connection and retries
            return
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


# ------------------------------------------------------------------------------------------ the pod plan


@dataclass
class ContainerPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    termination_file: Path
    fallback_to_logs: bool
    image: str
    marker: str  # value of THINKTUNE_SANDBOX_POD in its environment


@dataclass
class PodPlan:
    root: Path
    ip: str
    paths: PathMap
    host_ports: dict[int, int]
    containers: list[ContainerPlan]
    files: dict[Path, str]  # materialised volume files
    dirs: list[Path]


def base_env() -> dict[str, str]:
    py_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{py_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def _items(data: dict[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
    if not items:
        return dict(data)
    return {it["path"]: data[it["key"]] for it in items if it["key"] in data}


def volume_files(
    vol: dict[str, Any], pod: dict[str, Any], pod_ip: str, look: Lookups
) -> dict[str, str] | None:
    """Relative file -> content for volumes made of files (configMap, secret, projected); None otherwise."""
    if "configMap" in vol:
        src = vol["configMap"]
        return _items(look.configmap(src["name"], bool(src.get("optional"))) or {}, src.get("items"))
    if "secret" in vol:
        src = vol["secret"]
        return _items(look.secret(src["secretName"], bool(src.get("optional"))) or {}, src.get("items"))
    if "projected" in vol:
        out: dict[str, str] = {}
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        for s in vol["projected"].get("sources") or []:
            if "configMap" in s:
                c = s["configMap"]
                out.update(_items(look.configmap(c["name"], bool(c.get("optional"))) or {}, c.get("items")))
            elif "secret" in s:
                c = s["secret"]
                out.update(_items(look.secret(c["name"], bool(c.get("optional"))) or {}, c.get("items")))
            elif "downwardAPI" in s:
                for it in s["downwardAPI"].get("items") or []:
                    out[it["path"]] = field_ref(pod, it["fieldRef"]["fieldPath"], pod_ip)
            elif "serviceAccountToken" in s:
                t = s["serviceAccountToken"]
                out[t["path"]] = look.token(sa, int(t.get("expirationSeconds", 3600)))
        return out
    if "downwardAPI" in vol:
        return {
            it["path"]: field_ref(pod, it["fieldRef"]["fieldPath"], pod_ip)
            for it in vol["downwardAPI"].get("items") or []
        }
    return None


def plan_pod(
    pod: dict[str, Any],
    root: Path,
    own: Peer,
    peers: dict[str, Peer],
    look: Lookups,
    marker_prefix: str = "",
    node_env: dict[str, str] | None = None,
) -> PodPlan:
    """Everything needed to start the pod's containers; raises PodConfigError for what is missing."""
    spec = pod.get("spec") or {}
    ip = own.ip
    if spec.get("initContainers"):
        raise PodConfigError("initContainers are not supported by the sandbox pod runner")
    vol_dir = root / "volumes"
    host_of: dict[str, Path] = {}
    file_contents: dict[str, dict[str, str]] = {}
    for vol in spec.get("volumes") or []:
        name = vol["name"]
        files = volume_files(vol, pod, ip, look)
        if files is not None:
            file_contents[name] = files
            host_of[name] = vol_dir / name
        elif "persistentVolumeClaim" in vol:
            host_of[name] = look.claim_dir(vol["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in vol:
            host_of[name] = Path(vol["hostPath"]["path"])
        elif "emptyDir" in vol:
            host_of[name] = vol_dir / name
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise PodConfigError(
                f"volume {name!r} of type {kinds} is not supported by the sandbox pod runner"
            )
    containers, dirs = [], [root, *host_of.values()]
    all_paths = PathMap()
    plans_paths: list[PathMap] = []
    for c in spec.get("containers") or []:
        pm = PathMap()
        for vm in c.get("volumeMounts") or []:
            if vm["name"] not in host_of:
                raise PodConfigError(f"container {c['name']!r} mounts unknown volume {vm['name']!r}")
            host = host_of[vm["name"]] / vm["subPath"] if vm.get("subPath") else host_of[vm["name"]]
            pm.add(vm["mountPath"], host)
            dirs.append(host)
        term = c.get("terminationMessagePath") or "/dev/termination-log"
        pm.add(term, root / f"{c['name']}.termination-log")
        plans_paths.append(pm)
        for pair in pm.pairs:
            all_paths.add(*pair)
    # file volumes: their text is rewritten with the mounts of the (first) container that mounts them
    files: dict[Path, str] = {}
    for name, contents in file_contents.items():
        rewrite = next(
            (
                pm
                for c, pm in zip(spec.get("containers") or [], plans_paths, strict=True)
                if any(vm["name"] == name for vm in c.get("volumeMounts") or [])
            ),
            all_paths,
        )
        for rel, text in contents.items():
            files[host_of[name] / rel] = rewrite.to_host(text)
    for c, pm in zip(spec.get("containers") or [], plans_paths, strict=True):
        cenv = rewrite_network_env(container_env(pod, c, ip, look), own, peers)
        cenv = {k: pm.to_host(v) for k, v in cenv.items()}
        argv = [expand(a, cenv) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not argv:
            raise PodConfigError(
                f"container {c['name']!r} has no command: the sandbox runs no images, so the pod must say what to run"
            )
        argv = [pm.to_host(a) for a in argv]
        cwd = Path(pm.to_host(c["workingDir"])) if c.get("workingDir") else root
        dirs.append(cwd)
        marker = f"{marker_prefix}{pod['metadata']['uid']}/{c['name']}"
        env = {
            **base_env(),
            "HOSTNAME": spec.get("hostname") or pod["metadata"]["name"],
            "GLOO_SOCKET_IFNAME": "lo",
            **cenv,
            **(node_env or {}),
            POD_ENV_MARKER: marker,
        }
        containers.append(
            ContainerPlan(
                name=c["name"],
                argv=argv,
                env=env,
                cwd=cwd,
                log=root / f"{c['name']}.log",
                termination_file=pm.host_file(c.get("terminationMessagePath") or "/dev/termination-log"),
                fallback_to_logs=c.get("terminationMessagePolicy") == "FallbackToLogsOnError",
                image=c.get("image", ""),
                marker=marker,
            )
        )
    return PodPlan(root, ip, all_paths, own.host_ports, containers, files, dirs)


def termination_message(plan: ContainerPlan, exit_code: int, paths: PathMap) -> str:
    try:
        msg = plan.termination_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode("utf-8", "ignore")
    except OSError:
        msg = ""
    if not msg.strip() and exit_code != 0 and plan.fallback_to_logs:
        try:
            lines = plan.log.read_text(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
        except OSError:
            lines = []
        msg = "\n".join(lines).encode()[-FALLBACK_LOG_BYTES:].decode("utf-8", "ignore")
    return paths.to_pod(msg)


# ------------------------------------------------------------------------------------------ processes


def marker_prefix(state_dir: Path | str) -> str:
    return f"{Path(state_dir).resolve()}:"


def kill_sandbox_processes(state_dir: Path | str) -> int:
    """SIGKILL every pod process of this sandbox (left behind if the runner itself was killed)."""
    pids = processes_with_marker(marker_prefix(state_dir), prefix=True)
    signal_all(pids, signal.SIGKILL)
    return len(pids)


def processes_with_marker(marker: str, prefix: bool = False) -> list[int]:
    """Pids whose environment carries THINKTUNE_SANDBOX_POD=<marker> (the container and all its descendants);
    with `prefix`, every marker that starts with it (all pods of one sandbox: `<state-dir>:`)."""
    needle = f"{POD_ENV_MARKER}={marker}".encode() + (b"" if prefix else b"\0")
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class RunningContainer:
    plan: ContainerPlan
    proc: subprocess.Popen | None
    marker: str
    started_at: str
    start_error: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    finished_at: str | None = None

    def poll(self) -> bool:
        """True once the main process has exited (the rest of its processes are then killed)."""
        if self.exit_code is not None:
            return True
        if self.proc is None:
            return True
        rc = self.proc.poll()
        if rc is None:
            return False
        # a container runtime reports a signal death as 128 + signal
        self.signal = -rc if rc < 0 else None
        self.exit_code = 128 - rc if rc < 0 else rc
        self.finished_at = now_iso()
        signal_all(processes_with_marker(self.marker), signal.SIGKILL)
        return True


@dataclass
class RunningPod:
    uid: str
    namespace: str
    name: str
    plan: PodPlan
    containers: list[RunningContainer]
    forwarders: list[Forwarder]
    started_at: str
    deadline: float | None = None  # activeDeadlineSeconds, monotonic
    kill_at: float | None = None  # deletion: SIGKILL after the grace period
    reported: str = ""  # last phase written to the API
    deadline_exceeded: bool = False

    def markers(self) -> list[str]:
        return [c.marker for c in self.containers]

    def terminate(self, grace_s: float) -> None:
        if self.kill_at is not None:
            return
        self.kill_at = time.monotonic() + min(MAX_GRACE_S, max(0.0, grace_s))
        for m in self.markers():
            signal_all(processes_with_marker(m), signal.SIGTERM)

    def kill(self) -> None:
        for m in self.markers():
            signal_all(processes_with_marker(m), signal.SIGKILL)

    def all_exited(self) -> bool:
        return all([c.poll() for c in self.containers])

    def close(self) -> None:
        for f in self.forwarders:
            f.close()


def start_container(plan: ContainerPlan) -> RunningContainer:
    started = now_iso()
    plan.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(plan.log, "ab") as out:
            proc = subprocess.Popen(
                plan.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=plan.cwd,
                env=plan.env,
                start_new_session=True,
            )
    except OSError as e:
        # what a kubelet reports when the runtime cannot exec the entrypoint
        return RunningContainer(
            plan, None, plan.marker, started, start_error=f"{plan.argv[0]}: {e.strerror or e}", exit_code=128
        )
    return RunningContainer(plan, proc, plan.marker, started)


# ------------------------------------------------------------------------------------------ status


def _conditions(pod: dict[str, Any], ready: bool, now: str) -> list[dict[str, Any]]:
    keep = [
        c
        for c in (pod.get("status") or {}).get("conditions") or []
        if c.get("type") not in ("Initialized", "Ready", "ContainersReady", "PodReadyToStartContainers")
    ]
    val = "True" if ready else "False"
    return keep + [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": val, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": val, "lastTransitionTime": now},
    ]


def container_status(rc: RunningContainer, paths: PathMap) -> dict[str, Any]:
    pid = rc.proc.pid if rc.proc is not None else 0
    base = {
        "name": rc.plan.name,
        "image": rc.plan.image,
        "imageID": "",
        "containerID": f"sandbox://{pid}",
        "restartCount": 0,
    }
    if rc.exit_code is None:
        return {**base, "ready": True, "started": True, "state": {"running": {"startedAt": rc.started_at}}}
    if rc.start_error is not None:
        term = {"exitCode": 128, "reason": "StartError", "message": rc.start_error}
    else:
        term = {
            "exitCode": rc.exit_code,
            "reason": "Completed" if rc.exit_code == 0 else "Error",
            "message": termination_message(rc.plan, rc.exit_code, paths),
        }
        if rc.signal:
            term["signal"] = rc.signal
    term.update({"startedAt": rc.started_at, "finishedAt": rc.finished_at or now_iso()})
    term["containerID"] = base["containerID"]
    return {**base, "ready": False, "started": False, "state": {"terminated": term}}


def pod_status(pod: dict[str, Any], rp: RunningPod) -> dict[str, Any]:
    now = now_iso()
    statuses = [container_status(c, rp.plan.paths) for c in rp.containers]
    done = all(c.exit_code is not None for c in rp.containers)
    phase = "Running"
    if done:
        phase = "Succeeded" if all(c.exit_code == 0 for c in rp.containers) else "Failed"
    st: dict[str, Any] = {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": rp.plan.ip,
        "podIPs": [{"ip": rp.plan.ip}],
        "startTime": rp.started_at,
        "conditions": _conditions(pod, not done, now),
        "containerStatuses": statuses,
    }
    if rp.deadline_exceeded:
        st.update(
            phase="Failed",
            reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
        )
    return st


# ------------------------------------------------------------------------------------------ the runner


class PodRunner:
    """Poll the API; start, report and stop the pods bound to runner nodes."""

    def __init__(self, api: KubeApi, state_dir: Path, poll_s: float = 0.5, log=print) -> None:
        self.api = api
        self.pods_dir = Path(state_dir) / "pods"
        self.targets_file = Path(state_dir) / PROMETHEUS_TARGETS_FILE
        self._targets = ""
        self.marker_prefix = marker_prefix(state_dir)
        self.poll_s = poll_s
        self.log = log
        self.running: dict[str, RunningPod] = {}
        self.peers: dict[str, Peer] = {}  # pod uid -> address, given at first sight
        self.next_ip = 0
        self.pending_reason: dict[str, str] = {}
        self.nodes: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()

    # -- helpers
    def peer_for(self, pod: dict[str, Any]) -> Peer:
        """The pod's IP and host ports, fixed at first sight: its peers may start before it does."""
        uid = pod["metadata"]["uid"]
        if uid not in self.peers:
            i = self.next_ip
            self.next_ip += 1
            ip = f"{LOOPBACK_BASE[0]}.{LOOPBACK_BASE[1]}.{i // 250}.{i % 250 + 1}"
            ports = sorted(
                {p for c in (pod.get("spec") or {}).get("containers") or [] for p in container_ports(c)}
            )
            self.peers[uid] = Peer(ip, allocate_host_ports(ports))
        return self.peers[uid]

    def runner_nodes(self) -> dict[str, dict[str, str]]:
        """Runner node name -> the env its NODE_ENV_ANNOTATION injects."""
        items = self.api.get("/api/v1/nodes", labelSelector=f"{RUNNER_NODE_LABEL}=true")["items"]
        out = {}
        for n in items:
            raw = ((n["metadata"].get("annotations") or {}).get(NODE_ENV_ANNOTATION)) or "{}"
            try:
                env = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError):
                self.log(
                    f"[podrunner] node {n['metadata']['name']}: {NODE_ENV_ANNOTATION} is not a JSON object"
                )
                env = {}
            out[n["metadata"]["name"]] = env
        return out

    def _path(self, pod: dict[str, Any]) -> str:
        m = pod["metadata"]
        return f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}"

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        try:
            self.api.patch(self._path(pod) + "/status", {"status": status})
        except ApiError as e:
            if e.status != 404:
                raise

    # -- one pass
    def sync_once(self) -> None:
        nodes = self.nodes = self.runner_nodes()
        pods = [
            p
            for p in self.api.get("/api/v1/pods", fieldSelector="spec.nodeName!=")["items"]
            if (p.get("spec") or {}).get("nodeName") in nodes
        ]
        seen = {p["metadata"]["uid"] for p in pods}
        peers = {name: self.peer_for(p) for p in pods for name in pod_dns_names(p)}
        for p in pods:
            self.peer_for(p)
        for p in pods:
            try:
                self.sync_pod(p, peers)
            except ApiError as e:
                self.log(f"[podrunner] {p['metadata']['namespace']}/{p['metadata']['name']}: {e}")
        for uid in [u for u in self.running if u not in seen]:
            rp = self.running.pop(uid)
            self.log(f"[podrunner] {rp.namespace}/{rp.name} gone from the API: killing its processes")
            rp.kill()
            rp.close()
        for uid in [u for u in self.peers if u not in seen]:
            del self.peers[uid]
        self.write_targets(pods)

    def write_targets(self, pods: list[dict[str, Any]]) -> None:
        """Prometheus file_sd for the running pods annotated prometheus.io/scrape=true, at podIP:prometheus.io/port
        (what the chart's PodMonitor selects; Debian's Prometheus is built without kubernetes_sd)."""
        groups = []
        for p in pods:
            ann = p["metadata"].get("annotations") or {}
            rp = self.running.get(p["metadata"]["uid"])
            if rp is None or ann.get("prometheus.io/scrape") != "true" or not ann.get("prometheus.io/port"):
                continue
            labels = {"namespace": rp.namespace, "pod": rp.name, "node": p["spec"].get("nodeName", "")}
            groups.append({"targets": [f"{rp.plan.ip}:{ann['prometheus.io/port']}"], "labels": labels})
        text = json.dumps(groups, indent=1, sort_keys=True)
        if text != self._targets:
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.targets_file)  # Prometheus re-reads file_sd files on change; never half-written
            self._targets = text

    def sync_pod(self, pod: dict[str, Any], peers: dict[str, Peer]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        uid = meta["uid"]
        rp = self.running.get(uid)
        if meta.get("deletionTimestamp"):
            if rp is not None:
                rp.terminate(float(meta.get("deletionGracePeriodSeconds") or 30))
                if not rp.all_exited():
                    if rp.kill_at is not None and time.monotonic() >= rp.kill_at:
                        rp.kill()
                    return
                rp.close()
                self.running.pop(uid, None)
            # the kubelet's last word: remove the object now that nothing runs
            try:
                self.api.delete(self._path(pod), {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
            self.log(f"[podrunner] {meta['namespace']}/{meta['name']} deleted")
            return
        if rp is None:
            if status.get("phase") in ("Succeeded", "Failed"):
                return  # finished before (or by someone else): never run twice
            states = [cs.get("state") or {} for cs in status.get("containerStatuses") or []]
            if any("running" in st or "terminated" in st for st in states):
                return  # started by another runner (or before this one restarted): never run twice
            self.start_pod(pod, peers)
            return
        if rp.deadline is not None and not rp.deadline_exceeded and time.monotonic() > rp.deadline:
            rp.deadline_exceeded = True
            rp.kill()
        if rp.all_exited():
            st = pod_status(pod, rp)
            self._patch_status(pod, st)
            self.log(
                f"[podrunner] {meta['namespace']}/{meta['name']} {st['phase']}: exit codes "
                + ", ".join(f"{c.plan.name}={c.exit_code}" for c in rp.containers)
            )
            rp.close()
            self.running.pop(uid, None)

    def start_pod(self, pod: dict[str, Any], peers: dict[str, Peer]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid, ns = meta["uid"], meta["namespace"]
        root = self.pods_dir / ns / f"{meta['name']}-{uid[:8]}"
        own = self.peer_for(pod)
        ip, host_ports = own.ip, own.host_ports
        try:
            node_env = self.nodes.get(spec.get("nodeName", ""), {})
            plan = plan_pod(pod, root, own, peers, Lookups(self.api, ns), self.marker_prefix, node_env)
        except PodConfigError as e:
            if self.pending_reason.get(uid) != str(e):
                self.pending_reason[uid] = str(e)
                self.log(f"[podrunner] {ns}/{meta['name']} cannot start yet: {e}")
                waiting = [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}},
                    }
                    for c in spec.get("containers") or []
                ]
                self._patch_status(pod, {"phase": "Pending", "containerStatuses": waiting})
            return
        self.pending_reason.pop(uid, None)
        for d in plan.dirs:
            d.mkdir(parents=True, exist_ok=True)
        for f, text in plan.files.items():
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text, encoding="utf-8")
        forwarders = [Forwarder(ip, p, h, self.log) for p, h in host_ports.items()]
        self.api.patch(self._path(pod), {"metadata": {"annotations": host_port_annotations(pod, host_ports)}})
        started = now_iso()
        containers = [start_container(c) for c in plan.containers]
        rp = RunningPod(uid, ns, meta["name"], plan, containers, forwarders, started)
        if spec.get("activeDeadlineSeconds"):
            rp.deadline = time.monotonic() + float(spec["activeDeadlineSeconds"])
        self.running[uid] = rp
        self._patch_status(pod, pod_status(pod, rp))
        self.log(
            f"[podrunner] {ns}/{meta['name']} started on {spec.get('nodeName')} as {ip} "
            f"(pids {', '.join(str(c.proc.pid) if c.proc else 'none' for c in containers)}; root {root})"
        )

    # -- loop
    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except (ApiError, OSError) as e:
                self.log(f"[podrunner] sync failed: {e}")
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop every process this runner started (the pods' API objects stay as they are)."""
        for rp in self.running.values():
            rp.terminate(grace_s)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(rp.all_exited() for rp in self.running.values()):
            time.sleep(0.1)
        for rp in self.running.values():
            rp.kill()
            rp.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m thinktune_sandbox.podrunner", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between API polls")
    args = ap.parse_args(argv)
    runner = PodRunner(
        KubeApi(args.kubeconfig), Path(args.state_dir), args.poll, log=lambda m: print(m, flush=True)
    )
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    runner.sync_once()  # fail fast on a bad kubeconfig
    (Path(args.state_dir) / READY_FILE).write_text(str(os.getpid()))
    print(
        f"[podrunner] running pods of nodes labelled {RUNNER_NODE_LABEL}=true (pid {os.getpid()})", flush=True
    )
    try:
        runner.run()
    finally:
        runner.shutdown()
        (Path(args.state_dir) / READY_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
