"""``CudnnAttentionFirst`` (thinktune/train/worker_callbacks.py) off the GPU: it reads the attention layout the
probe needs from the model (through peft's wrapper too), stays out of models not on transformers' sdpa path,
and without a GPU leaves PyTorch's SDPA order as it was. On a GPU: tests/gpu/test_attention_kernel_gpu.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from thinktune.tiny_model import make_tiny_model  # noqa: E402
from thinktune.train.worker_callbacks import CudnnAttentionFirst, worker_callbacks  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=1, log=lambda _: None)


def test_layout_is_the_models_query_and_key_value_heads_and_head_size(tiny_path):
    m = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="sdpa")
    cfg = m.config
    want = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped heads, as Qwen3-4B's 32 / 8
    assert CudnnAttentionFirst.layout(m) == want
    wrapped = peft.get_peft_model(m, peft.LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert CudnnAttentionFirst.layout(wrapped) == want
    eager = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="eager")
    assert CudnnAttentionFirst.layout(eager) is None  # no SDPA call to steer


def test_without_a_gpu_the_order_stays_pytorchs(tiny_path, capsys):
    m = AutoModelForCausalLM.from_pretrained(tiny_path, attn_implementation="sdpa")
    before = torch._C._get_sdp_priority_order()
    cb = CudnnAttentionFirst()
    args = SimpleNamespace(bf16=True, fp16=False, device=torch.device("cpu"))
    cb.on_train_begin(args, None, None, model=m)
    assert torch._C._get_sdp_priority_order() == before
    assert "PyTorch's order kept" in capsys.readouterr().out
    cb.on_train_end(args, None, None)
    assert torch._C._get_sdp_priority_order() == before


def test_the_worker_adds_it_only_when_the_plan_asks_for_cudnn():
    assert not any(isinstance(cb, CudnnAttentionFirst) for cb in worker_callbacks({}, None))
    first = worker_callbacks({}, None, attention_kernel="cudnn")[0]
    assert isinstance(first, CudnnAttentionFirst)


def test_the_probe_fails_loudly_where_cudnn_cannot_run():
    """On the CPU there is no cuDNN kernel: the probe raises (the callback then keeps PyTorch's order)."""
    with pytest.raises(RuntimeError):
        CudnnAttentionFirst.probe(4, 2, 16, dtype=torch.float32, device="cpu", seq=8, batch=1)
