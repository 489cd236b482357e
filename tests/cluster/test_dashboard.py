"""Every panel of helm/thinktune/dashboards/thinktune.json returns data from a REAL Prometheus (Debian package)
that scrapes (1) the real operator's metrics endpoint while it runs jobs on the sandbox (a dataset build, a
training job through a GPU failure and gang restart to success, and a running job) and (2) a trainer-style
exporter: the trainer's real one (thinktune.train.exporter, which needs only prometheus_client). DCGM panels: dcgm-exporter needs real GPUs, so the
test exporter also serves DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_GPU_UTIL with dcgm-exporter's labels (pod,
namespace, gpu, UUID) for the worker pods."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from thinktune import contract
from thinktune.spec import DatasetCounts
from thinktune.train.exporter import PromMetrics
from thinktune_sandbox.testing import Cluster, OperatorProcess, free_port, ftj, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "thinktune" / "dashboards" / "thinktune.json"
NS = "dash"
POD_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"


def prometheus_bin() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )


class TrainerExporter:
    """One trainer exporter per (job, rank), as on the pods, fed with values that move over time; plus a
    dcgm-exporter stand-in (DCGM needs real GPUs) with dcgm-exporter's names and k8s labels."""

    def __init__(self, jobs: list[str]) -> None:
        self.source = "thinktune.train.exporter.PromMetrics"
        # port 0: each exporter picks a free port (on the pods it is metricsPort + LOCAL_RANK)
        self.ranks = {(j, r): PromMetrics(job=j, namespace=NS, rank=r, port=0) for j in jobs for r in (0, 1)}
        self.dcgm_reg = CollectorRegistry()
        dcgm = ["gpu", "UUID", "device", "modelName", "Hostname", "namespace", "pod", "container"]
        self.fb = Gauge(
            "DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", dcgm, registry=self.dcgm_reg
        )
        self.util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", dcgm, registry=self.dcgm_reg)
        self.dcgm_port = free_port()
        self.jobs = jobs
        self._stop = threading.Event()

    @property
    def targets(self) -> list[str]:
        return [f"127.0.0.1:{m.port}" for m in self.ranks.values()] + [f"127.0.0.1:{self.dcgm_port}"]

    def start(self) -> TrainerExporter:
        assert all(m.port for m in self.ranks.values()), "trainer exporter did not start"
        start_http_server(self.dcgm_port, addr="127.0.0.1", registry=self.dcgm_reg)
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        t = 0
        while not self._stop.is_set():
            t += 1
            for (_j, rank), m in self.ranks.items():
                m.set("step", t)
                m.set("total_steps", 1000)
                m.set("epoch", t / 100)
                m.set("loss", 2.5 * math.exp(-t / 50) + 0.3)
                m.set("eval_loss", 2.6 * math.exp(-t / 60) + 0.35)
                m.set("learning_rate", 1e-4 * min(1.0, t / 10))
                m.set("grad_norm", 1.0 + 0.1 * math.sin(t))
                m.set("tokens_per_second", 4000 + 100 * math.sin(t))
                m.set("eta_seconds", max(0, 3600 - 10 * t))
                m.set("gpu_memory_allocated_bytes", 30e9 + 1e8 * (t % 7) + rank)
                m.set("gpu_utilization_ratio", 0.9 + 0.01 * (t % 10))
                m.set("teacher_forced_char_accuracy", min(0.99, 0.5 + t / 200))
                m.set("teacher_forced_term_accuracy", min(0.99, 0.4 + t / 200))
            for j in self.jobs:
                for gpu in range(2):
                    d = (
                        str(gpu),
                        f"GPU-{gpu:08d}",
                        f"nvidia{gpu}",
                        "NVIDIA H200",
                        "kwok",
                        NS,
                        f"{j}-a1-w0",
                        "trainer",
                    )
                    self.fb.labels(*d).set(60000 + 10 * t)
                    self.util.labels(*d).set(90 + (t % 10))
            time.sleep(0.5)


