"""Real LLaMA Factory training on the tiny Qwen3 (hidden 64, 2 layers, real Qwen3 tokenizer), on CPU.

Everything goes through ``thinktune.train.job.train_job`` (given a ``thinktune.resolve.ResolvedJob``) -> planner -> launcher subprocess (torchrun + gloo
for 2 processes) -> ``llamafactory.train.tuner.run_exp`` with the monitoring callback -> report.

No GPU here, so CUDA OOM and GPU failures are INJECTED through environment variables the callback reads
(``THINKTUNE_INJECT_OOM_AT_STEP``, ``THINKTUNE_INJECT_FAILURE``): the exception types/messages are the real
ones, the trigger is simulated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from thinktune import contract
from thinktune.resolve import resolve_resource
from thinktune.spec import FineTuneJob, FineTuneJobStatus, TrainingProgress

pytestmark = pytest.mark.e2e

FACTS = [
    ("什么是对称加密？", "对称加密使用同一个密钥进行加密和解密，例如 AES。"),
    ("RSA 的安全性基于什么？", "RSA 的安全性基于大整数分解的困难性。"),
    ("什么是哈希函数？", "哈希函数把任意长度的输入映射为固定长度的摘要，例如 SHA-256。"),
    ("数字签名有什么作用？", "数字签名用于验证消息的完整性和发送者的身份。"),
    ("什么是椭圆曲线密码学？", "椭圆曲线密码学基于椭圆曲线离散对数问题，密钥更短。"),
    ("什么是公钥基础设施？", "公钥基础设施通过证书颁发机构绑定公钥和身份。"),
    ("AES 的分组长度是多少？", "AES 的分组长度是 128 位，密钥长度可以是 128、192 或 256 位。"),
    ("什么是消息认证码？", "消息认证码使用密钥对消息生成认证标签，例如 HMAC。"),
]

MAX_STEPS = 16


def _row(q: str, a: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "你是密码学专家。"},
            {"role": "user", "content": q},
            {
                "role": "assistant",
                "content": f"<think>\n问题问的是：{q}\n先给出定义，再说明用途。\n</think>\n\n{a}",
            },
        ]
    }


def write_dataset(d: Path) -> Path:
    """A LLaMA Factory dataset dir exactly like thinktune.data's (sharegpt, role/content tags)."""
    d.mkdir(parents=True, exist_ok=True)
    rows = [_row(q, a) for q, a in FACTS]
    splits = {"train": rows * 2, "val": rows[:4], "test": rows[4:]}
    for name, data in splits.items():
        (d / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    try:
        from thinktune.data.writer import dataset_info

        info = dataset_info("thinktune")
    except Exception:  # pragma: no cover - the data package's writer not there
        tags = {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        }
        info = {
            f"thinktune_{s}": {
                "file_name": f"{s}.json",
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": tags,
            }
            for s in splits
        }
    (d / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=1))
    return d


