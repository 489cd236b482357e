"""Operator at scale on the sandbox control plane: N FineTuneJobs (1 GPU each) on kwok GPU nodes.

Measures: time to create all CRs, time until every worker pod is scheduled / Running and every job reports
phase Running, reconcile latency (operator histogram: p50/p99 of one reconcile; and end to end: CR creation ->
status Running, from the API timestamps), work-queue wait, operator memory (RSS) over the run, and GPU-failure
-> replacement latency (kwok chaos: worker exits with the GPU-failure code 75; time until the new gang of that
job is Running on another node, timed by a pod watch).

    uv run --no-sync python bench/operator_scale.py --jobs 1000 --nodes 130
writes bench/results/operator_scale.json (with the command line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from thinktune_sandbox import ControlPlane
from thinktune_sandbox.testing import Cluster, OperatorProcess, ftj, wait_for

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
GPU_EXIT = "75"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 4)


def hist_quantile(text: str, name: str, q: float, labels: dict[str, str] | None = None) -> float | None:
    """Prometheus-style histogram_quantile over a scraped histogram (linear within the bucket)."""
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name != f"{name}_bucket":
                continue
            if labels and any(s.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    if not buckets:
        return None
    les = sorted(buckets)
    total = buckets[les[-1]]
    if total == 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return round(prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9)), 4)
        prev_le, prev_c = le, c
    return None


def hist_count(text: str, name: str) -> float:
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == f"{name}_count"
    )


def ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class RssSampler(threading.Thread):
    def __init__(self, op: OperatorProcess) -> None:
        super().__init__(daemon=True)
        self.op = op
        self.samples: list[int] = []
        self.stop_ = threading.Event()

    def run(self) -> None:
        while not self.stop_.is_set():
            try:
                self.samples.append(self.op.rss_bytes())
            except Exception:  # noqa: BLE001 - process restarting
                pass
            time.sleep(1)


def pod_table(cluster: Cluster) -> list[tuple[str, str, str, str]]:
    out = cluster.kubectl(
        "get",
        "pods",
        "-n",
        NS,
        "--no-headers",
        "-o",
        "custom-columns=N:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,"
        "ATT:.metadata.labels.thinktune\\.io/attempt",
    ).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=130)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--failures", type=int, default=20)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "operator_scale.json"))
    ap.add_argument("--state-dir", default=None)
    args = ap.parse_args()

    state = Path(args.state_dir or tempfile.mkdtemp(prefix="tt-bench-"))
    result: dict = {
        "command": "uv run --no-sync python bench/operator_scale.py " + " ".join(sys.argv[1:]),
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": vars(args) | {"gpus_per_job": 1},
    }
    t = time.monotonic()
    cp = ControlPlane(state, nodes=args.nodes, gpus_per_node=args.gpus_per_node, ready_timeout_s=300)
    cp.up()
    result["sandbox_up_s"] = round(time.monotonic() - t, 1)
    cluster = Cluster(cp)
    op = OperatorProcess(
        cp.kubeconfig,
        state / "operator.log",
        env={
            "THINKTUNE_WORKERS": str(args.workers),
            "THINKTUNE_RESYNC_SECONDS": "60",
            "THINKTUNE_PROGRESS_INTERVAL": "60",
        },
    )
    try:
        cluster.namespace(NS)
        op.start()
        rss = RssSampler(op)
        rss.start()
        idle_rss = op.rss_bytes()
        docs = [ftj(f"job-{i:04d}", NS, None, nodes=1, gpus=1) for i in range(args.jobs)]
        t0 = time.monotonic()
        for i in range(0, len(docs), 100):
            cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs[i : i + 100]))
        t_created = time.monotonic() - t0
        sched_at = run_at = None
        while True:
            rows = pod_table(cluster)
            scheduled = sum(1 for r in rows if r[1] != "<none>")
            running = sum(1 for r in rows if r[2] == "Running")
            now = time.monotonic() - t0
            if sched_at is None and scheduled >= args.jobs:
                sched_at = now
            if run_at is None and running >= args.jobs:
                run_at = now
                break
            if now > 1200:
                raise RuntimeError(f"timeout: {scheduled} scheduled, {running} running")
            time.sleep(1)
        jobs_running_at = wait_for(
            "every job reports Running",
            lambda: (
                (
                    out := cluster.kubectl(
                        "get",
                        "finetunejobs",
                        "-n",
                        NS,
                        "--no-headers",
                        "-o",
                        "custom-columns=P:.status.phase",
                    ).stdout.split()
                )
                and sum(1 for p in out if p == "Running") >= args.jobs
                and time.monotonic() - t0
            ),
            600,
            1,
        )
        items = cluster.list("finetunejobs", NS)
        e2e = []
        for it in items:
            c = next((c for c in it["status"].get("conditions", []) if c["type"] == "Running"), None)
            if c:
                e2e.append(ts(c["lastTransitionTime"]) - ts(it["metadata"]["creationTimestamp"]))
        text = op.metrics_text() or ""
        result["create"] = {
            "jobs": args.jobs,
            "create_all_crs_s": round(t_created, 2),
            "all_pods_scheduled_s": round(sched_at or -1, 2),
            "all_pods_running_s": round(run_at or -1, 2),
            "all_jobs_status_running_s": round(jobs_running_at, 2),
        }
        result["reconcile_latency_s"] = {
            "one_reconcile_p50": hist_quantile(
                text, "thinktune_operator_reconcile_duration_seconds", 0.5, {"kind": "FineTuneJob"}
            ),
            "one_reconcile_p99": hist_quantile(
                text, "thinktune_operator_reconcile_duration_seconds", 0.99, {"kind": "FineTuneJob"}
            ),
            "reconciles": hist_count(text, "thinktune_operator_reconcile_duration_seconds"),
            "queue_wait_p50": hist_quantile(text, "thinktune_operator_queue_wait_seconds", 0.5),
            "queue_wait_p99": hist_quantile(text, "thinktune_operator_queue_wait_seconds", 0.99),
            "cr_created_to_status_running_p50": pct(e2e, 0.5),
            "cr_created_to_status_running_p99": pct(e2e, 0.99),
            "cr_created_to_status_running_max": round(max(e2e), 2) if e2e else None,
            "note": "one_reconcile_* from the operator's histogram (bucket interpolation); cr_created_to_* from "
            "API timestamps (1 s resolution) and include scheduling + kwok start.",
        }
        # ---- GPU failures: a pod watch stamps every transition with a monotonic clock (no polling error)
        rows = pod_table(cluster)
        victims = [r for r in rows if r[2] == "Running"][: args.failures]
        jobs = {name.rsplit("-a", 1)[0]: node for name, node, _p, _a in victims}
        failed_at: dict[str, float] = {}
        replaced_at: dict[str, float] = {}
        replaced_node: dict[str, str] = {}
        stop = threading.Event()
        ready = threading.Event()

        def watch_pods() -> None:
            from kubernetes import client, config, watch

            api = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig)))
            w = watch.Watch()
            sel = f"thinktune.io/job in ({','.join(jobs)})"
            for ev in w.stream(api.list_namespaced_pod, NS, label_selector=sel, timeout_seconds=180):
                pod = ev["object"]
                ready.set()  # the initial ADDED events of the victims: the watch is live
                job = pod.metadata.labels["thinktune.io/job"]
                att = pod.metadata.labels["thinktune.io/attempt"]
                if att == "0" and pod.status.phase == "Failed":
                    failed_at.setdefault(job, time.monotonic())
                if att == "1" and pod.status.phase == "Running" and job not in replaced_at:
                    replaced_at[job] = time.monotonic()
                    replaced_node[job] = pod.spec.node_name
                if stop.is_set() or len(replaced_at) == len(jobs):
                    w.stop()

        watcher = threading.Thread(target=watch_pods, daemon=True)
        watcher.start()
        assert ready.wait(60), "pod watch did not start"
        for name, _node, _ph, _a in victims:
            cluster.kubectl(
                "annotate",
                "pod",
                name,
                "-n",
                NS,
                f"pod-container-running-failed.stage.kwok.x-k8s.io/exit-code={GPU_EXIT}",
                "pod-container-running-failed.stage.kwok.x-k8s.io/delay=0",
            )
        t_inject = {}
        for name, _node, _ph, _a in victims:
            cluster.kubectl(
                "label", "pod", name, "-n", NS, "pod-container-running-failed.stage.kwok.x-k8s.io=true"
            )
            t_inject[name.rsplit("-a", 1)[0]] = time.monotonic()
        watcher.join(150)
        stop.set()
        for job, node in replaced_node.items():
            assert node != jobs[job], f"{job} replaced onto its failed node"
        from_label = [replaced_at[j] - t_inject[j] for j in replaced_at if j in t_inject]
        from_failed = [replaced_at[j] - failed_at[j] for j in replaced_at if j in failed_at]
        text = op.metrics_text() or ""
        result["gpu_failure_replacement_s"] = {
            "failures_injected": len(victims),
            "replaced": len(replaced_at),
            "pod_failed_to_new_gang_running_p50": pct(from_failed, 0.5),
            "pod_failed_to_new_gang_running_p99": pct(from_failed, 0.99),
            "chaos_label_to_new_gang_running_p50": pct(from_label, 0.5),
            "chaos_label_to_new_gang_running_p99": pct(from_label, 0.99),
            "operator_detect_to_gang_created_p50": hist_quantile(
                text, "thinktune_operator_gpu_failure_replacement_seconds", 0.5
            ),
            "operator_detect_to_gang_created_p99": hist_quantile(
                text, "thinktune_operator_gpu_failure_replacement_seconds", 0.99
            ),
            "note": "from a pod watch: pod_failed_* = worker pod reported Failed (exit code 75) -> every pod of the "
            "new gang Running on another node; chaos_label_* also includes kwok's chaos stage (0-1 s "
            f"jitter). operator_* = detection -> replacement gang created (histogram). {args.jobs} jobs present.",
        }
        rss.stop_.set()
        result["operator_memory"] = {
            "rss_idle_mib": round(idle_rss / 2**20, 1),
            "rss_peak_mib": round(max(rss.samples) / 2**20, 1),
            "rss_end_mib": round(rss.samples[-1] / 2**20, 1),
        }
    finally:
        op.stop()
        cp.down()
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
