"""Check the planner's memory model and choices against a real run on one H200.

Builds a random-weight model with Qwen3-4B's exact architecture (no hub: the shape, not the weights, sets speed
and memory), a dataset of ~2k-token Chinese samples, and runs ``thinktune.train.job.train_job`` with the
planner's own choices (cutoffLen 2048, globalBatchSize 16). Writes JSON with the plan, the planner's memory
estimate, the measured peak (torch.cuda.max_memory_allocated per step) and tokens/s.

    python bench/train_planner_h200.py OUT_DIR [--steps 12] [--liger auto|off]

Results are committed as bench/train_planner_h200.json with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def make_qwen3_4b_random(out: Path) -> Path:
    import torch
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if (out / "config.json").is_file():
        return out
    cfg = Qwen3Config(
        vocab_size=151_936,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=262_144,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    with torch.device("cuda"):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    load_qwen3_tokenizer().save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def make_dataset(d: Path, n: int = 160, repeat: int = 70) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    facts = [
        "对称加密使用同一个密钥进行加密和解密，例如 AES。",
        "RSA 的安全性基于大整数分解的困难性。",
        "哈希函数把任意长度的输入映射为固定长度的摘要，例如 SHA-256。",
        "数字签名用于验证消息的完整性和发送者的身份。",
        "椭圆曲线密码学基于椭圆曲线离散对数问题，密钥更短。",
    ]
    rows = []
    for i in range(n):
        body = "".join(facts[(i * 7 + k) % len(facts)] for k in range(repeat))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"请详细解释密码学概念 {i}。"},
                    {
                        "role": "assistant",
                        "content": f"<think>\n先分析定义，再给出例子。\n</think>\n\n{body}",
                    },
                ]
            }
        )
    for name, data in (("train", rows), ("val", rows[:8]), ("test", rows[:4])):
        (d / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    (d / "dataset_info.json").write_text(
        json.dumps(
            {
                f"thinktune_{s}": {
                    "file_name": f"{s}.json",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages"},
                    "tags": tags,
                }
                for s in ("train", "val", "test")
            }
        )
    )
    return d


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--liger", default="auto")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("THINKTUNE_METRICS_PORT", "0")
    from thinktune.resolve import resolve_resource
    from thinktune.spec import FineTuneJob
    from thinktune.train.job import train_job

    root = a.out
    t0 = time.time()
    make_qwen3_4b_random(root / "model")
    make_dataset(root / "ds")
    t_setup = time.time() - t0
    name = f"bench-liger-{a.liger}"
    job = FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"nameOrPath": "model"},
                "dataset": {"path": "ds"},
                "output": {"path": name},
                "training": {
                    "maxSteps": a.steps,
                    "globalBatchSize": 16,
                    "cutoffLen": 2048,
                    "loggingSteps": 1,
                    "evalSteps": 1000,
                    "saveSteps": 1000,
                    "ligerKernel": a.liger,
                },
            },
        }
    )
    t1 = time.time()
    r = train_job(resolve_resource(job, root), progress=False)
    wall = time.time() - t1
    recs = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in recs if x["type"] == "train"]
    peak = max(m.get("peak_bytes", 0) for x in train for m in x["memory"]) / 2**30
    steady = [x["tokens_per_second"] for x in train[3:] if x.get("tokens_per_second")]
    p = r["plan"]
    result = {
        "command": "python bench/train_planner_h200.py OUT " + " ".join(sys.argv[2:]),
        "gpu": p["hardware"]["gpus"][0]["name"] if p["hardware"].get("gpus") else None,
        "plan": {
            k: p[k]
            for k in (
                "strategy",
                "precision",
                "method",
                "micro_batch_size",
                "gradient_accumulation_steps",
                "global_batch_size",
                "gradient_checkpointing",
                "liger_kernel",
                "lora_rank",
                "cutoff_len",
            )
        },
        "planner_memory_estimate_gib": p["memory_estimate_gib"],
        "measured_peak_allocated_gib": round(peak, 2),
        "estimate_over_measured": round(p["memory_estimate_gib"]["total"] / peak, 3) if peak else None,
        "steady_tokens_per_second_mean": round(sum(steady) / len(steady), 1) if steady else None,
        "loss_first_last": [train[0]["loss"], train[-1]["loss"]],
        "train_wall_s": round(wall, 1),
        "setup_s": round(t_setup, 1),
        "explanations": p["explanations"],
        "warnings": p["warnings"],
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    dest = Path(os.environ.get("OUT", root))
    (dest / f"train_planner_h200_liger-{a.liger}.json").write_text(
        json.dumps(result, ensure_ascii=False, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