def make_job(
    root: Path,
    out: str,
    *,
    max_steps: int = MAX_STEPS,
    save_steps: int = 4,
    eval_steps: int = 8,
    max_oom_retries: int = 3,
) -> FineTuneJob:
    return FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": f"tiny-{out}", "namespace": "e2e"},
            "spec": {
                "model": {"nameOrPath": "model", "makeTiny": True},
                "dataset": {"path": "ds"},
                "output": {"path": out},
                "finetuning": {"method": "lora", "lora": {"rank": 8, "dropout": 0.0}},
                "training": {
                    "maxSteps": max_steps,
                    "globalBatchSize": 4,
                    "microBatchSize": 2,
                    "learningRate": 0.01,
                    "cutoffLen": 256,
                    "loggingSteps": 1,
                    "evalSteps": eval_steps,
                    "saveSteps": save_steps,
                    "warmupRatio": 0.0,
                    "lrSchedulerType": "cosine",
                    "seed": 7,
                },
                "maxOomRetries": max_oom_retries,
            },
        }
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("train-e2e")
    write_dataset(r / "ds")
    return r


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("THINKTUNE_METRICS_PORT", "0")  # a free port per process, never the fixed 9400
    for k in (
        "NNODES",
        "NPROC_PER_NODE",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "THINKTUNE_INJECT_OOM_AT_STEP",
        "THINKTUNE_INJECT_FAILURE",
    ):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def tiny_model(root) -> Path:
    """For tests that run alone: the model single_run would make through makeTiny."""
    if not (root / "model" / "config.json").is_file():
        from thinktune.tiny_model import make_tiny_model

        make_tiny_model(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def single_run(root) -> dict:
    """One process: the baseline (also makes the tiny model via makeTiny)."""
    from thinktune.train.job import train_job

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["THINKTUNE_METRICS_PORT"] = "0"
    report = train_job(
        resolve_resource(make_job(root, "single"), root),
        progress=True,
        env={"THINKTUNE_RANK_FINGERPRINT": "1"},
    )
    return report


def _load_adapter(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(d / "adapter_model.safetensors"))


def test_single_process_trains_and_loss_goes_down(root, single_run):
    r = single_run
    out = root / "single"
    assert (root / "model" / "config.json").is_file()  # makeTiny made it
    assert r["outcome"] == "Succeeded" and r["exit_code"] == 0
    conv = r["convergence"]
    assert conv["loss_decreased"], conv
    assert conv["last_loss"] < conv["first_loss"] - 0.2, conv  # real learning, not noise
    assert conv["final_eval_loss"] < conv["first_eval_loss"], conv
    # plan: CPU, fp32, single process, the requested global batch kept
    plan = r["plan"]
    assert (plan["strategy"], plan["precision"], plan["device"]) == ("single", "fp32", "cpu")
    assert (plan["micro_batch_size"], plan["gradient_accumulation_steps"], plan["global_batch_size"]) == (
        2,
        2,
        4,
    )
    assert plan["args"]["template"] == "qwen3" and plan["args"]["enable_thinking"] is True
    # outputs
    assert (out / "adapter_model.safetensors").is_file() and r["adapter_path"] == str(out)
    assert (out / "report.md").read_text().startswith("# Training report")
    for name in ("loss", "lr", "tokens_per_second", "memory", "teacher_forced_accuracy"):
        assert (out / r["plots"][name]).stat().st_size > 1000, name
    assert (out / "plan" / "plan.json").is_file()
    # metrics.jsonl: every step logged with throughput and memory; evals with Chinese metrics
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["type"] == "train"]
    evals = [x for x in recs if x["type"] == "eval"]
    assert [x["step"] for x in train] == list(range(1, MAX_STEPS + 1))
    assert all(x["memory"][0]["rss_bytes"] > 0 for x in train)
    assert sum(1 for x in train if x["tokens_per_second"]) >= MAX_STEPS - 1
    assert train[-1]["eta_seconds"] == 0
    assert evals and all(0 <= x["teacher_forced_char_accuracy"] <= 1 for x in evals)
    assert evals[-1]["cjk_chars"] > 50 and evals[-1]["term_occurrences"] > 0
    zh = r["chinese"]
    assert zh["teacher_forced_char_accuracy"] is not None and zh["teacher_forced_term_accuracy"] is not None
    assert not (out / "status.json").exists()  # the operator reads progress from Prometheus, not a file
    # report["status"] is FineTuneJobStatus
    prog = TrainingProgress.model_validate(r["status"]["progress"])
    assert prog.step == MAX_STEPS and prog.total_steps == MAX_STEPS and prog.percent == 100
    status = FineTuneJobStatus.model_validate(r["status"])
    assert status.phase == "Succeeded" and status.restarts.oom == 0 and status.plan["strategy"] == "single"
    assert contract.PlanSummary.model_validate(status.plan).world_size == 1
    assert status.metrics["evalLoss"] == pytest.approx(conv["final_eval_loss"])


