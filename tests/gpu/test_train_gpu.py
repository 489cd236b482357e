"""The trainer on a real CUDA GPU (device machine only; skipped elsewhere).

1. The tiny Qwen3 trains in bf16 with the planner's GPU choices (Liger on, no checkpointing) and reports per-rank
   CUDA memory.
2. A REAL CUDA OOM (not injected): micro-batch 64 x ~7k-token samples without Liger needs hundreds of GiB of
   fp32 logits; the OOM retry halves the micro-batch (doubling accumulation, checkpointing on) until it fits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _dataset(d: Path, *, n_train: int, text_repeat: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    facts = [
        "对称加密使用同一个密钥进行加密和解密。",
        "RSA 的安全性基于大整数分解的困难性。",
        "哈希函数把任意长度的输入映射为固定长度的摘要。",
        "数字签名用于验证消息的完整性和发送者的身份。",
    ]
    rows = []
    for i in range(n_train):
        body = "".join(facts[(i + k) % len(facts)] for k in range(text_repeat))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"请解释第 {i} 个密码学概念。"},
                    {"role": "assistant", "content": f"<think>\n逐步分析。\n</think>\n\n{body}"},
                ]
            }
        )
    for name, data in (("train", rows), ("val", rows[:4]), ("test", rows[:2])):
        (d / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
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
        for s in ("train", "val", "test")
    }
    (d / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False))
    return d


def train_job(resource, *, base_dir, **kw):
    """thinktune.train.job.train_job on the CR resolved as the runner would (relative paths from base_dir)."""
    from thinktune.resolve import resolve_resource
    from thinktune.train.job import train_job as run

    return run(resolve_resource(resource, base_dir), **kw)


def _job(name: str, training: dict, **spec):
    from thinktune.spec import FineTuneJob

    return FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"nameOrPath": "model", "makeTiny": True},
                "dataset": {"path": "ds"},
                "output": {"path": name},
                "training": training,
                **spec,
            },
        }
    )


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("THINKTUNE_METRICS_PORT", "0")
    monkeypatch.setenv("NPROC_PER_NODE", "1")


def test_tiny_model_bf16_on_gpu(tmp_path):
    _dataset(tmp_path / "ds", n_train=64, text_repeat=3)
    r = train_job(
        _job(
            "gpu-tiny",
            {
                "maxSteps": 20,
                "globalBatchSize": 8,
                "learningRate": 0.01,
                "cutoffLen": 512,
                "loggingSteps": 1,
                "evalSteps": 10,
                "saveSteps": 10,
                "warmupRatio": 0.0,
            },
        ),
        base_dir=tmp_path,
        progress=False,
    )
    p = r["plan"]
    assert (p["device"], p["precision"], p["strategy"]) == ("cuda", "bf16", "single")
    assert p["gradient_checkpointing"] is False
    assert p["liger_kernel"] is (p["args"].get("enable_liger_kernel") is True)
    assert r["convergence"]["loss_decreased"]
    recs = [json.loads(x) for x in (tmp_path / "gpu-tiny" / "metrics.jsonl").read_text().splitlines()]
    mem = [m for x in recs if x["type"] == "train" for m in x["memory"]]
    assert all(m["allocated_bytes"] > 0 and m["peak_bytes"] >= m["allocated_bytes"] for m in mem)
    assert r["throughput"]["peak_memory_gib"] > 0


def test_real_cuda_oom_is_recovered(tmp_path):
    _dataset(tmp_path / "ds", n_train=64, text_repeat=300)  # ~7k tokens per sample
    r = train_job(
        _job(
            "gpu-oom",
            {
                "maxSteps": 2,
                "globalBatchSize": 64,
                "microBatchSize": 64,
                "cutoffLen": 8192,
                "loggingSteps": 1,
                "saveSteps": 1,
                "evalSteps": 100,
                "ligerKernel": "off",
                "gradientCheckpointing": "off",
            },
            maxOomRetries=5,
        ),
        base_dir=tmp_path,
        progress=False,
    )
    assert r["outcome"] == "Succeeded"
    assert r["oom_retries"], "expected at least one real CUDA OOM"
    assert r["attempts"][0]["outcome"] == "oom"
    final = r["plan"]["final_args"]
    assert final["per_device_train_batch_size"] * final["gradient_accumulation_steps"] == 64
    assert final["disable_gradient_checkpointing"] is False
    assert r["status"]["restarts"]["oom"] == len(r["oom_retries"])


@pytest.mark.parametrize("strategy", ["zero3", "fsdp", "zero2"])
def test_forced_sharded_strategy_runs(tmp_path, strategy):
    """The generated DeepSpeed JSON / FSDP config really train with LLaMA Factory (1 GPU: the planner warns that
    there is nothing to shard, but the strategy wins)."""
    if strategy.startswith("zero"):
        pytest.importorskip("deepspeed")
    _dataset(tmp_path / "ds", n_train=32, text_repeat=3)
    r = train_job(
        _job(
            f"gpu-{strategy}",
            {
                "maxSteps": 6,
                "globalBatchSize": 4,
                "learningRate": 0.01,
                "cutoffLen": 512,
                "loggingSteps": 1,
                "evalSteps": 6,
                "saveSteps": 3,
                "warmupRatio": 0.0,
            },
            finetuning={"strategy": strategy},
        ),
        base_dir=tmp_path,
        progress=False,
    )
    p = r["plan"]
    assert p["strategy"] == strategy and any("1 GPU" in w for w in p["warnings"])
    assert "torch.distributed.run" in " ".join(r["attempts"][0]["command"])
    assert r["outcome"] == "Succeeded" and r["convergence"]["loss_decreased"]
    assert (tmp_path / f"gpu-{strategy}" / "adapter_model.safetensors").is_file()