def prom_query(port: int, q: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def substitute(expr: str) -> str:
    return (
        expr.replace("$namespace", NS)
        .replace("$job", ".*")
        .replace("$__rate_interval", "2m")
        .replace("$__range", "5m")
    )


@pytest.mark.skipif(
    prometheus_bin() is None,
    reason="prometheus missing: apt-get install -y prometheus (tools/build-binaries.sh --prometheus)",
)
def test_every_dashboard_panel_returns_data(control_plane, tmp_path):
    cluster = Cluster(control_plane)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log").start()
    exporter = TrainerExporter(["train", "live"]).start()
    prom = None
    try:
        cluster.namespace(NS)
        cluster.gpu_pool(NS, 3)
        tol = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
        cluster.create(
            {
                "apiVersion": "thinktune.io/v1alpha1",
                "kind": "DatasetBuild",
                "metadata": {"name": "crypto", "namespace": NS},
                "spec": {"source": {"path": "corpus"}, "output": {"path": "ds"}, "pod": {"tolerations": tol}},
            }
        )
        build = wait_for(
            "build pod",
            lambda: [
                p
                for p in cluster.list("pods", NS, "app.kubernetes.io/component=dataset-build")
                if p["status"].get("phase") == "Running"
            ],
            30,
        )[0]
        cluster.complete_pod(
            NS,
            build["metadata"]["name"],
            contract.DatasetResult(
                counts=DatasetCounts(documents=3, samples=120, rejects=5, train=84, val=18, test=18),
                output_path="/workspace/thinktune-workspace/ds",
                report_path="/workspace/thinktune-workspace/ds/report.json",
            ),
        )
        cluster.create(ftj("train", NS, NS, nodes=1), ftj("live", NS, NS, nodes=1))

        def running(job, attempt):
            return [
                p
                for p in cluster.worker_pods(NS, job)
                if p["status"].get("phase") == "Running"
                and p["metadata"]["labels"]["thinktune.io/attempt"] == str(attempt)
            ]

        (p0,) = wait_for("train running", lambda: running("train", 0), 30)
        (live,) = wait_for("live running", lambda: running("live", 0), 30)
        cluster.kubectl(
            "annotate",
            "pod",
            live["metadata"]["name"],
            "-n",
            NS,
            'thinktune.io/progress={"step": 50, "totalSteps": 200, "loss": 1.4, "etaSeconds": 900}',
        )
        # GPU failure -> gang restart (restarts, GPU failures, replacement latency), then success with eval metrics
        cluster.kubectl(
            "annotate",
            "pod",
            p0["metadata"]["name"],
            "-n",
            NS,
            "pod-container-running-failed.stage.kwok.x-k8s.io/exit-code=75",
            "pod-container-running-failed.stage.kwok.x-k8s.io/delay=0",
        )
        cluster.kubectl("label", "pod", p0["metadata"]["name"], "-n", NS, f"{POD_FAIL_LABEL}=true")
        (p1,) = wait_for("train attempt 1", lambda: running("train", 1), 30)
        cluster.complete_pod(
            NS,
            p1["metadata"]["name"],
            contract.TrainResult(metrics={"eval_loss": 1.05, "rouge_l": 0.33, "term_accuracy": 0.7}),
        )
        wait_for(
            "train Succeeded",
            lambda: (
                (cluster.get("finetunejob", "train", NS) or {}).get("status", {}).get("phase") == "Succeeded"
            ),
            30,
        )
        wait_for(
            "live progress",
            lambda: "thinktune_operator_job_progress_percent" in (op.metrics_text() or ""),
            30,
        )

        # a real Prometheus scraping both endpoints every second
        pport = free_port()
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "thinktune-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{op.metrics_port}"]}],
                },
                # honor_labels: the trainer's own `job`/`namespace` labels win over Prometheus' target labels,
                # as with the chart's PodMonitor for trainer pods
                {
                    "job_name": "trainer-pods",
                    "honor_labels": True,
                    "static_configs": [{"targets": exporter.targets}],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        prom = subprocess.Popen(
            [
                prometheus_bin(),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{pport}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            "prometheus ready",
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{pport}/-/ready", timeout=2).status == 200,
            60,
            0.5,
        )
        n_targets = 1 + len(exporter.targets)
        wait_for("all targets up", lambda: len(prom_query(pport, "up == 1")) == n_targets, 60, 0.5)
        print(f"trainer exporter: {exporter.source}")
        time.sleep(8)  # a few scrapes, so rate() windows have >= 2 samples
        cluster.kubectl(
            "annotate",
            "pod",
            live["metadata"]["name"],
            "-n",
            NS,
            "--overwrite",
            'thinktune.io/progress={"step": 60, "totalSteps": 200, "loss": 1.3, "etaSeconds": 850}',
        )
        time.sleep(4)

        dash = json.loads(DASHBOARD.read_text())
        # template variables resolve to values
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                q = var["definition"]
                m, label = q[len("label_values(") : -1].rsplit(",", 1)
                url = (
                    f"http://127.0.0.1:{pport}/api/v1/label/{label.strip()}/values?"
                    + urllib.parse.urlencode({"match[]": substitute(m)})
                )
                with urllib.request.urlopen(url, timeout=10) as r:
                    assert json.load(r)["data"], f"variable {var['name']} has no values"
        empty = []
        checked = 0
        for panel in dash["panels"]:
            if panel["type"] == "row":
                continue
            for t in panel["targets"]:
                q = substitute(t["expr"])
                res = prom_query(pport, q)
                values = [float(r["value"][1]) for r in res]
                checked += 1
                if not res or all(math.isnan(v) for v in values):
                    empty.append(f"{panel['title']}: {q}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
        assert checked >= 20
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(10)
        op.stop()
        cluster.kubectl("delete", "ns", NS, "--wait=false", check=False)
        cluster.delete_pool(NS)
