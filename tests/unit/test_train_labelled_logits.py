"""Logits at labelled positions only (thinktune/train/worker_callbacks.py LabelledLogits): the training loss and
every gradient equal those of the full logits, prompt and padding rows are skipped, and evaluation is untouched."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from thinktune.tiny_model import make_tiny_model  # noqa: E402
from thinktune.train.worker_callbacks import LabelledLogits  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=1, log=lambda _: None)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():  # the random init's tiny final norm makes every loss ~ln(vocab): make rows differ
        m.model.norm.weight.fill_(8.0)
    return m


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (3, 24), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :9] = -100  # prompt
    labels[1, 5:] = -100  # a row with nothing scored
    labels[2, 17:], mask[2, 17:] = -100, 0  # padding
    labels[0, 12] = -100  # a masked token inside the answer
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, hook: LabelledLogits | None):
    model.train()
    model.zero_grad()
    handle = None
    if hook is not None:
        handle = LabelledLogits.head(model).register_forward_pre_hook(hook.keep, with_kwargs=True)
    try:
        out = model(**batch())
    finally:
        if handle is not None:
            handle.remove()
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_same_loss_and_gradients_with_fewer_rows(model):
    full, g_full = loss_and_grads(model, None)
    hook = LabelledLogits()
    kept, g_kept = loss_and_grads(model, hook)
    assert full.logits.shape[1] == 24
    # positions scored in any row: 8..22 minus none (row 0 keeps 12's neighbours) -> fewer than 24
    assert kept.logits.shape[1] < 24 and hook.rows_kept < hook.rows_total
    assert torch.allclose(full.loss, kept.loss, rtol=1e-6, atol=1e-6), (full.loss, kept.loss)
    assert set(g_full) == set(g_kept)
    for n in g_full:
        assert torch.allclose(g_full[n], g_kept[n], rtol=1e-4, atol=1e-7), n


def test_evaluation_and_callers_choices_are_left_alone(model):
    hook = LabelledLogits()
    head = LabelledLogits.head(model)
    handle = head.register_forward_pre_hook(hook.keep, with_kwargs=True)
    try:
        model.eval()
        with torch.no_grad():
            assert model(**batch()).logits.shape[1] == 24  # eval: full logits for the scoring code
            model.train()
            assert model(input_ids=batch()["input_ids"]).logits.shape[1] == 24  # no labels: nothing to skip
    finally:
        handle.remove()
    assert hook.rows_total == 0


def test_under_lora_the_hook_runs_and_the_loss_is_the_same(model):
    """LLaMA Factory trains a PeftModelForCausalLM, whose LoraModel calls the causal LM's forward directly: a hook
    on the head never ran there. on_train_begin hooks the model the Trainer calls."""
    peft = pytest.importorskip("peft")
    import copy

    lora = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    lora.train()
    full = lora(**batch())
    hook = LabelledLogits()
    hook.on_train_begin(None, None, None, model=lora)
    try:
        kept = lora(**batch())
    finally:
        hook.on_train_end(None, None, None)
    assert hook.rows_kept and hook.rows_kept < hook.rows_total
    assert kept.logits.shape[1] < full.logits.shape[1] == 24
    assert torch.allclose(full.loss, kept.loss, rtol=1e-6, atol=1e-6), (full.loss, kept.loss)
