"""thinktune doctor on a real GPU machine (the H200 device machine). Skipped without CUDA."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from thinktune.doctor import DEFAULT_MODEL, run_doctor  # noqa: E402
from thinktune.hardware import detect_hardware  # noqa: E402
from thinktune.train.memory import ModelShape, TrainShape, estimate  # noqa: E402


def _is_h200() -> bool:
    return "H200" in torch.cuda.get_device_name(0)


def test_gpus_are_reported():
    hw = detect_hardware()
    assert hw.cuda_available and hw.gpu_count == torch.cuda.device_count() >= 1
    for g in hw.gpus:
        assert g.name and g.total_gib > 1 and 0 < g.free_gib <= g.total_gib
    assert hw.torch_version and hw.cuda_version
    if hw.gpu_count > 1:
        assert hw.topology.interconnect in ("nvlink", "partial-nvlink", "pcie", "unknown")
    else:
        assert hw.topology.interconnect == "single"


@pytest.mark.skipif(not torch.cuda.is_available() or not _is_h200(), reason="H200-specific")
def test_h200_reported_and_qwen3_4b_lora_fits():
    hw = detect_hardware()
    h200 = hw.gpus[0]
    assert "H200" in h200.name
    assert 130 < h200.total_gib < 145 and h200.bf16 and h200.compute_capability == "9.0"

    report = run_doctor(DEFAULT_MODEL, hardware=hw)
    assert report.fits["lora"] and report.fits["qlora"]
    assert "LoRA bf16 fits" in report.recommendation and report.plan["device"] == "cuda"
    assert report.max_micro_batch["lora"] >= 8
    # Weights are not on this offline machine: that (and only that) may block training.
    blockers = [c for c in report.checks if c.status == "fail"]
    assert all(c.name == "model" for c in blockers), blockers


def test_tiny_model_can_train_here(tmp_path):
    from thinktune.tiny_model import make_tiny_model

    report = run_doctor(str(make_tiny_model(tmp_path / "tiny")))
    assert report.exit_code == 0, report.recommendation
    assert report.fits["lora"] and report.fits["full"]


def _gpu_gib() -> float:
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0


@pytest.mark.slow
@pytest.mark.skipif(_gpu_gib() < 30, reason="needs ~25 GiB of GPU memory")
def test_lora_estimate_bounds_a_real_qwen3_4b_step():
    """One LoRA step on a random-weight Qwen3-4B: the estimate must cover the measured peak, without
    overshooting by more than 25%."""
    peft = pytest.importorskip("peft")
    from transformers import Qwen3Config, Qwen3ForCausalLM

    dims = ModelShape.known(DEFAULT_MODEL)
    cfg = Qwen3Config(
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = peft.LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = peft.get_peft_model(model, lora)
    for p in model.parameters():  # LLaMA Factory upcasts trainable parameters to fp32
        if p.requires_grad:
            p.data = p.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == dims.lora_params(16)

    setting = TrainShape(seq=2048, micro_batch=4, gradient_checkpointing=True, lora_rank=16, liger=False)
    est = estimate(dims, setting)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 151_000, (setting.micro_batch, setting.seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):  # the second step has Adam state allocated
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"measured peak {peak:.2f} GiB, estimate {est.total:.2f} GiB")
    assert peak <= est.total <= 1.25 * peak + 1.0
