"""Chaos soak of the operator on the sandbox control plane (real apiserver, scheduler, controller-manager, kwok
GPU nodes, the operator as a real `kopf run` process).

For a bounded time a seeded RNG picks, about once a second: FineTuneJob creation and deletion, spec edits
(training.learningRate: applied at the next attempt, never a restart by itself), GPU failures of every kind
(worker exit 75 with the trainer's own termination message, node NotReady, cordon, GPU-fault taint, GPU
allocatable drop, eviction with DisruptionTarget), node repairs, and operator kill -9 at random points (also
right after a fault, in the middle of the restart it causes), restarted after a random pause. Invariants are
checked on every poll (about twice a second):

- no duplicate: a job's older-attempt pods are terminating once the current attempt has pods; no pod or job
  ConfigMap of an attempt beyond status.attempt (children are created only after the attempt is committed)
- no orphan: every managed pod/ConfigMap/Service belongs to a live job (garbage collection gets 30 s)
- no pod on a known-bad node: no pod created more than BAD_NODE_SLACK_S after a node went bad (an injected
  fault not yet repaired, or a node the job itself recorded in status.failedNodes) is bound to that node
- every job states a phase within STATE_WITHIN_S of its creation, and at the end converges (Running) or says
  why not (a True Waiting/Blocked/Failed condition with a reason)
- restart counters equal the injected failures: a steady job's status.restarts.infrastructure is the number
  of faults injected into its gang, and restarts.application is 0
- no Event lost: a job's GPUFailure Events (by involvedObject uid) equal its infrastructure restarts, within
  EVENT_LAG_S and exactly at the end (the operator is killed between status writes and Events on purpose)
- spec edits reach the next attempt: the ConfigMap of the attempt after a fault carries a generation at least
  that of the last edit before the fault

Faults are only injected where their effect is countable: into a steady job (phase Running, its whole current
gang Running), or onto a node while every job is steady (none is creating pods that could land there).

    uv run --no-sync python bench/chaos_soak.py --seconds 600 --seed 13
writes bench/results/chaos_soak.json (figures and the command line); on a violation the timeline is printed and
the exit status is 1. tests/cluster/test_chaos.py runs the same soak for ~2 minutes in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from thinktune import contract
from thinktune_sandbox.testing import Cluster, OperatorProcess, ftj, terminated_statuses

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "thinktune.io", "v1alpha1", "finetunejobs"
MANAGED = "app.kubernetes.io/managed-by=thinktune-operator"
NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
POD_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
POD_FAIL_EXIT = "pod-container-running-failed.stage.kwok.x-k8s.io/exit-code"
POD_FAIL_DELAY = "pod-container-running-failed.stage.kwok.x-k8s.io/delay"
GPU_TAINT = "nvidia.com/gpu-unhealthy"

FAULTS = ("exit75", "not_ready", "cordon", "taint", "alloc_drop", "evict")
NODE_FAULTS = ("not_ready", "cordon", "taint", "alloc_drop")
BAD_NODE_SLACK_S = 3.0  # the operator sees a node change within one watch event; API timestamps are seconds
ORPHAN_GRACE_S = 30.0
STATE_WITHIN_S = 15.0
EVENT_LAG_S = 10.0
# consecutive polls that must show a broken state (one poll can fall between a create and its status write)
TWO_GANGS_POLLS = 2


def now_s() -> float:
    return time.monotonic()


def api_time(ts: str | None) -> float | None:
    """An API timestamp as time.time() seconds."""
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 2)


@dataclass
class Fault:
    id: int
    kind: str
    t: float  # monotonic
    wall: float  # time.time()
    node: str | None
    jobs: dict[str, int]  # job -> attempt when injected
    recovered: dict[str, float] = field(default_factory=dict)  # job -> seconds to recover


@dataclass
class TrackedJob:
    name: str
    uid: str
    nodes: int
    gpus: int
    created: float
    expected_infra: int = 0
    pending: Fault | None = None
    last_edit_gen: int = 1
    edit_gen_at_fault: int = 1
    edits: dict[int, float] = field(default_factory=dict)  # generation -> learningRate
    event_mismatch_since: float | None = None


class Soak:
    def __init__(
        self,
        cluster: Cluster,
        op: OperatorProcess,
        ns: str,
        pool: list[str],
        seed: int,
        max_jobs: int = 6,
        max_bad_nodes: int = 3,
        log=print,
    ) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(str(cluster.cp.kubeconfig))
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.client = client
        self.cluster, self.op, self.ns, self.pool = cluster, op, ns, pool
        self.seed = seed
        self.rng = random.Random(seed)
        self.max_jobs, self.max_bad_nodes = max_jobs, max_bad_nodes
        self.log = log
        self.t0 = now_s()
        self.timeline: list[str] = []
        self.violations: list[str] = []
        self.jobs: dict[str, TrackedJob] = {}
        self.deleted: dict[str, float] = {}  # uid -> when deleted
        self.bad_nodes: dict[str, tuple[str, float]] = {}  # node -> (fault kind, wall time)
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.seen_children: dict[str, float] = {}  # "kind/name" of an orphan -> first seen
        self.two_gangs: Counter[str] = Counter()
        self.op_down_until: float | None = None
        self.op_started_at = now_s()
        self.op_ready_at: float | None = now_s()  # the caller starts it and waits for it
        self.startup_s: list[float] = []  # operator start -> metrics endpoint up, per restart
        self.seq = 0
        self.polls = 0

    # ------------------------------------------------------------------------------------------- journal
    def note(self, msg: str) -> None:
        line = f"{now_s() - self.t0:7.2f}s {msg}"
        self.timeline.append(line)
        self.log(line)

    def violation(self, msg: str) -> None:
        if msg not in self.violations:
            self.violations.append(msg)
            self.note(f"VIOLATION {msg}")

    # ------------------------------------------------------------------------------------------- snapshot
    def snapshot(self) -> dict[str, Any]:
        """Children first, then the jobs: a child seen here was created before the job status read after it."""

        def raw(call: Any, *args: Any, **kw: Any) -> list[dict[str, Any]]:
            return json.loads(call(*args, _preload_content=False, **kw).data)["items"]

        pods = raw(self.core.list_namespaced_pod, self.ns, label_selector=MANAGED)
        cms = raw(self.core.list_namespaced_config_map, self.ns, label_selector=MANAGED)
        svcs = raw(self.core.list_namespaced_service, self.ns, label_selector=MANAGED)
        jobs = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]
        events = raw(
            self.core.list_namespaced_event,
            self.ns,
            field_selector="involvedObject.kind=FineTuneJob,reason=GPUFailure",
        )
        nodes = {
            n["metadata"]["name"]: n
            for n in raw(self.core.list_node, label_selector=f"thinktune.io/test-pool={self.ns}")
        }
        gpu_events = Counter(e["involvedObject"].get("uid") for e in events)
        return {
            "pods": pods,
            "cms": cms,
            "svcs": svcs,
            "jobs": {j["metadata"]["name"]: j for j in jobs},
            "gpu_events": gpu_events,
            "nodes": nodes,
        }

    @staticmethod
    def attempt_of(obj: dict[str, Any]) -> int:
        return int((obj["metadata"].get("labels") or {}).get("thinktune.io/attempt", "-1"))

    @staticmethod
    def job_of(obj: dict[str, Any]) -> tuple[str | None, str | None]:
        for r in obj["metadata"].get("ownerReferences") or []:
            if r.get("controller") and r.get("kind") == "FineTuneJob":
                return r["name"], r["uid"]
        return None, None

    def gang(self, snap: dict[str, Any], name: str) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for p in snap["pods"]:
            if (
                self.job_of(p)[0] == name
                and p["metadata"].get("labels", {}).get("thinktune.io/rank") is not None
            ):
                out.setdefault(self.attempt_of(p), []).append(p)
        return out

    def steady(self, snap: dict[str, Any], name: str) -> bool:
        t = self.jobs.get(name)
        cr = snap["jobs"].get(name)
        if t is None or cr is None or t.pending is not None:
            return False
        st = cr.get("status") or {}
        a = st.get("attempt")
        if st.get("phase") != "Running" or a is None or st.get("pendingEvents"):
            return False
        g = self.gang(snap, name)
        cur = g.get(a, [])
        return (
            len(cur) == t.nodes
            and all(
                p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
                for p in cur
            )
            and all(pp["metadata"].get("deletionTimestamp") for aa, ps in g.items() if aa != a for pp in ps)
        )

    # ------------------------------------------------------------------------------------------- invariants
    def check(self, snap: dict[str, Any], final: bool = False) -> None:
        self.polls += 1
        jobs = snap["jobs"]
        live_uids = {j["metadata"]["uid"] for j in jobs.values()}
        # orphans: children of no live job, past garbage collection
        for kind, objs in (("Pod", snap["pods"]), ("ConfigMap", snap["cms"]), ("Service", snap["svcs"])):
            for o in objs:
                _, uid = self.job_of(o)
                key = f"{kind}/{o['metadata']['name']}"
                if uid in live_uids:
                    self.seen_children.pop(key, None)
                    continue
                first = self.seen_children.setdefault(key, now_s())
                gone = self.deleted.get(uid or "")
                since = max(first, gone) if gone else first
                if now_s() - since > ORPHAN_GRACE_S:
                    self.violation(f"orphan {key} (owner uid {uid}) outlived garbage collection")
        for name, cr in jobs.items():
            t = self.jobs.get(name)
            if t is None or cr["metadata"]["uid"] != t.uid:
                continue
            st = cr.get("status") or {}
            a = int(st.get("attempt") or 0)
            g = self.gang(snap, name)
            # no children of an attempt that status has not committed
            for aa in g:
                if aa > a:
                    self.violation(f"{name}: pods of attempt {aa} exist while status.attempt is {a}")
            for cm in snap["cms"]:
                if self.job_of(cm)[0] == name and cm["metadata"]["name"].endswith("-job"):
                    ca = int((cm["metadata"].get("annotations") or {}).get("thinktune.io/attempt", "-1"))
                    if ca > a:
                        self.violation(
                            f"{name}: ConfigMap of attempt {ca} exists while status.attempt is {a}"
                        )
            # no two gangs: once the current attempt has pods, every older pod is terminating or gone
            alive_old = [
                p["metadata"]["name"]
                for aa, ps in g.items()
                if aa < a and g.get(a)
                for p in ps
                if not p["metadata"].get("deletionTimestamp")
            ]
            if alive_old:
                self.two_gangs[name] += 1
                if self.two_gangs[name] >= TWO_GANGS_POLLS:
                    self.violation(f"{name}: older gang {alive_old} alive next to attempt {a}")
            else:
                self.two_gangs.pop(name, None)
            # no pod on a known-bad node
            # a node the job recorded as failed without the node showing it (exit 75) is avoided for the TTL;
            # one that showed it (NotReady, cordon, ...) until repaired, which bad_nodes covers; an eviction or
            # deletion does not implicate the node (avoided: false)
            ttl = float(OPERATOR_ENV["THINKTUNE_FAILED_NODE_TTL_SECONDS"])
            failed = {
                f.get("node"): api_time(f.get("time"))
                for f in st.get("failedNodes") or []
                if not f.get("nodeUnhealthy") and f.get("avoided") is not False
            }
            for p in (pp for ps in g.values() for pp in ps):
                node = p["spec"].get("nodeName")
                created = api_time(p["metadata"].get("creationTimestamp")) or 0
                if node in self.bad_nodes and created > self.bad_nodes[node][1] + BAD_NODE_SLACK_S:
                    self.violation(
                        f"{name}: pod {p['metadata']['name']} created after node {node} went bad "
                        f"({self.bad_nodes[node][0]}) is bound to it"
                    )
                ft = failed.get(node)
                if ft is not None and ft + BAD_NODE_SLACK_S < created < ft + ttl - BAD_NODE_SLACK_S:
                    self.violation(
                        f"{name}: pod {p['metadata']['name']} on node {node}, which failed it "
                        f"{created - ft:.0f}s before (avoided for {ttl:.0f}s)"
                    )
            # every job states a phase
            if not st.get("phase") and self.op_up_for(t.created) > STATE_WITHIN_S:
                self.violation(f"{name}: no phase {STATE_WITHIN_S:.0f}s after creation")
            # recovery of a pending fault
            if t.pending is not None:
                f = t.pending
                if (
                    a > f.jobs[name]
                    and st.get("phase") == "Running"
                    and self._gang_running(g.get(a, []), t.nodes)
                ):
                    f.recovered[name] = round(now_s() - f.t, 2)
                    t.pending = None
                    self.note(
                        f"recovered {name} from fault #{f.id} ({f.kind}) in {f.recovered[name]:.2f}s (attempt {a})"
                    )
                    self._check_edit_reached(snap, name, a, t)
            infra = int((st.get("restarts") or {}).get("infrastructure") or 0)
            app = int((st.get("restarts") or {}).get("application") or 0)
            if app:
                self.violation(f"{name}: {app} application restart(s), none injected")
            if self.steady(snap, name) and infra != t.expected_infra:
                self.violation(f"{name}: restarts.infrastructure {infra} != {t.expected_infra} injected")
            events = snap["gpu_events"].get(t.uid, 0)
            if events != infra:
                if final:
                    self.violation(
                        f"{name}: {events} GPUFailure Event(s) for {infra} infrastructure restart(s)"
                    )
                t.event_mismatch_since = t.event_mismatch_since or now_s()
                if self.op_up_for(t.event_mismatch_since) > EVENT_LAG_S:
                    self.violation(
                        f"{name}: {events} GPUFailure Event(s) for {infra} infrastructure restart(s)"
                    )
            else:
                t.event_mismatch_since = None

    @staticmethod
    def _gang_running(pods: list[dict[str, Any]], n: int) -> bool:
        return len(pods) == n and all(p["status"].get("phase") == "Running" for p in pods)

    def _check_edit_reached(self, snap: dict[str, Any], name: str, attempt: int, t: TrackedJob) -> None:
        """The attempt after a fault runs the spec of the last edit made before the fault (or a later one)."""
        cm = next((c for c in snap["cms"] if c["metadata"]["name"] == f"{name}-a{attempt}-job"), None)
        if cm is None:
            return  # superseded already by a later attempt
        gen = int((cm["metadata"].get("annotations") or {}).get("thinktune.io/generation") or 0)
        if gen < t.edit_gen_at_fault:
            self.violation(
                f"{name}: attempt {attempt} ConfigMap has generation {gen}; edit {t.edit_gen_at_fault} "
                "came before the fault"
            )
            return
        spec = (yaml.safe_load(cm["data"]["job.yaml"]) or {}).get("spec") or {}
        lr = (spec.get("training") or {}).get("learningRate")
        if gen in t.edits and lr != t.edits[gen]:
            self.violation(
                f"{name}: attempt {attempt} runs learningRate {lr}, generation {gen} set {t.edits[gen]}"
            )
        elif t.edit_gen_at_fault > 1:
            self.counts["attempts_running_an_edited_spec"] += 1

    # ------------------------------------------------------------------------------------------- actions
    def act(self, snap: dict[str, Any]) -> None:
        names = [n for n in self.jobs if n in snap["jobs"]]
        steady = [n for n in names if self.steady(snap, n)]
        unbound = [p for p in snap["pods"] if not p["spec"].get("nodeName")]
        # a node is repaired only after the jobs its fault hit have moved away: a fault healed before the
        # operator saw it (it may be down) is no fault to the workload, and would count as one injected
        busy = {t.pending.node for t in self.jobs.values() if t.pending is not None}
        repairable = sorted(n for n in self.bad_nodes if n not in busy)
        choices: list[tuple[str, float]] = [
            ("create", 3.0 if len(self.jobs) < self.max_jobs else 0.0),
            ("delete", 0.6 if len(names) > 3 else 0.0),
            ("edit", 1.0 if names else 0.0),
            ("fault", 4.0 if steady else 0.0),
            ("repair", 1.5 * len(repairable)),
            ("kill", 0.8 if self.op_ready_at is not None and now_s() - self.op_ready_at > 5 else 0.0),
            ("idle", 1.0),
        ]
        what = self.rng.choices([c for c, _ in choices], [w for _, w in choices])[0]
        if what == "create":
            self.create_job()
        elif what == "delete":
            self.delete_job(self.rng.choice(names))
        elif what == "edit":
            self.edit_job(self.rng.choice(names))
        elif what == "fault":
            self.inject(snap, steady, bool(unbound))
        elif what == "repair":
            self.repair(self.rng.choice(repairable))
        elif what == "kill":
            self.kill_operator()

    def create_job(self) -> None:
        self.seq += 1
        name = f"soak-{self.seq:03d}"
        nodes, gpus = self.rng.choice([(1, 4), (1, 8), (2, 4), (2, 8)])
        doc = ftj(
            name,
            self.ns,
            self.ns,
            nodes=nodes,
            gpus=gpus,
            runPolicy={"infraFailureLimit": 1000, "backoffLimit": 0},
        )
        doc["spec"]["training"] = {"learningRate": 1e-4}
        cr = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, doc)
        self.jobs[name] = TrackedJob(name, cr["metadata"]["uid"], nodes, gpus, now_s(), edits={1: 1e-4})
        self.counts["jobs_created"] += 1
        self.note(f"create {name} ({nodes} worker(s) x {gpus} GPU)")

    def delete_job(self, name: str) -> None:
        t = self.jobs.pop(name)
        self.deleted[t.uid] = now_s()
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, propagation_policy="Background"
        )
        self.counts["jobs_deleted"] += 1
        if t.pending is not None:
            self.counts["faults_abandoned_by_deletion"] += 1
        self.note(f"delete {name}")

    def edit_job(self, name: str) -> None:
        lr = round(self.rng.uniform(1e-5, 5e-4), 7)
        cr = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": {"training": {"learningRate": lr}}}
        )
        t = self.jobs[name]
        t.last_edit_gen = int(cr["metadata"]["generation"])
        t.edits[t.last_edit_gen] = lr
        self.counts["spec_edits"] += 1
        self.note(f"edit {name}: learningRate {lr} (generation {t.last_edit_gen})")

    def inject(self, snap: dict[str, Any], steady: list[str], unbound: bool) -> None:
        """The kind injected least so far (ties at random) that can be injected now; its jobs are charged."""
        least = sorted(FAULTS, key=lambda k: (self.counts[f"fault_{k}"], self.rng.random()))
        for kind in least:
            target = self._node_target(snap, steady, unbound) if kind in NODE_FAULTS else None
            if kind in NODE_FAULTS and target is None:
                continue
            break
        pod = None
        if target is not None:
            node, targets = target
            self._node_fault(kind, node)
            self.bad_nodes[node] = (kind, time.time())
        else:
            name = self.rng.choice(steady)
            pod = self.rng.choice(self.gang(snap, name)[int(snap["jobs"][name]["status"]["attempt"])])
            node, targets = pod["spec"]["nodeName"], [name]
            if kind == "exit75":
                self._exit75(pod, node)
            else:
                self.core.create_namespaced_pod_eviction(
                    pod["metadata"]["name"],
                    self.ns,
                    self.client.V1Eviction(
                        metadata=self.client.V1ObjectMeta(name=pod["metadata"]["name"], namespace=self.ns)
                    ),
                )
        f = Fault(len(self.faults) + 1, kind, now_s(), time.time(), node, {})
        for j in targets:
            f.jobs[j] = int(snap["jobs"][j]["status"]["attempt"])
            self.jobs[j].pending = f
            self.jobs[j].expected_infra += 1
            self.jobs[j].edit_gen_at_fault = self.jobs[j].last_edit_gen
        self.faults.append(f)
        self.counts[f"fault_{kind}"] += 1
        self.note(f"fault #{f.id} {kind} on {node} -> {', '.join(targets)}")
        if self.op_up_for(0) > 0 and self.rng.random() < 0.3:
            time.sleep(self.rng.uniform(0.0, 1.5))  # kill the operator in the middle of the restart
            self.kill_operator()

    def _node_target(
        self, snap: dict[str, Any], steady: list[str], unbound: bool
    ) -> tuple[str, list[str]] | None:
        """A healthy node with pods, while every job is steady: a job that is creating its gang (new, or
        recovering) could get a worker bound to the node between this snapshot and the fault, and take a
        restart nobody charged to it."""
        live = [n for n in self.jobs if n in snap["jobs"]]
        if unbound or len(self.bad_nodes) >= self.max_bad_nodes or set(live) - set(steady):
            return None
        jobs_on: dict[str, set[str]] = {}
        for p in snap["pods"]:
            if n := p["spec"].get("nodeName"):
                jobs_on.setdefault(n, set()).add(self.job_of(p)[0] or "")
        cands = [
            n
            for n in self.pool
            if n not in self.bad_nodes and jobs_on.get(n) and all(j in steady for j in jobs_on[n])
        ]
        if not cands:
            return None
        node = self.rng.choice(sorted(cands))
        return node, sorted(jobs_on[node])

    def _exit75(self, pod: dict[str, Any], node: str) -> None:
        """Exit 75 either as kwok's container failure (the exit code alone) or as the kubelet reports a worker
        that died on a GPU error: exit 75 and the termination message the trainer's own writer leaves."""
        name = pod["metadata"]["name"]
        if self.rng.random() < 0.5:
            self.core.patch_namespaced_pod(
                name,
                self.ns,
                {
                    "metadata": {
                        "annotations": {POD_FAIL_EXIT: str(contract.EXIT_GPU_FAILURE), POD_FAIL_DELAY: "0"}
                    }
                },
            )
            self.core.patch_namespaced_pod(name, self.ns, {"metadata": {"labels": {POD_FAIL_LABEL: "true"}}})
            return
        msg = contract.FailureMessage(
            reason="GPUFailure",
            category="gpu_failure",
            detail="uncorrectable ECC error",
            message="CUDA error: uncorrectable ECC error encountered (XID 48)",
            gpu="0",
            node=node,
            pod=name,
            exit_code=contract.EXIT_GPU_FAILURE,
        )
        statuses = terminated_statuses(pod, contract.EXIT_GPU_FAILURE, msg)
        self.core.patch_namespaced_pod_status(
            name, self.ns, {"status": {"phase": "Failed", "containerStatuses": statuses}}
        )

    def _node_fault(self, kind: str, node: str) -> None:
        if kind == "not_ready":
            self.core.patch_node(node, {"metadata": {"annotations": {f"{NOT_READY_LABEL}/delay": "0"}}})
            self.core.patch_node(node, {"metadata": {"labels": {NOT_READY_LABEL: "true"}}})
        elif kind == "cordon":
            self.core.patch_node(node, {"spec": {"unschedulable": True}})
        elif kind == "taint":
            n = self.core.read_node(node)
            taints = [t for t in n.spec.taints or []] + [
                self.client.V1Taint(key=GPU_TAINT, value="xid79", effect="NoSchedule")
            ]
            self.core.patch_node(node, {"spec": {"taints": taints}})
        elif kind == "alloc_drop":
            self.core.patch_node_status(node, {"status": {"allocatable": {"nvidia.com/gpu": "6"}}})

    def repair(self, node: str) -> None:
        kind, _ = self.bad_nodes.pop(node)
        if kind == "not_ready":
            self.core.patch_node(node, {"metadata": {"labels": {NOT_READY_LABEL: None}}})
            n = json.loads(self.core.read_node(node, _preload_content=False).data)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            conds = n["status"]["conditions"]
            for c in conds:
                if c["type"] == "Ready":
                    c.update(
                        status="True",
                        reason="KubeletReady",
                        message="repaired",
                        lastHeartbeatTime=stamp,
                        lastTransitionTime=stamp,
                    )
            self.core.patch_node_status(node, {"status": {"conditions": conds}})
        elif kind == "cordon":
            self.core.patch_node(node, {"spec": {"unschedulable": False}})
        elif kind == "taint":
            n = self.core.read_node(node)
            self.core.patch_node(
                node, {"spec": {"taints": [t for t in n.spec.taints or [] if t.key != GPU_TAINT]}}
            )
        elif kind == "alloc_drop":
            self.core.patch_node_status(node, {"status": {"allocatable": {"nvidia.com/gpu": "8"}}})
        self.counts["repairs"] += 1
        self.note(f"repair {node} ({kind})")

    def kill_operator(self) -> None:
        self.op.kill()
        self.op_ready_at = None
        self.op_down_until = now_s() + self.rng.uniform(0.0, 3.0)
        self.counts["operator_kills"] += 1
        self.note("operator kill -9")

    def maybe_restart_operator(self) -> None:
        if self.op_down_until is not None and now_s() >= self.op_down_until:
            self.op.start(wait=False)
            self.op_down_until = None
            self.op_started_at = now_s()
            self.op_ready_at = None
            self.note("operator started")
        if self.op_ready_at is None and self.op_down_until is None and self.op.metrics_text() is not None:
            self.op_ready_at = now_s()
            self.startup_s.append(round(self.op_ready_at - self.op_started_at, 2))
            self.note(f"operator ready ({self.startup_s[-1]:.2f}s after start)")

    def op_up_for(self, since: float) -> float:
        """How long the operator has been up and serving since `since` (0 while it is down or starting)."""
        if self.op_ready_at is None or self.op_down_until is not None:
            return 0.0
        return now_s() - max(since, self.op_ready_at)

    # ------------------------------------------------------------------------------------------- run
    def poll(self, final: bool = False) -> dict[str, Any] | None:
        try:
            snap = self.snapshot()
        except Exception as e:  # noqa: BLE001 - a slow apiserver poll is retried, not a violation
            self.note(f"poll failed: {e}")
            return None
        self.check(snap, final)
        return snap

    def run(self, seconds: float, settle_s: float = 90.0) -> dict[str, Any]:
        self.note(f"seed {self.seed}; {len(self.pool)} nodes; chaos for {seconds:.0f}s")
        for _ in range(3):
            self.create_job()
        end = now_s() + seconds
        next_act = now_s() + 2.0
        while now_s() < end:
            self.maybe_restart_operator()
            snap = self.poll()
            if snap is not None and now_s() >= next_act:
                try:
                    self.act(snap)
                except Exception as e:  # noqa: BLE001 - e.g. the pod went away meanwhile
                    self.note(f"action failed: {type(e).__name__}: {str(e)[:200]}")
                next_act = now_s() + self.rng.uniform(0.3, 1.7)
            time.sleep(0.3)
        return self.settle(settle_s)

    def settle(self, timeout: float) -> dict[str, Any]:
        """Chaos over: repair every node, operator up; every job converges (or says why) and is counted."""
        self.note("chaos over: operator up, pending faults recover, then every node is repaired")
        if self.op_down_until is not None:
            self.op_down_until = now_s()
            self.maybe_restart_operator()
        deadline = now_s() + timeout
        while now_s() < deadline and any(t.pending is not None for t in self.jobs.values()):
            self.poll()
            time.sleep(0.3)
        for node in sorted(self.bad_nodes):
            self.repair(node)
        snap = None
        while now_s() < deadline:
            snap = self.poll()
            if snap is not None and all(self.steady(snap, n) for n in self.jobs if n in snap["jobs"]):
                break
            time.sleep(0.5)
        time.sleep(EVENT_LAG_S / 2)
        snap = self.poll(final=True)
        converged, reasons = [], {}
        for name in sorted(self.jobs):
            cr = (snap or {"jobs": {}})["jobs"].get(name)
            st = (cr or {}).get("status") or {}
            if snap is not None and self.steady(snap, name):
                converged.append(name)
                continue
            why = next(
                (
                    c
                    for c in st.get("conditions") or []
                    if c["type"] in ("Waiting", "Blocked", "Failed")
                    and c["status"] == "True"
                    and c.get("reason")
                ),
                None,
            )
            if why is None:
                self.violation(
                    f"{name}: neither converged nor states a reason (phase {st.get('phase')}: {st.get('message')})"
                )
            else:
                reasons[name] = f"{why['reason']}: {why.get('message', '')}"
            if self.jobs[name].pending is not None:
                self.violation(f"{name}: fault #{self.jobs[name].pending.id} never recovered")
        return self.report(converged, reasons)

    def report(self, converged: list[str], reasons: dict[str, str]) -> dict[str, Any]:
        times = [s for f in self.faults for s in f.recovered.values()]
        injected = len(self.faults)
        return {
            "seed": self.seed,
            "nodes": len(self.pool),
            "faults_injected": injected,
            "faults_by_kind": {k: self.counts[f"fault_{k}"] for k in FAULTS},
            "job_recoveries_expected": sum(len(f.jobs) for f in self.faults),
            "job_recoveries": len(times),
            "faults_recovered": sum(1 for f in self.faults if len(f.recovered) == len(f.jobs)),
            "faults_abandoned_by_deletion": self.counts["faults_abandoned_by_deletion"],
            "time_to_recover_s": {
                "p50": pct(times, 0.5),
                "p99": pct(times, 0.99),
                "max": max(times, default=None),
            },
            "operator_kills": self.counts["operator_kills"],
            "operator_starts": self.op.starts,
            "operator_start_to_ready_s": {
                "p50": pct(self.startup_s, 0.5),
                "max": max(self.startup_s, default=None),
            },
            "jobs_created": self.counts["jobs_created"],
            "jobs_deleted": self.counts["jobs_deleted"],
            "spec_edits": self.counts["spec_edits"],
            "attempts_running_an_edited_spec": self.counts["attempts_running_an_edited_spec"],
            "repairs": self.counts["repairs"],
            "jobs_at_end": len(self.jobs),
            "jobs_converged": len(converged),
            "jobs_not_converged_with_reason": reasons,
            "polls": self.polls,
            "violations": self.violations,
        }


