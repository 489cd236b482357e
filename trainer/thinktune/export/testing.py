"""Small builders for tests and benchmarks of the evaluate/export stages: a LoRA adapter trained for a few steps
on the tiny Qwen3 (so it is not the identity), and a tiny LLaMA Factory dataset directory with train/test splits.

Not used by the pipeline itself.
"""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "你是一名密码学专家。"
QA = [
    (
        "什么是SM2算法？",
        "用户问SM2。SM2是基于椭圆曲线的公钥算法。需要说明用途。",
        "SM2是国密非对称算法，基于椭圆曲线，用于数字签名和密钥交换。因此SM2可替代RSA。",
    ),
    (
        "SM3的输出长度是多少？",
        "SM3是哈希函数。输出长度为256位。",
        "SM3是国密哈希函数，输出256位摘要。所以SM3与SHA-256安全强度相当。",
    ),
    (
        "SM4是什么类型的密码？",
        "SM4属于分组密码。分组长度128位。",
        "SM4是分组密码，分组长度和密钥长度都是128位。结论：SM4适合对称加密。",
    ),
    (
        "AES和SM4有什么区别？",
        "比较AES与SM4。两者都是分组密码。",
        "AES和SM4都是分组密码，轮数和结构不同。总之两者安全强度相近。",
    ),
    (
        "HMAC有什么作用？",
        "HMAC是消息认证码。它用哈希函数和密钥构造。",
        "HMAC是基于哈希函数的消息认证码，保证完整性和真实性。因此HMAC需要保密的密钥。",
    ),
    (
        "什么是数字签名？",
        "数字签名用私钥生成，用公钥验证。",
        "数字签名用私钥签名、公钥验证，提供不可否认性。所以私钥必须妥善保管。",
    ),
    (
        "ECDSA基于什么数学难题？",
        "ECDSA基于椭圆曲线离散对数问题。",
        "ECDSA基于椭圆曲线离散对数问题，密钥比RSA短。因此ECDSA效率更高。",
    ),
    (
        "TLS握手做什么？",
        "TLS握手协商密钥和算法。",
        "TLS握手完成身份认证和密钥交换，协商会话密钥。最终双方用对称加密通信。",
    ),
]


def sample_record(q: str, cot: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": q},
            {"role": "assistant", "content": f"<think>\n{cot}\n</think>\n\n{answer}"},
        ]
    }


def write_tiny_dataset(out_dir: str | Path, *, n_test: int = 4) -> Path:
    """A LLaMA Factory dataset dir (sharegpt messages): train.json (all QA), test.json (the first n_test)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recs = [sample_record(*qa) for qa in QA]
    (out / "train.json").write_text(json.dumps(recs, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "val.json").write_text(json.dumps(recs[:2], ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "test.json").write_text(json.dumps(recs[:n_test], ensure_ascii=False, indent=1), encoding="utf-8")
    from thinktune.data.writer import dataset_info

    info = dataset_info("tiny")  # the DatasetBuild's own dataset_info.json shape
    (out / "dataset_info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


def make_tiny_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 8,
    steps: int = 6,
    lr: float = 5e-3,
    seed: int = 0,
) -> Path:
    """Train a LoRA adapter (all linear layers) on the tiny model for a few steps on the QA texts; save it as a
    peft adapter dir (adapter_config.json + adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinktune.evaluate.inference import render_prompt_lf
    from thinktune.evaluate.metrics import load_samples

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, cfg)
    tmp = Path(out_dir).parent / (Path(out_dir).name + ".data")
    samples = load_samples(write_tiny_dataset(tmp) / "train.json")
    texts = [render_prompt_lf(s.messages) + s.reference + "<|im_end|>\n" for s in samples]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        enc = tok(texts[step % len(texts)], return_tensors="pt")
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    return out
