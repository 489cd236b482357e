"""Two exact shortcuts of every training forward (thinktune/train/worker_callbacks.py): a right-padded batch runs
causal without its attention mask (``CausalRightPadding``), and peft's float32 round trip of each LoRA input is
skipped while autocast is on (``LoraCastUnderAutocast``). Each must leave the loss and every gradient as they were
and stand aside where it would not be exact."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from thinktune.tiny_model import make_tiny_model  # noqa: E402
from thinktune.train.worker_callbacks import CausalRightPadding, LoraCastUnderAutocast, _causal_lm  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=2, log=lambda _: None)


@pytest.fixture(scope="module")
def model(tiny_path):
    m = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32, attn_implementation="sdpa")
    with torch.no_grad():  # the random init's tiny final norm makes every loss ~ln(vocab): make rows differ
        m.model.norm.weight.fill_(8.0)
    return m


def padded_batch(side: str = "right", score_padding: bool = False):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :6] = -100  # prompt
    for row, n in ((1, 17), (2, 9)):  # two rows shorter than the batch
        pad = slice(n, None) if side == "right" else slice(0, 24 - n)
        mask[row, pad] = 0
        labels[row, pad] = -100
    if score_padding:
        labels[2, 20] = 7  # a label on a padding position: the masked forward's loss reads it
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, batch, hook=None):
    model.train()
    model.zero_grad()
    handle = None
    if hook is not None:
        handle = _causal_lm(model).register_forward_pre_hook(hook.drop, with_kwargs=True)
    try:
        loss = model(**batch).loss
    finally:
        if handle is not None:
            handle.remove()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_right_padded_batch_runs_without_mask_same_loss_and_gradients(model):
    batch = padded_batch("right")
    masked, g_masked = loss_and_grads(model, batch)
    hook = CausalRightPadding()
    causal, g_causal = loss_and_grads(model, batch, hook)
    assert hook.dropped == 1 and hook.kept == 0
    assert torch.allclose(masked, causal, rtol=1e-6, atol=1e-6), (masked, causal)
    assert set(g_masked) == set(g_causal)
    for n in g_masked:
        assert torch.allclose(g_masked[n], g_causal[n], rtol=1e-4, atol=1e-6), n
    # and the mask matters where it is dropped: without it the padding rows' own outputs change
    model.eval()
    with torch.no_grad():
        with_mask = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        without = model(input_ids=batch["input_ids"]).logits
    assert torch.allclose(with_mask[1, :17], without[1, :17], atol=1e-5)  # real tokens: the same


@pytest.mark.parametrize(
    "batch",
    [padded_batch("left"), padded_batch("right", score_padding=True)],
    ids=["left-padded", "label-on-padding"],
)
def test_mask_kept_where_dropping_it_would_change_the_loss(model, batch):
    hook = CausalRightPadding()
    masked, _ = loss_and_grads(model, batch)
    kept, _ = loss_and_grads(model, batch, hook)
    assert hook.dropped == 0 and hook.kept == 1
    assert torch.equal(masked, kept)


def test_evaluation_and_unpadded_batches_are_left_alone(model):
    hook = CausalRightPadding()
    handle = _causal_lm(model).register_forward_pre_hook(hook.drop, with_kwargs=True)
    try:
        model.eval()
        with torch.no_grad():
            model(**padded_batch("right"))
        model.train()
        model(input_ids=padded_batch()["input_ids"])  # no mask at all
    finally:
        handle.remove()
    assert hook.dropped == 0 and hook.kept == 0


@pytest.fixture()
def lora_model(tiny_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.bfloat16)
    cfg = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )  # as LLaMA Factory builds it: a PeftModelForCausalLM, named like the causal LM it wraps
    m = peft.get_peft_model(base, cfg)
    for p in m.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # as LLaMA Factory keeps trainable weights
        with torch.no_grad():
            if p.requires_grad and p.dim() == 2 and p.shape[0] != 8:  # lora_B starts at zero: give it a value
                p.normal_(std=0.02)
    return m


def autocast_step(model):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**padded_batch("right")).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def to_copies(model) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        autocast_step(model)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")


def test_lora_input_cast_skipped_under_autocast_same_values(lora_model):
    model = lora_model
    model.train()
    base_loss, base_grads = autocast_step(model)
    base_copies = to_copies(model)
    cb = LoraCastUnderAutocast()
    cb.on_train_begin(None, None, None, model=model)
    try:
        loss, grads = autocast_step(model)
        copies = to_copies(model)
        layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
        assert layers and not any(m.cast_input_dtype_enabled for m in layers)
        # outside autocast the float32 adapters need the cast again: a forward must work, and switch it back on
        model(**padded_batch("right"))
        assert all(m.cast_input_dtype_enabled for m in layers)
    finally:
        cb.on_train_end(None, None, None)
    assert torch.equal(base_loss, loss)
    assert set(base_grads) == set(grads) and grads
    for n in grads:
        assert torch.equal(base_grads[n], grads[n]), n
    # at least the forward's x.to(float32) and autocast's cast back per LoRA layer (2 layers x 4 targets) are gone
    # (155 -> 127 copies when written: the backward's casts of the same tensors go too)
    assert base_copies - copies >= 2 * len(layers), (base_copies, copies, len(layers))


def test_hooks_sit_inside_the_trainers_autocast(lora_model):
    """The Trainer's autocast is accelerate's wrapper around the outer (peft) model's forward: a hook on that model
    would run before autocast begins (first GPU run: the casts stayed). The hooks go on the causal LM inside it."""
    from accelerate import Accelerator

    model = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(lora_model)
    lm = _causal_lm(model)
    assert type(lm).__name__ == "Qwen3ForCausalLM", type(lm).__name__
    cb = LoraCastUnderAutocast()
    pad = CausalRightPadding()
    pad.on_train_begin(None, None, None, model=model)
    cb.on_train_begin(None, None, None, model=model)
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    try:
        model.train()
        model(**padded_batch("right"))  # no autocast of our own: accelerate's
        assert not any(m.cast_input_dtype_enabled for m in layers)
        assert pad.dropped == 1
    finally:
        cb.on_train_end(None, None, None)
        pad.on_train_end(None, None, None)
    assert all(m.cast_input_dtype_enabled for m in layers)


def test_flash_attention_keeps_its_mask(model):
    """flash-attn's varlen path skips padding positions itself: there the mask is the cheaper way."""
    saved = model.config._attn_implementation
    try:
        model.config._attn_implementation = "flash_attention_2"
        hook = CausalRightPadding()
        hook.on_train_begin(None, None, None, model=model)
        assert hook._handle is None
        model.config._attn_implementation = "sdpa"
        hook.on_train_begin(None, None, None, model=model)
        assert hook._handle is not None
    finally:
        model.config._attn_implementation = saved
        hook.on_train_end(None, None, None)