OPERATOR_ENV = {
    # a node that failed a job without showing it (exit 75) comes back within the soak
    "THINKTUNE_FAILED_NODE_TTL_SECONDS": "20",
    "THINKTUNE_RESYNC_SECONDS": "10",
}


def soak(
    cp: Any, seconds: float, seed: int, nodes: int, log_dir: Path, ns: str = "soak", log=print
) -> dict[str, Any]:
    """Pool, namespace, an operator of its own (it gets killed), the soak; the operator is stopped after."""
    cluster = Cluster(cp)
    cluster.namespace(ns)
    pool = cluster.gpu_pool(ns, nodes)
    op = OperatorProcess(cp.kubeconfig, log_dir / "operator.log", env=OPERATOR_ENV).start()
    s = Soak(cluster, op, ns, pool, seed, log=log)
    t0 = time.monotonic()
    try:
        result = s.run(seconds)
    finally:
        op.stop()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["chaos_s"] = seconds
    result["operator_log"] = str(op.log_path)
    # the whole timeline beside the operator log, pass or fail: a violation seen once can be read afterwards
    (Path(log_dir) / "timeline.txt").write_text(
        "\n".join([*s.timeline, "---- violations ----", *result["violations"]]) + "\n"
    )
    if result["violations"]:
        log(f"---- timeline (seed {seed}) ----")
        for line in s.timeline:
            log(line)
        jobs = sorted({v.split(":")[0] for v in result["violations"]})
        lines = op.log_path.read_text(errors="replace").splitlines()
        for job in jobs:
            log(f"---- operator log about {job} (last 60 lines; all of it in {op.log_path}) ----")
            for line in [x for x in lines if job in x or x.startswith("=====")][-60:]:
                log(line[:400])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos_soak.json"))
    ap.add_argument("--state-dir", default=None, help="sandbox state dir (default: a temporary one)")
    ap.add_argument(
        "--log-dir", default=None, help="where the operator log is kept (default: a new temp dir)"
    )
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"seed {seed}", flush=True)
    from thinktune_sandbox import ControlPlane

    logs = Path(
        args.log_dir or tempfile.mkdtemp(prefix="chaos-soak-logs-")
    )  # kept: read it after a violation
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chaos-soak-") as tmp:
        state = Path(args.state_dir or Path(tmp) / "sandbox")
        cp = ControlPlane(state, nodes=1)
        cp.up()
        try:
            cp.wait_for_garbage_collection()  # deleted jobs' children are counted as orphans after 30 s
            result = soak(cp, args.seconds, seed, args.nodes, logs, log=lambda m: print(m, flush=True))
        finally:
            cp.down()
    out = {
        "command": "uv run --no-sync python bench/chaos_soak.py " + " ".join(sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "loadavg_at_end": list(os.getloadavg()),
        **result,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
