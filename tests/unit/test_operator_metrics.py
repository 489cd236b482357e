"""Operator metrics (scrape-time collector, counters, histograms), progress parsing and the work queue."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from thinktune_operator import progress as PR
from thinktune_operator.handlers.runtime import WorkQueue
from thinktune_operator.metrics import OperatorMetrics


def samples(reg):
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_collector_jobs_by_phase_and_forget():
    m = OperatorMetrics(CollectorRegistry())
    m.view.update(
        "FineTuneJob",
        "ml",
        "a",
        {
            "phase": "Running",
            "attempt": 2,
            "progress": {"step": 10, "totalSteps": 100, "percent": 10.0, "loss": 1.5, "etaSeconds": 300},
            "failedNodes": [{"node": "n1"}],
            "metrics": {"rougeL": 0.3},
        },
    )
    m.view.update("FineTuneJob", "ml", "b", {"phase": "Running"})
    m.view.update("DatasetBuild", "ml", "d", {"phase": "Succeeded", "counts": {"samples": 90, "rejects": 4}})
    m.view.update(
        "ModelExport", "ml", "x", {"phase": "Succeeded", "artifacts": [{"name": "m", "verified": True}]}
    )
    s = samples(m.registry)
    jobs = {(lab["kind"], lab["phase"]): v for lab, v in s["thinktune_operator_jobs"]}
    assert jobs[("FineTuneJob", "Running")] == 2 and jobs[("FineTuneJob", "Failed")] == 0
    assert jobs[("DatasetBuild", "Succeeded")] == 1
    assert s["thinktune_operator_job_progress_percent"] == [({"namespace": "ml", "finetunejob": "a"}, 10.0)]
    assert s["thinktune_operator_job_attempt"][0][1] in (2.0, 0.0)
    assert ({"namespace": "ml", "finetunejob": "a", "metric": "rougeL"}, 0.3) in s[
        "thinktune_operator_job_eval_metric"
    ]
    assert ({"namespace": "ml", "datasetbuild": "d", "count": "samples"}, 90.0) in s[
        "thinktune_operator_dataset_samples"
    ]
    m.view.forget("FineTuneJob", "ml", "a")
    s = samples(m.registry)
    assert "thinktune_operator_job_progress_percent" not in s  # no stale series after deletion


def test_counters_and_histograms():
    m = OperatorMetrics(CollectorRegistry())
    m.restarts.labels("FineTuneJob", "ml", "infrastructure", "GPUFailure").inc()
    m.gpu_failures.labels("ml", "n1", "GPUFailure").inc()
    m.reconcile_seconds.labels("FineTuneJob").observe(0.02)
    m.queue_wait_seconds.labels("FineTuneJob").observe(0.001)
    s = samples(m.registry)
    assert s["thinktune_operator_restarts_total"][0][1] == 1
    assert s["thinktune_operator_gpu_failures_total"][0][0]["node"] == "n1"
    assert any(v == 1 for lab, v in s["thinktune_operator_reconcile_duration_seconds_count"])
    assert "thinktune_operator_queue_wait_seconds_bucket" in s


TRAINER_TEXT = """# HELP thinktune_train_loss Training loss
# TYPE thinktune_train_loss gauge
thinktune_train_loss{job="j",namespace="ml",rank="0"} 1.25
thinktune_train_loss{job="j",namespace="ml",rank="1"} 9.0
# TYPE thinktune_train_step gauge
thinktune_train_step{job="j",namespace="ml",rank="0"} 120
# TYPE thinktune_train_total_steps gauge
thinktune_train_total_steps{job="j",namespace="ml",rank="0"} 500
# TYPE thinktune_train_learning_rate gauge
thinktune_train_learning_rate{job="j",namespace="ml",rank="0"} 0.0001
# TYPE thinktune_train_tokens_per_second gauge
thinktune_train_tokens_per_second{job="j",namespace="ml",rank="0"} 5234.5
# TYPE thinktune_train_eta_seconds gauge
thinktune_train_eta_seconds{job="j",namespace="ml",rank="0"} 1800
# TYPE thinktune_train_eval_loss gauge
thinktune_train_eval_loss{job="j",namespace="ml",rank="0"} NaN
# TYPE other_metric gauge
other_metric 3
"""


def test_progress_from_metrics_text():
    p = PR.progress_from_values(PR.parse_metrics_text(TRAINER_TEXT))
    assert p == {
        "step": 120,
        "totalSteps": 500,
        "loss": 1.25,
        "learningRate": 0.0001,
        "tokensPerSecond": 5234.5,
        "etaSeconds": 1800.0,
        "percent": 24.0,
        "summary": "120/500 (24%)",
    }


def test_progress_from_annotation_and_sources():
    pod = {
        "metadata": {
            "annotations": {
                "thinktune.io/progress": json.dumps({"step": 5, "totalSteps": 10, "loss": 2.0, "evil": "x"})
            }
        },
        "status": {},
    }
    p = PR.parse_annotation(pod)
    assert p == {"step": 5, "totalSteps": 10, "loss": 2.0, "percent": 50.0, "summary": "5/10 (50%)"}
    assert PR.make_source("annotation")(pod, 9400) == p
    assert PR.make_source("auto")(pod, 9400) == p
    assert PR.make_source("none")(pod, 9400) is None
    assert PR.make_source("http")({"status": {}}, 9400) is None  # no pod IP yet
    assert PR.parse_annotation({"metadata": {"annotations": {"thinktune.io/progress": "garbage"}}}) is None


def test_progress_http_source_against_a_real_server():
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(TRAINER_TEXT.encode())

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        p = PR.fetch_http({"status": {"podIP": "127.0.0.1"}}, srv.server_address[1])
        assert p["step"] == 120 and p["summary"] == "120/500 (24%)"
        real = {"status": {"podIP": "127.0.0.1", "containerStatuses": [{"containerID": "containerd://abc"}]}}
        assert PR.make_source("auto")(real, srv.server_address[1])["step"] == 120
        # a simulated (kwok) pod has no containerID: auto does not even try to connect
        assert PR.make_source("auto")({"status": {"podIP": "127.0.0.1"}}, srv.server_address[1]) is None
    finally:
        srv.shutdown()


def test_workqueue_dedups_serialises_and_requeues():
    async def main():
        m = OperatorMetrics(CollectorRegistry())
        calls: list[str] = []
        running: set = set()
        gate = asyncio.Event()

        async def handler(key):
            assert key not in running  # never two reconciles of one key at once
            running.add(key)
            calls.append(key[2])
            if key[2] == "a" and calls.count("a") == 1:
                await gate.wait()
            running.discard(key)
            return None

        q = WorkQueue(handler, 4, m)
        q.start()
        k = ("FineTuneJob", "ml", "a")
        q.add(k)
        await asyncio.sleep(0.01)
        q.add(k)
        q.add(k)  # while processing: coalesced into one more run
        gate.set()
        await asyncio.sleep(0.05)
        assert calls.count("a") == 2
        q.add(("FineTuneJob", "ml", "b"), delay=0.05)
        q.add(("FineTuneJob", "ml", "b"), delay=0.01)  # earliest timer wins
        await asyncio.sleep(0.03)
        assert calls.count("b") == 1
        await q.stop()

    asyncio.run(main())
