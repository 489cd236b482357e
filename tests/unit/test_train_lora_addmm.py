"""``LoraScaledAddmm`` (thinktune/train/worker_callbacks.py): each plain LoRA linear adds its update in one GEMM's
epilogue instead of peft's multiply and add. The loss and every gradient must match peft's (to float32 rounding in
float32, to bfloat16 rounding under autocast), the elementwise kernels must be gone, and every layer or state the
fused form does not cover must go through peft's own forward."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from thinktune.tiny_model import make_tiny_model  # noqa: E402
from thinktune.train.worker_callbacks import LoraScaledAddmm, worker_callbacks  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

TARGETS = ["q_proj", "v_proj", "gate_proj", "down_proj"]
NO_SHARDING = SimpleNamespace(fsdp=[])


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=2, log=lambda _: None)


def lora_model(tiny_path, base_dtype, dropout=0.0):
    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=base_dtype)
    cfg = peft.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=dropout, target_modules=TARGETS, task_type="CAUSAL_LM"
    )
    m = peft.get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LLaMA Factory keeps trainable weights in float32
                if "lora_B" in n:  # B starts at zero: give the update a value
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (2, 16), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100
    return {"input_ids": ids, "labels": labels}


def step(model, autocast: bool):
    model.train()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch()).loss
    loss.backward()
    return loss.detach().float(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def with_callback(model, fn, args=NO_SHARDING):
    cb = LoraScaledAddmm()
    cb.on_train_begin(args, None, None, model=model)
    try:
        return cb, fn()
    finally:
        cb.on_train_end(args, None, None)


def lora_layers(model):
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules() if type(m) is Linear]


def assert_close(ref, got, rtol, atol):
    (l0, g0), (l1, g1) = ref, got
    assert torch.allclose(l0, l1, rtol=rtol, atol=atol), (l0, l1)
    assert set(g0) == set(g1) and any("lora_B" in n for n in g1)
    for n in g0:
        scale = g0[n].abs().max().item()
        assert (g0[n] - g1[n]).abs().max().item() <= rtol * scale + atol, n


def test_float32_matches_peft_to_rounding(tiny_path):
    model = lora_model(tiny_path, torch.float32)
    ref = step(model, autocast=False)
    cb, got = with_callback(model, lambda: step(model, autocast=False))
    assert cb.fused == len(lora_layers(model)) == 2 * len(TARGETS) and cb.fallback == 0  # one forward
    assert_close(ref, got, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_matches_peft_to_bf16_rounding_without_the_elementwise_kernels(tiny_path):
    from torch.profiler import ProfilerActivity, profile

    model = lora_model(tiny_path, torch.bfloat16)

    def counted():
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            out = step(model, autocast=True)
        # elements the multiplies and adds read (first operand), forward and backward
        volume = sum(
            e.count * math.prod(e.input_shapes[0])
            for e in prof.key_averages(group_by_input_shape=True)
            if e.key in ("aten::mul", "aten::add") and e.input_shapes and e.input_shapes[0]
        )
        return out, volume

    ref, volume_peft = counted()
    cb, (got, volume_fused) = with_callback(model, counted)
    layers = lora_layers(model)
    assert cb.fused == len(layers) and cb.fallback == 0
    # the fused sum is rounded once (peft's three times): equal within bfloat16's 2^-8
    assert_close(ref, got, rtol=2e-2, atol=1e-4)
    # per LoRA layer the forward's multiply by the scaling and its add, and the backward's multiply, each over the
    # [tokens, out_features] output, are gone (the GEMM's alpha leaves two multiplies of rank-sized gradients)
    tokens = batch()["input_ids"].numel()
    outputs = sum(m.base_layer.out_features for m in layers)
    assert volume_peft - volume_fused >= 2.5 * tokens * outputs, (volume_peft, volume_fused, tokens * outputs)


def test_bf16_base_with_float32_adapters_without_autocast_goes_through_peft(tiny_path):
    """No autocast and mixed dtypes: peft's type promotion is the semantics (no single-dtype GEMM exists)."""
    model = lora_model(tiny_path, torch.bfloat16)
    ref = step(model, autocast=False)
    cb, got = with_callback(model, lambda: step(model, autocast=False))
    assert cb.fused == 0 and cb.fallback == len(lora_layers(model))
    assert torch.equal(ref[0], got[0])
    for n in ref[1]:
        assert torch.equal(ref[1][n], got[1][n]), n


def test_layers_it_does_not_cover_go_through_peft(tiny_path):
    dropped = lora_model(tiny_path, torch.float32, dropout=0.1)
    cb, _ = with_callback(dropped, lambda: step(dropped, autocast=False))
    assert cb.fused == 0 and cb.fallback == len(lora_layers(dropped))

    model = lora_model(tiny_path, torch.float32)
    cb = LoraScaledAddmm()
    cb.on_train_begin(NO_SHARDING, None, None, model=model)
    try:
        with model.disable_adapter(), torch.no_grad():
            model(**batch())
        assert cb.fused == 0 and cb.fallback == len(lora_layers(model))
    finally:
        cb.on_train_end(NO_SHARDING, None, None)
    # after training the model is peft's again (merge, generation and export use peft's forward)
    assert all("forward" not in m.__dict__ for m in lora_layers(model))


def test_sharded_parameters_keep_peft_forward(tiny_path):
    """ZeRO-3 and FSDP gather B's weight in B's own forward hook, which the fused GEMM would skip."""
    model = lora_model(tiny_path, torch.float32)
    cb = LoraScaledAddmm()
    cb.on_train_begin(SimpleNamespace(fsdp=["full_shard"]), None, None, model=model)
    assert not cb._patched and all("forward" not in m.__dict__ for m in lora_layers(model))


def test_inside_accelerates_bf16_wrapper(tiny_path):
    """As the Trainer runs it: accelerate's autocast around the peft model's forward."""
    from accelerate import Accelerator

    model = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(lora_model(tiny_path, torch.bfloat16))
    cb, _ = with_callback(model, lambda: model(**batch()).loss.backward())
    assert cb.fused == len(lora_layers(model)) and cb.fallback == 0


def test_worker_adds_it():
    assert any(isinstance(cb, LoraScaledAddmm) for cb in worker_callbacks({}, None))


def test_under_torch_compile_its_counter_does_not_recompile_the_graph(tiny_path):
    """The Trainer's ``torch_compile``: each fused forward used to increment a Python counter dynamo guards on, so
    every call recompiled until the recompile limit sent the model back to eager. Now the compiled forwards leave
    the counter alone (they are not counted) and repeated calls reuse one graph; eager forwards still count."""
    import torch._dynamo

    model = lora_model(tiny_path, torch.float32)
    # dynamo's tracing and guards, without inductor's codegen
    compiled = torch.compile(model, backend="eager")
    ids = batch()["input_ids"]

    def forwards():
        with torch.no_grad():
            compiled(input_ids=ids)  # the first call compiles
            with torch._dynamo.config.patch(error_on_recompile=True):
                for _ in range(4):
                    compiled(input_ids=ids)
            return model(input_ids=ids)

    torch._dynamo.reset()
    try:
        cb, _ = with_callback(model, forwards, SimpleNamespace(fsdp=[], torch_compile=True))
    finally:
        torch._dynamo.reset()
    assert cb.fused == len(TARGETS) * 2 and cb.fallback == 0  # the eager forward's 2 layers x 4 targets