def test_rerun_skips_a_finished_job_and_starts_fresh_when_hyperparameters_change(root, tiny_model, capsys):
    """Through the runner (what `thinktune train` and every worker pod run): an unchanged finished job is
    skipped, not "resumed" into a run of 0 steps; a changed learning rate trains again from step 0, with the
    previous run kept under previous/. (The resume of an interrupted run is test_losing_one_rank_...)."""
    from thinktune import runner

    def begins() -> list[dict]:
        text = (root / "rerun" / "metrics.jsonl").read_text()
        return [json.loads(x) for x in text.splitlines() if '"begin"' in x]

    job = make_job(root, "rerun", max_steps=2, save_steps=1, eval_steps=100)
    job.spec.evaluation.enabled = False  # the generation pass is tested elsewhere; not an input of training
    runner._stage_finetune(resolve_resource(job, root), progress=False, force=False)
    assert [b["step"] for b in begins()] == [0]
    runner._stage_finetune(resolve_resource(job, root), progress=False, force=False)
    assert [b["step"] for b in begins()] == [0]  # nothing ran
    assert "skipped — finished before with the same spec" in capsys.readouterr().err
    job.spec.training.learning_rate = 0.02
    runner._stage_finetune(resolve_resource(job, root), progress=False, force=False)
    assert [(b["step"], b["resumed"]) for b in begins()] == [
        (0, False)
    ]  # fresh metrics, not from checkpoint-2
    (prev,) = (root / "rerun" / "previous").iterdir()
    assert (prev / "checkpoint-2").is_dir() and (prev / "adapter_model.safetensors").is_file()
    assert "spec.training.learningRate: 0.01 -> 0.02" in capsys.readouterr().err


