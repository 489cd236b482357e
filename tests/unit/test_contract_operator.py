"""The operator side of thinktune.contract: every reader is fed the real writer's output.

Termination messages are made by the contract's models and written by contract.write_termination_message (what
the workload runs) into a file whose text goes into a pod status, then read by the real planners and gpu_health.
Progress is the trainer's real Prometheus exporter (thinktune.train.exporter.PromMetrics) rendered as the
/metrics text and parsed by thinktune_operator.progress.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from thinktune import contract
from thinktune.spec import DatasetCounts, ExportArtifact, FineTuneJobStatus
from thinktune.train.exporter import PromMetrics
from thinktune_operator import names as N
from thinktune_operator import progress
from thinktune_operator.builders import finetunejob as B
from thinktune_operator.config import OperatorConfig
from thinktune_operator.gpu_health import classify_pod
from thinktune_operator.planners import finetunejob as P
from thinktune_sandbox.testing import termination_text

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CFG = OperatorConfig()
PLAN = contract.PlanSummary(
    strategy="ddp",
    device="cuda",
    precision="bf16",
    method="lora",
    world_size=2,
    nnodes=2,
    nproc_per_node=1,
    micro_batch_size=2,
    gradient_accumulation_steps=4,
    global_batch_size=16,
    gradient_checkpointing=True,
    liger_kernel=False,
    lora_rank=16,
    lora_alpha=32,
    cutoff_len=8192,
    total_steps=120,
    memory_estimate_gib=31.5,
)


def job_body(status=None):
    return {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {
            "numNodes": 2,
            "dataset": {"path": "d"},
            "output": {"path": "out"},
            "resourcesPerNode": {"limits": {"nvidia.com/gpu": 1}},
        },
        "status": status or {},
    }


def worker(rank, phase, exit_code=None, message=None):
    cs = {"name": "trainer", "state": {"running": {}}}
    if exit_code is not None:
        cs["state"] = {"terminated": {"exitCode": exit_code, "reason": "Completed", "message": message}}
    return {
        "metadata": {
            "name": N.worker_pod_name("j", 0, rank),
            "namespace": "ml",
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "spec": {"nodeName": f"n{rank}"},
        "status": {"phase": phase, "containerStatuses": [cs]},
    }


def test_train_result_reaches_the_status_typed():
    msg = termination_text(
        contract.TrainResult(
            adapter_path="/workspace/w/out/adapter",
            metrics={"eval_loss": 1.25, "teacher_forced_char_accuracy": 0.5},
            oom_retries=2,
            plan=PLAN,
            report_path="/workspace/w/out/report.json",
        )
    )
    body = job_body({"phase": "Running", "attempt": 0})
    p = P.plan(body, [worker(0, "Succeeded", 0, msg), worker(1, "Succeeded", 0, "")], {}, None, T0, CFG)
    st = p.status
    assert st["phase"] == "Succeeded" and st["adapterPath"] == "/workspace/w/out/adapter"
    assert st["metrics"] == {"eval_loss": 1.25, "teacher_forced_char_accuracy": 0.5}
    assert st["restarts"]["oom"] == 2 and st["reportPath"] == "/workspace/w/out/report.json"
    assert st["plan"]["loraRank"] == 16 and st["plan"]["globalBatchSize"] == 16
    # what the planner wrote is a valid FineTuneJobStatus (the CRD's schema comes from the same model)
    parsed = FineTuneJobStatus.model_validate(st)
    assert parsed.plan is not None and parsed.adapter_path == "/workspace/w/out/adapter"


def test_oversized_train_result_still_carries_what_the_operator_acts_on():
    metrics = {f"m{i:04d}": float(i) for i in range(400)}  # far over the kubelet's 4 KiB
    msg = termination_text(contract.TrainResult(adapter_path="/a", metrics=metrics, plan=PLAN))
    assert len(msg.encode()) <= contract.TERMINATION_MESSAGE_LIMIT
    body = job_body({"phase": "Running", "attempt": 0})
    st = P.plan(
        body, [worker(0, "Succeeded", 0, msg), worker(1, "Succeeded", 0, "")], {}, None, T0, CFG
    ).status
    assert st["adapterPath"] == "/a" and "metrics" not in st


@pytest.mark.parametrize(
    "category,kind",
    [("gpu_failure", "infrastructure"), ("oom", "application"), ("application", "application")],
)
def test_every_failure_category_is_classified(category, kind):
    code = contract.EXIT_GPU_FAILURE if category == "gpu_failure" else contract.EXIT_APP_FAILURE
    msg = termination_text(
        contract.FailureMessage(
            reason=contract.FAILURE_REASON[category],
            category=category,
            exit_code=code,
            message="boom",
            gpu="2",
        )
    )
    pod = worker(0, "Failed", code, msg)
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "Error"
    v = classify_pod(pod, None)
    assert v.kind == kind and v.message == "boom"


def test_a_worse_failure_is_not_overwritten(tmp_path):
    """Two ranks of one pod fail: the GPU failure that came first stays (the writer's rule), so the operator
    charges the infrastructure budget."""
    log = tmp_path / "termination-log"
    gpu = contract.FailureMessage(reason="GPUFailure", category="gpu_failure", exit_code=75, message="Xid 79")
    app = contract.FailureMessage(
        reason="ApplicationError", category="application", exit_code=1, message="NCCL"
    )
    contract.write_termination_message(gpu, log)
    contract.write_termination_message(app, log)
    pod = worker(0, "Failed", 1, log.read_text())
    assert classify_pod(pod, None).kind == "infrastructure"


def test_progress_from_the_real_trainer_exporter():
    m = PromMetrics(job="j", namespace="ml", rank=0, port=None)
    values = {"step": 30, "total_steps": 120, "epoch": 0.5, "loss": 1.5, "eval_loss": 1.7}
    values |= {"learning_rate": 2e-4, "tokens_per_second": 900.0, "eta_seconds": 600}
    for name, v in values.items():
        m.set(name, v)
    m.anomaly("loss_spike")
    other = PromMetrics(job="j", namespace="ml", rank=1, port=None)
    other.set("step", 29)
    text = generate_latest(m.registry).decode() + generate_latest(other.registry).decode()
    prog = progress.progress_from_values(progress.parse_metrics_text(text))
    assert prog == {
        "step": 30,
        "totalSteps": 120,
        "epoch": 0.5,
        "loss": 1.5,
        "evalLoss": 1.7,
        "learningRate": 2e-4,
        "tokensPerSecond": 900.0,
        "etaSeconds": 600.0,
        "percent": 25.0,
        "summary": "30/120 (25%)",
    }
    assert progress.anomalies_from_text(text) == {"loss_spike": 1}


def test_every_progress_field_is_a_gauge_the_exporter_registers():
    registered = {contract.train_metric(n) for n in contract.TRAIN_GAUGES}
    assert set(contract.PROGRESS_FROM_METRIC.values()) <= registered
    text = generate_latest(PromMetrics(job="j", namespace="ml", rank=0, port=None).registry).decode()
    for metric in contract.PROGRESS_FROM_METRIC.values():
        assert f"# TYPE {metric} gauge" in text


def test_progress_annotation_is_the_contract_name():
    pod = {
        "metadata": {"annotations": {contract.PROGRESS_ANNOTATION: json.dumps({"step": 3, "totalSteps": 6})}}
    }
    assert N.A_PROGRESS == contract.PROGRESS_ANNOTATION
    assert progress.parse_annotation(pod)["summary"] == "3/6 (50%)"


def test_worker_env_is_only_what_the_pod_reads():
    spec = B.parse_spec(job_body())
    pod = B.worker_pod(job_body(), spec, CFG, attempt=1, rank=1, avoid=[], dataset=None)
    names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert names - set(contract.POD_ENV) == {"HOME", "HF_HOME"}
    assert {contract.ENV_TERMINATION_LOG, contract.ENV_METRICS_PORT, contract.ENV_NODE_RANK} <= names


def test_trainer_pods_share_the_kernel_cache_the_trainer_reads():
    """The builder's env and workspace mount, fed to the trainer's own reader (cache.kernel_cache_env): every job's
    Triton/Inductor cache lands in one directory of the output's PVC (the workspace PVC unless the CR names
    another); with the setting off, each job's own."""
    from dataclasses import replace

    from thinktune.train.cache import kernel_cache_env

    spec = B.parse_spec(job_body())
    pod = B.worker_pod(job_body(), spec, CFG, attempt=0, rank=0, avoid=[], dataset=None)
    c = pod["spec"]["containers"][0]
    pod_env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    shared = pod_env[contract.ENV_KERNEL_CACHE]
    assert shared == f"{N.WORKSPACE_ROOT}/{CFG.workspace_pvc}/{N.KERNEL_CACHE_PATH}"
    assert any(shared.startswith(m["mountPath"] + "/") for m in c["volumeMounts"])  # on a mounted volume
    body = job_body()
    body["spec"]["output"] = {"path": "out", "pvc": "team-pvc"}
    other = B.worker_pod(body, B.parse_spec(body), CFG, attempt=0, rank=0, avoid=[], dataset=None)
    other_env = {e["name"]: e.get("value") for e in other["spec"]["containers"][0]["env"]}
    assert other_env[contract.ENV_KERNEL_CACHE] == f"{N.WORKSPACE_ROOT}/team-pvc/{N.KERNEL_CACHE_PATH}"
    out = kernel_cache_env(f"{N.WORKSPACE_ROOT}/{CFG.workspace_pvc}/out", pod_env)
    assert (
        out["TRITON_CACHE_DIR"] == f"{shared}/triton"
        and out["TORCHINDUCTOR_CACHE_DIR"] == f"{shared}/inductor"
    )
    # a user's own TRITON_CACHE_DIR (spec.pod.env) still wins
    assert "TRITON_CACHE_DIR" not in kernel_cache_env("/o", {**pod_env, "TRITON_CACHE_DIR": "/mine"})

    own = B.worker_pod(job_body(), spec, replace(CFG, shared_kernel_cache=False), 0, 0, [], None)
    own_env = {e["name"]: e.get("value") for e in own["spec"]["containers"][0]["env"]}
    assert contract.ENV_KERNEL_CACHE not in own_env
    assert kernel_cache_env("/o", own_env)["TRITON_CACHE_DIR"] == "/o/.thinktune/kernel-cache/triton"


