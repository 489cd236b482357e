"""The hand-tuned anchor (b): plain transformers + peft (+ Liger) LoRA on the bench's own data, no LLaMA Factory.

    python bench/hf_peft_bench.py CONFIG.json

CONFIG: ``{"model": DIR, "dataset": DIR (dataset_info.json with bench_train), "cutoff": 2048, "micro_batch": 8,
"accum": 2, "steps": 10, "lora_rank": 16, "liger": true, "gradient_checkpointing": false, "seed": 7,
"records": "steps.jsonl", "profile_last": 0, "profile_out": "profile.json"}``. Rows go through the model's chat
template, are cut at ``cutoff`` and padded to the longest row of each micro-batch (labels -100 on padding); fused
AdamW, gradient clipping at 1.0, bf16 autocast on CUDA. Writes one step record per optimizer step (bench/gpu_bench_lib.py's shape). With ``profile_last`` N, the
last N steps run under ``gpu_bench_lib.ProfileWindow`` (records marked ``"profiled": true``), as
bench/gpu_lf_run.py's do, so the two windows compare op by op.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    import torch
    from gpu_bench_lib import ProfileWindow, write_record
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    records = Path(cfg["records"])
    if cfg.get("liger") and cuda:
        from liger_kernel.transformers import apply_liger_kernel_to_qwen3

        apply_liger_kernel_to_qwen3(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True)
    torch.manual_seed(cfg.get("seed", 7))
    tok = AutoTokenizer.from_pretrained(cfg["model"])
    model = AutoModelForCausalLM.from_pretrained(
        cfg["model"],
        dtype=torch.bfloat16 if cuda else torch.float32,
        attn_implementation="sdpa",
        device_map=dev,
    )
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = LoraConfig(
        r=cfg.get("lora_rank", 16),
        lora_alpha=2 * cfg.get("lora_rank", 16),
        lora_dropout=cfg.get("lora_dropout", 0.0),
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, lcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # fp32 trainable weights, as LLaMA Factory keeps them
    opt = torch.optim.AdamW(params, lr=1e-4, fused=cuda)

    ds = Path(cfg["dataset"])
    info = json.loads((ds / "dataset_info.json").read_text())
    rows = json.loads((ds / info["bench_train"]["file_name"]).read_text())
    seqs = []
    for r in rows:
        ids = tok.apply_chat_template(r["messages"], tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        seqs.append(list(ids)[: cfg["cutoff"]])
    mb, accum = cfg["micro_batch"], cfg["accum"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def batch(i: int):
        chunk = [seqs[(i * mb + k) % len(seqs)] for k in range(mb)]
        n = max(map(len, chunk))
        ids = torch.full((mb, n), pad, dtype=torch.long)
        mask = torch.zeros((mb, n), dtype=torch.long)
        for k, s in enumerate(chunk):
            ids[k, : len(s)] = torch.tensor(s)
            mask[k, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return ids.to(dev), mask.to(dev), labels.to(dev), int(mask.sum())

    seen, micro = 0, 0
    last = int(cfg.get("profile_last") or 0)
    window = ProfileWindow() if last and cfg["steps"] > last else None
    model.train()
    for step in range(1, cfg["steps"] + 1):
        profiled = window is not None and step > cfg["steps"] - last
        if profiled and step == cfg["steps"] - last + 1:
            window.start()
        total = 0.0
        for _ in range(accum):
            ids, mask, labels, ntok = batch(micro)
            micro += 1
            seen += ntok
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=cuda):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = float(total)  # one sync per optimizer step, as the trainers' logging does
        write_record(
            records,
            {
                "step": step,
                "time": time.time(),
                "tokens_seen": seen,
                "loss": loss_value,
                "peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
                **({"profiled": True} if profiled else {}),
            },
        )
        if profiled and step == cfg["steps"]:
            Path(cfg["profile_out"]).write_text(json.dumps(window.stop(last)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
