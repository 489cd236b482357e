"""``CudnnAttentionFirst`` on a real GPU (device machine only; skipped elsewhere): the probe accepts cuDNN for
Qwen3-4B's attention layout (32 query heads, 8 key/value heads, head size 128) in bf16, the callback makes SDPA
run cuDNN's kernel for the call transformers makes in training (causal, grouped heads, no mask), and
``on_train_end`` gives PyTorch's order back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from thinktune.train.worker_callbacks import CudnnAttentionFirst  # noqa: E402

QWEN3_4B = (32, 8, 128)


def _kernels(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type.name == "CUDA"]


def test_probe_accepts_cudnn_for_the_qwen3_4b_layout():
    cudnn, other = CudnnAttentionFirst.probe(*QWEN3_4B, dtype=torch.bfloat16, device="cuda")
    assert 0 < cudnn <= CudnnAttentionFirst.TOLERANCE * other, (cudnn, other)
    assert cudnn < 0.05  # a bf16 kernel, not garbage


def test_training_attention_runs_cudnn_while_training_and_pytorchs_order_after(monkeypatch):
    cb = CudnnAttentionFirst()
    monkeypatch.setattr(CudnnAttentionFirst, "layout", staticmethod(lambda model: QWEN3_4B))
    before = torch._C._get_sdp_priority_order()
    heads, kv, dim = QWEN3_4B
    q = torch.randn(4, heads, 2048, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(4, kv, 2048, dim, device="cuda", dtype=torch.bfloat16) for _ in range(2))

    def step():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out.sum().backward()

    assert not any("cudnn" in n.lower() for n in _kernels(step))  # PyTorch's own order: flash first
    args = SimpleNamespace(bf16=True, fp16=False, device=torch.device("cuda"))
    cb.on_train_begin(args, None, None, model=object())
    assert cb.verdict.startswith("cuDNN first"), cb.verdict
    names = _kernels(step)
    assert any("cudnn" in n.lower() for n in names), names[:20]
    cb.on_train_end(args, None, None)
    assert torch._C._get_sdp_priority_order() == before
    assert not any("cudnn" in n.lower() for n in _kernels(step))