def test_dataset_and_export_results(tmp_path):
    from thinktune_operator.planners import single_pod as S

    body = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "DatasetBuild",
        "metadata": {"name": "d", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"source": {"path": "corpus"}, "output": {"path": "datasets/c"}},
        "status": {"phase": "Running", "observedGeneration": 1},
    }
    first = S.plan_datasetbuild(body, [], {}, T0, CFG)
    name = next(o for o in first.creates if o["kind"] == "Pod")["metadata"]["name"]
    counts = DatasetCounts(documents=3, samples=9, train=7, val=1, test=1, warnings=2)
    msg = termination_text(
        contract.DatasetResult(counts=counts, output_path="/o", report_path="/o/report.json")
    )
    pod = {
        "metadata": {"name": name},
        "spec": {"nodeName": "n0"},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": msg}}}],
        },
    }
    st = S.plan_datasetbuild(body, [pod], {}, T0, CFG).status
    assert st["counts"] == counts.model_dump(mode="json", by_alias=True) and st["counts"]["warnings"] == 2
    # a message of the wrong kind is not a result
    wrong = termination_text(contract.ExportResult(artifacts=[ExportArtifact(name="merged", path="/m")]))
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = wrong
    p = S.plan_datasetbuild(body, [pod], {}, T0, CFG)
    assert "counts" not in p.status and any(e.reason == "NoResult" for e in p.events)