def test_two_processes_gloo_match_single(root, single_run):
    """2 CPU processes under torchrun (gloo), same global batch (2 x 1 x 2 vs 2 x 2 x 1): both ranks finish,
    gradients are synchronised (bit-identical trainable weights on both ranks), and the adapter matches the
    single-process run within tolerance."""
    import torch
    from thinktune.train.job import train_job

    report = train_job(
        resolve_resource(make_job(root, "ddp"), root),
        progress=False,
        env={"NPROC_PER_NODE": "2", "THINKTUNE_RANK_FINGERPRINT": "1"},
    )
    plan = report["plan"]
    assert (plan["strategy"], plan["world_size"]) == ("ddp", 2)
    assert (plan["micro_batch_size"], plan["gradient_accumulation_steps"], plan["global_batch_size"]) == (
        2,
        1,
        4,
    )
    assert "torch.distributed.run" in " ".join(report["attempts"][0]["command"])
    fp = [json.loads((root / "ddp" / "rank_weights" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert fp[0]["world_size"] == fp[1]["world_size"] == 2
    assert fp[0]["sha256"] == fp[1]["sha256"], "ranks diverged: gradients were not synchronised"
    recs = [json.loads(x) for x in (root / "ddp" / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["type"] == "train"]
    assert {m["rank"] for m in train[-1]["memory"]} == {0, 1}  # memory per rank gathered
    assert report["convergence"]["loss_decreased"]

    # same data per optimizer step as the single process (accelerate shards consecutive batches by rank)
    single = _load_adapter(root / "single")
    ddp = _load_adapter(root / "ddp")
    assert single.keys() == ddp.keys()
    for k in single:
        diff = (single[k].float() - ddp[k].float()).abs().max().item()
        scale = single[k].float().abs().max().item() + 1e-8
        assert diff <= 2e-3 * scale + 1e-5, (k, diff, scale)
    single_losses = [
        x["loss"]
        for x in map(json.loads, (root / "single" / "metrics.jsonl").read_text().splitlines())
        if x["type"] == "train"
    ][:MAX_STEPS]
    ddp_losses = [x["loss"] for x in train]
    assert torch.allclose(torch.tensor(single_losses), torch.tensor(ddp_losses), rtol=1e-3, atol=1e-3)


def test_injected_oom_is_retried_with_smaller_micro_batch(root, tiny_model, monkeypatch):
    """INJECTED OOM (no GPU here): torch.OutOfMemoryError at step 6 while micro-batch > 1. The job halves the
    micro-batch, doubles accumulation, turns on gradient checkpointing and resumes from checkpoint-4."""
    from thinktune.train.job import train_job

    monkeypatch.setenv("THINKTUNE_INJECT_OOM_AT_STEP", "6")
    report = train_job(
        resolve_resource(make_job(root, "oom", max_steps=8, save_steps=4, eval_steps=4), root), progress=False
    )
    assert report["outcome"] == "Succeeded"
    assert [a["outcome"] for a in report["attempts"]] == ["oom", "succeeded"]
    assert report["attempts"][1]["resumed_from"].endswith("checkpoint-4")
    (retry,) = report["oom_retries"]
    assert retry["at_step"] == 6
    assert retry["from"] == {"micro_batch": 2, "grad_accum": 2, "gradient_checkpointing": False}
    assert retry["to"] == {"micro_batch": 1, "grad_accum": 4, "gradient_checkpointing": True}
    assert report["status"]["restarts"]["oom"] == 1
    assert report["plan"]["final_args"]["per_device_train_batch_size"] == 1
    begins = [
        json.loads(x) for x in (root / "oom" / "metrics.jsonl").read_text().splitlines() if '"begin"' in x
    ]
    assert [(b["step"], b["micro_batch"], b["grad_accum"], b["gradient_checkpointing"]) for b in begins] == [
        (0, 2, 2, False),
        (4, 1, 4, True),
    ]
    assert report["status"]["progress"]["step"] == 8
    md = (root / "oom" / "report.md").read_text()
    assert "OOM retry 1 at step 6" in md


def test_injected_gpu_failure_exits_75_with_termination_message(root, tiny_model, monkeypatch, tmp_path):
    """INJECTED GPU failure (no GPU here): the real CUDA error text at step 2 -> exit 75 through torchrun and
    a JSON termination message for the operator."""
    from thinktune.train.job import TrainingFailed, train_job

    term = tmp_path / "termination-log"
    monkeypatch.setenv(
        "THINKTUNE_INJECT_FAILURE", "2:CUDA error: uncorrectable ECC error encountered (INJECTED)"
    )
    monkeypatch.setenv("THINKTUNE_TERMINATION_LOG", str(term))
    monkeypatch.setenv("NODE_NAME", "gpu-node-3")
    with pytest.raises(TrainingFailed) as ei:
        train_job(
            resolve_resource(make_job(root, "gpufail", max_steps=4), root),
            progress=False,
            env={"NPROC_PER_NODE": "2"},
        )
    assert ei.value.exit_code == contract.EXIT_GPU_FAILURE
    assert ei.value.report["attempts"][0]["returncode"] == contract.EXIT_GPU_FAILURE
    msg = contract.read_termination_message(term.read_text())
    assert isinstance(msg, contract.FailureMessage)
    assert (msg.reason, msg.node, msg.detail) == ("GPUFailure", "gpu-node-3", "uncorrectable ECC error")
    st = FineTuneJobStatus.model_validate(ei.value.report["status"])
    assert (
        st.phase == "Failed" and st.restarts.infrastructure == 1 and st.failed_nodes[0].node == "gpu-node-3"
    )


def test_losing_one_rank_exits_75_and_resumes_on_the_remaining_process(
    root, tiny_model, monkeypatch, tmp_path
):
    """INJECTED GPU failure on ONE rank of two (no GPU here; the error text is a real CUDA one): torchrun tears
    the gang down, the launcher exits with the GPU-failure code; started again with one process (the GPU that
    is left), the job resumes from the last checkpoint, keeps the global batch and finishes."""
    from thinktune.train.job import TrainingFailed, train_job

    monkeypatch.setenv("THINKTUNE_INJECT_FAILURE", "5:CUDA error: unspecified launch failure (INJECTED)")
    monkeypatch.setenv("THINKTUNE_INJECT_FAILURE_RANK", "1")
    monkeypatch.setenv("THINKTUNE_TERMINATION_LOG", str(tmp_path / "termination-log"))
    job = resolve_resource(make_job(root, "lose-rank", max_steps=8, save_steps=2, eval_steps=100), root)
    with pytest.raises(TrainingFailed) as ei:
        train_job(job, progress=False, env={"NPROC_PER_NODE": "2"})
    assert ei.value.exit_code == contract.EXIT_GPU_FAILURE
    assert (
        contract.read_termination_message((tmp_path / "termination-log").read_text()).reason == "GPUFailure"
    )
    saved = sorted(int(p.name.split("-")[1]) for p in (root / "lose-rank").glob("checkpoint-*"))
    assert saved and saved[-1] >= 4, saved

    monkeypatch.delenv("THINKTUNE_INJECT_FAILURE")
    report = train_job(job, progress=False, env={"NPROC_PER_NODE": "1"})
    att = report["attempts"][-1]
    assert att["resumed_from"].endswith(f"checkpoint-{saved[-1]}")
    plan = report["plan"]
    assert plan["world_size"] == 1 and plan["global_batch_size"] == 4  # same global batch on fewer processes
    begins = [
        json.loads(x)
        for x in (root / "lose-rank" / "metrics.jsonl").read_text().splitlines()
        if '"begin"' in x
    ]
    assert begins[-1]["resumed"] is True and begins[-1]["world_size"] == 1 and begins[-1]["step"] == saved[-1]
    assert FineTuneJobStatus.model_validate(report["status"]).phase == "Succeeded"


def test_two_node_gang_only_node_rank_0_writes_job_results(root, tiny_model, tmp_path):
    """Two pods of a gang (NNODES=2, NODE_RANK=0/1, one CPU process each, gloo) run what a worker pod runs,
    `thinktune train -f`, into ONE output directory (the shared PVC): both train; only node rank 0 writes
    report.json and the status, evaluates, and leaves a TrainResult in its termination log."""
    import subprocess
    import sys

    import yaml
    from thinktune.train.launcher import free_port

    doc = make_job(root, "gang", max_steps=2, save_steps=100, eval_steps=100).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    doc["spec"].update(
        model={"nameOrPath": str(tiny_model)},
        dataset={"path": str(root / "ds")},
        output={"path": str(root / "gang")},
        numNodes=2,
        evaluation={"enabled": True, "maxSamples": 1, "maxNewTokens": 4},
    )
    (tmp_path / "ftj.yaml").write_text(yaml.safe_dump(doc))
    port, logs = free_port(), [tmp_path / f"termination-node{r}" for r in (0, 1)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thinktune.cli",
                "train",
                "-f",
                str(tmp_path / "ftj.yaml"),
                "--no-progress",
            ],
            env={
                **os.environ,
                "NNODES": "2",
                "NODE_RANK": str(r),
                "NPROC_PER_NODE": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
                contract.ENV_TERMINATION_LOG: str(logs[r]),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    out = root / "gang"
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "logs" / "attempt-0-node0.log").is_file() and (
        out / "logs" / "attempt-0-node1.log"
    ).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["world"]["node_rank"] == 0 and report["world"]["nnodes"] == 2
    msg = contract.read_termination_message(logs[0].read_text())
    assert isinstance(msg, contract.TrainResult) and msg.adapter_path == str(out)
    assert (msg.plan.nnodes, msg.plan.world_size) == (2, 2) and "perplexity" in msg.metrics
    assert not logs[1].exists() or contract.read_termination_message(logs[1].read_text()) is None
    assert (out / "eval" / "eval_report.json").is_file() and "evaluation FineTuneJob" in outs[0]
    assert "node rank 0 writes the results" in outs[1] and "evaluation FineTuneJob" not in outs[1]
