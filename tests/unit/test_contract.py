"""The termination-message contract, writer side: the real writers (the runner's stage results,
thinktune.train.failures.handle_fatal) write a termination log; the operator's reader
(thinktune.contract.read_termination_message) must parse it back into the same fields.

The reader-side tests (the operator planners and gpu_health fed these messages) live with the operator tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from thinktune import contract, runner
from thinktune.resolve import ResolvedDataset, ResolvedJob
from thinktune.resources import load_path
from thinktune.spec import FineTuneJob
from thinktune.train import failures

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "crypto"


def read(log: Path) -> contract.TerminationMessage | None:
    return contract.read_termination_message(log.read_text(encoding="utf-8"))


@pytest.fixture
def log(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(path))
    return path


def test_dataset_build_result_round_trips(tmp_path, log):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(EXAMPLES / "corpus" / "01-sm4-basics.md", corpus)
    spec = load_path(EXAMPLES / "01-datasetbuild.yaml")[0].resource.spec
    assert runner.run_dataset_build(spec, corpus, tmp_path / "ds", progress=False) == contract.EXIT_OK
    msg = read(log)
    assert isinstance(msg, contract.DatasetResult)
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert msg.counts.samples == report["counts"]["samples"] > 0
    assert msg.output_path == str(tmp_path / "ds") and msg.report_path == str(tmp_path / "ds" / "report.json")


def test_train_result_round_trips(tmp_path, log):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset_info.json").write_text(json.dumps({"x_train": {"file_name": "train.json"}}))
    resource = FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "j"},
            "spec": {"dataset": {"path": str(ds)}, "output": {"path": str(tmp_path / "out")}},
        }
    )
    job = ResolvedJob(
        resource=resource, model="m", dataset=ResolvedDataset.inspect(ds), output_dir=tmp_path / "out"
    )
    plan = contract.PlanSummary(
        strategy="ddp",
        device="cpu",
        precision="fp32",
        method="lora",
        world_size=2,
        nnodes=2,
        nproc_per_node=1,
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        global_batch_size=4,
        gradient_checkpointing=False,
        liger_kernel=False,
        lora_rank=8,
        cutoff_len=256,
    )
    # the stage's status as train_job leaves it (FineTuneJobStatus JSON, plan included)
    status = {
        "metrics": {"evalLoss": 1.25, "rougeL": 0.3},
        "restarts": {"oom": 2},
        "plan": plan.model_dump(mode="json", by_alias=True),
    }
    runner.finished_training(job, status, str(tmp_path / "out"))
    msg = read(log)
    assert isinstance(msg, contract.TrainResult)
    assert msg.adapter_path == str(tmp_path / "out") and msg.oom_retries == 2
    assert msg.metrics == {"evalLoss": 1.25, "rougeL": 0.3}
    assert msg.plan == plan and msg.report_path == str(tmp_path / "out" / "report.json")
    assert json.loads(log.read_text())["plan"]["worldSize"] == 2  # camelCase on the wire, as in the CR status


def test_gpu_failure_round_trips(tmp_path, monkeypatch):
    log = tmp_path / "t"
    for k, v in {"NODE_NAME": "gpu-node-7", "POD_NAME": "j-w0-0", "RANK": "3", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    code = failures.handle_fatal(RuntimeError("CUDA error: unspecified launch failure"), termination_log=log)
    assert code == contract.EXIT_GPU_FAILURE
    msg = read(log)
    assert isinstance(msg, contract.FailureMessage)
    assert (msg.reason, msg.category, msg.detail) == (
        "GPUFailure",
        "gpu_failure",
        "unspecified launch failure",
    )
    assert (msg.node, msg.pod, msg.rank, msg.gpu, msg.exit_code) == ("gpu-node-7", "j-w0-0", 3, "5", code)
    assert "unspecified launch failure" in msg.message


def test_failure_over_4k_still_parses_and_keeps_its_end(tmp_path):
    log = tmp_path / "t"
    error = ValueError("x" * 100_000 + " -- the line that says what broke")
    assert failures.handle_fatal(error, termination_log=log) == contract.EXIT_APP_FAILURE
    assert len(log.read_bytes()) <= contract.TERMINATION_MESSAGE_LIMIT
    msg = read(log)
    assert isinstance(msg, contract.FailureMessage) and msg.reason == "ApplicationError"
    assert msg.message.endswith("the line that says what broke") and len(msg.message) > 1000


def test_gpu_failure_is_not_overwritten_by_a_later_application_failure(tmp_path):
    """One rank's GPU breaks; the others die next with a collective error: the GPU failure must stay."""
    log = tmp_path / "t"
    failures.handle_fatal(
        RuntimeError("CUDA error: uncorrectable ECC error encountered"), termination_log=log
    )
    failures.handle_fatal(RuntimeError("Connection closed by peer [10.0.0.2]:29500"), termination_log=log)
    assert read(log).category == "gpu_failure"
    other = tmp_path / "t2"  # the rule is about severity, not about the first writer winning
    failures.handle_fatal(RuntimeError("Connection closed by peer"), termination_log=other)
    failures.handle_fatal(
        RuntimeError("CUDA error: uncorrectable ECC error encountered"), termination_log=other
    )
    assert read(other).category == "gpu_failure"


def test_oom_writes_no_message(tmp_path):
    """OOM is retried inside the trainer, so Kubernetes is not told about it."""
    log = tmp_path / "t"
    code = failures.handle_fatal(torch.OutOfMemoryError("CUDA out of memory"), termination_log=log)
    assert code == contract.EXIT_OOM and not log.exists()
