"""Trainer callbacks the worker adds next to ``ThinktuneCallback`` (thinktune/train/worker.py), each for one thing
the plan asked for in the LLaMA Factory arguments.

``PublishTokenized``: moves this launch's freshly saved tokenized dataset into its cache path
(thinktune/train/cache.py says why a rename). ``NonPaddingTokens``: counts the non-padding tokens of every
training forward when the plan switched the Trainer's own count off (``include_num_input_tokens_seen: no``, under
packing: LLaMA Factory's neat packing turns the attention mask into segment ids, or with sdpa into a 4D float
mask, and the Trainer's ``non_padding`` count sums that mask: -3.7e19 tokens per step in
bench/results/gpu-train-2026-12-01.json). It writes ``state.num_input_tokens_seen``, which ``ThinktuneCallback``
turns into tokens/s, so it must come before it in the callback list. ``LabelledLogits``: the plan's
``labelled_logits`` (thinktune/train/planner.py decide_labelled_logits). ``CausalRightPadding`` and
``LoraCastUnderAutocast``: two exact shortcuts in every training forward, measured in bench/NOTES-gpu.md (profile of
2026-12-07, H100): a padded batch's attention mask sent SDPA to its masked path (4x the attention time of the causal
kernel and K/V repeated to every query head), and peft cast each LoRA input to float32 for autocast to cast it
straight back (two activation-sized copies per LoRA layer, ~18 % of the GPU's time). ``LoraScaledAddmm``: the LoRA
update added in a GEMM's epilogue instead of two output-sized elementwise kernels (equal within rounding).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from thinktune.train import cache


class PublishTokenized(TrainerCallback):
    """Global rank 0, after LF saved the staging directory (``get_dataset`` runs before the Trainer exists):
    rename it to the final path and remove stale staging directories of killed launches."""

    def __init__(self, final: str, staging: str):
        self.final, self.staging = Path(final), Path(staging)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if cache.is_complete_save(self.staging) and not self.final.exists():
            os.replace(self.staging, self.final)
            print(f"[thinktune] tokenized dataset cached at {self.final}", flush=True)
        for stale in self.final.parent.glob(f"{self.final.name}{cache.PARTIAL}*"):
            shutil.rmtree(stale, ignore_errors=True)


class NonPaddingTokens(TrainerCallback):
    """Non-padding tokens of each training forward: a 2D attention mask's non-zero entries (0/1 or segment ids),
    else the tokens that are not the pad token (LF pads packed rows and batches with it). Counted on the device
    without a sync; summed over ranks at each logging step."""

    def __init__(self) -> None:
        self.pad_id: int | None = None
        self.pending: Any = None  # a 0-d tensor on the batch's device
        self._handle: Any = None

    def count(self, module, args, kwargs) -> None:
        if not module.training:
            return
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
        if mask is not None and mask.dim() == 2:
            n = mask.count_nonzero()
        elif ids is not None and self.pad_id is not None:
            n = (ids != self.pad_id).sum()
        elif ids is not None:
            n = ids.new_tensor(ids.numel())
        else:
            return
        self.pending = n if self.pending is None else self.pending + n

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        tok = getattr(processing_class, "tokenizer", processing_class)
        self.pad_id = getattr(tok, "pad_token_id", None)
        if model is not None and self._handle is None:
            # first of the hooks on this module: CausalRightPadding, registered on it too, drops the mask it reads
            self._handle = model.register_forward_pre_hook(self.count, with_kwargs=True, prepend=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        import torch
        import torch.distributed as dist

        n = (
            self.pending
            if self.pending is not None
            else torch.zeros((), dtype=torch.int64, device=args.device)
        )
        n = n.to(torch.int64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)  # every rank logs the same steps
        state.num_input_tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0) + int(n.item())
        logs["num_input_tokens_seen"] = state.num_input_tokens_seen
        self.pending = None

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def _eager() -> bool:
    """False while torch.compile traces a forward. The hooks' counters are kept only outside it: a Python integer
    read inside a compiled forward becomes a guard on its value, so each increment recompiled the graph until
    dynamo's recompile limit sent the model back to eager (seen with the Trainer's ``torch_compile``)."""
    import torch

    return not torch.compiler.is_compiling()


def _uncounted_note(args: Any) -> str:
    return (
        " (forwards inside torch.compile's graphs not counted)"
        if getattr(args, "torch_compile", False)
        else ""
    )


def _causal_lm(model: Any) -> Any:
    """The causal LM that owns ``lm_head`` (``Qwen3ForCausalLM``), not a wrapper named like one (peft's
    ``PeftModelForCausalLM``). Hooks that need the Trainer's autocast go on its decoder body (``.model``): accelerate
    wraps the outer model's forward in autocast, so a hook on the outer model runs before autocast begins, and peft's
    LoraModel calls the causal LM's forward directly, so a hook on it never runs; the body is called through
    ``__call__`` inside both."""
    for m in model.modules():
        if type(m).__name__.endswith("ForCausalLM") and "lm_head" in m._modules:
            return m
    return None


class LabelledLogits(TrainerCallback):
    """Training forwards compute the logits only at the positions whose next-token label is scored.

    transformers' causal-LM heads take ``logits_to_keep`` as a tensor of positions and their loss takes
    ``shift_labels`` already shifted; a forward pre-hook on that head (the innermost ``*ForCausalLM`` whose
    ``forward`` has ``logits_to_keep``) passes both when the Trainer's batch carries ``labels``. Positions are the
    union over the micro-batch (a row's unscored positions in it are -100), so the loss and its gradient are the
    ones of the full logits: masked rows add nothing to either. Only in training mode: evaluation and the
    teacher-forced scoring read the full logits."""

    def __init__(self) -> None:
        self._handle: Any = None
        self.rows_kept = 0
        self.rows_total = 0

    @staticmethod
    def head(model: Any) -> Any:
        """The causal LM (``_causal_lm``) when its forward takes ``logits_to_keep``, else None."""
        import inspect

        lm = _causal_lm(model)
        if lm is not None and "logits_to_keep" in inspect.signature(type(lm).forward).parameters:
            return lm
        return None

    def keep(self, module, args, kwargs):
        labels = kwargs.get("labels")
        if not module.training or labels is None or kwargs.get("shift_labels") is not None:
            return None
        if kwargs.get("logits_to_keep"):  # a caller's own choice
            return None
        import torch.nn.functional as F

        shift = F.pad(labels, (0, 1), value=-100)[..., 1:]
        positions = (shift != -100).any(dim=0).nonzero().squeeze(-1)
        self.rows_kept += int(positions.numel()) * shift.shape[0]
        self.rows_total += shift.numel()
        return args, {**kwargs, "logits_to_keep": positions, "shift_labels": shift[:, positions].contiguous()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        head = self.head(model) if model is not None else None
        if head is None:
            print("[thinktune] labelled-positions logits: no causal-LM head with logits_to_keep; full logits")
            return
        if self._handle is None:
            # on the model the Trainer calls, which passes the two arguments through to the head: peft's LoraModel
            # calls the head's forward directly, so a hook on the head never ran under LoRA
            self._handle = model.register_forward_pre_hook(self.keep, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class CausalRightPadding(TrainerCallback):
    """Training forwards of a right-padded batch go without the attention mask.

    Under a causal mask a real token attends only to earlier positions, which right padding keeps real, so the
    mask changes nothing but the outputs at the padding positions themselves, whose labels are -100: the loss and
    every gradient are the ones of the masked forward. Without the mask transformers calls SDPA causal (flash
    kernel, grouped K/V heads as they are) instead of with a dense [batch, 1, seq, seq] mask. Checked on the device
    for every batch (0/1 mask, ones before zeros in each row, labels -100 wherever the mask is 0): one sync of its
    own (transformers makes one either way: it tests the mask, or without one the position ids for packed rows);
    anything else (left padding, packed segment ids, a 4D mask) is passed on untouched."""

    def __init__(self) -> None:
        self._handle: Any = None
        self.dropped = 0
        self.kept = 0

    def drop(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if not module.training or mask is None or mask.dim() != 2 or mask.shape[1] < 2:
            return None
        ok = ((mask == 0) | (mask == 1)).all() & (mask[:, 1:] <= mask[:, :-1]).all()
        labels = kwargs.get("labels")
        if labels is not None and labels.shape == mask.shape:
            ok = ok & ((mask == 1) | (labels == -100)).all()
        if not bool(ok):  # the one sync
            if _eager():
                self.kept += 1
            return None
        if _eager():
            self.dropped += 1
        return args, {**kwargs, "attention_mask": None}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        lm = _causal_lm(model) if model is not None else None
        attn = str(getattr(getattr(lm, "config", None), "_attn_implementation", "sdpa"))
        # flash-attn's varlen path skips padding positions itself: the mask is the cheaper way there
        if attn.startswith("flash"):
            return
        if model is not None and self._handle is None:  # the model the Trainer calls: it sees the labels
            self._handle = model.register_forward_pre_hook(self.drop, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.dropped or self.kept or _uncounted_note(args):
            print(
                f"[thinktune] attention: {self.dropped} right-padded training batches ran causal without a mask, "
                f"{self.kept} kept their mask{_uncounted_note(args)}",
                flush=True,
            )


class LoraCastUnderAutocast(TrainerCallback):
    """peft casts each LoRA layer's input to the adapter's dtype (float32 here: LLaMA Factory keeps trainable weights
    in float32); under autocast the matmul casts it straight back to bfloat16/float16, so the two activation-sized
    copies (and their backward) change no value. While autocast is on, the cast is off (peft's own switch,
    ``cast_input_dtype_enabled``); without autocast (CPU float32, generation outside the Trainer) it stays on:
    checked at every forward of the decoder body (``_causal_lm`` says why there), the switch flipped only when the
    state changes."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._layers: list[Any] = []
        self._state: bool | None = None  # autocast on at the last forward

    def set(self, module, args, kwargs):
        import torch

        ids = kwargs.get("input_ids")
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is None:
            return None
        on = torch.is_autocast_enabled(ids.device.type)
        if on != self._state:
            for layer in self._layers:
                layer.cast_input_dtype_enabled = not on
            self._state = on
        return None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        lm = _causal_lm(model) if model is not None else None
        if lm is None or self._handle is not None:
            return
        self._layers = [m for m in lm.modules() if hasattr(m, "cast_input_dtype_enabled")]
        # the decoder body, called through __call__ by the causal LM: its hooks run
        body = lm._modules.get("model")
        body = lm if body is None else body
        if self._layers:
            self._handle = body.register_forward_pre_hook(self.set, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for layer in self._layers:  # peft's default for whatever runs the model next
            layer.cast_input_dtype_enabled = True
        self._state = None


def _sharded_parameters(args: Any) -> bool:
    """DeepSpeed ZeRO-3 or FSDP: parameters gathered by each module's own forward hooks."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled() or getattr(args, "fsdp", None))


class LoraScaledAddmm(TrainerCallback):
    """Each plain LoRA linear adds its low-rank update in the epilogue of one GEMM: ``addmm(base output, x A^T, B^T,
    alpha=scaling)`` in place of peft's ``base + B(A(x)) * scaling``, whose multiply and add each read and write an
    output-sized tensor (and the multiply again in the backward): with the LoRA input casts gone, the largest
    elementwise kernels in the H100 profile (bench/NOTES-gpu.md). The sum is rounded once instead of three times:
    equal to peft's within bfloat16 rounding, and to float32 rounding without autocast (tests). Only for layers
    exactly ``peft``'s ``lora.Linear`` with one active vanilla adapter, no dropout, no bias on B, not merged, no
    per-sample adapter names, and dtypes autocast (or equality) make one GEMM of; any other forward is peft's. Not
    under ZeRO-3 or FSDP, which gather B's weight in its own forward hook."""

    def __init__(self) -> None:
        self._patched: list[Any] = []
        self.fused = 0
        self.fallback = 0

    def _forward(self, layer: Any, original: Any):
        import torch

        def forward(x, *args, **kwargs):
            adapters = layer.active_adapters
            if (
                kwargs
                or args
                or layer.disable_adapters
                or layer.merged
                or len(adapters) != 1
                or adapters[0] not in layer.lora_A
                or adapters[0] in layer.lora_variant
                or not isinstance(layer.lora_dropout[adapters[0]], torch.nn.Identity)
                or layer.lora_B[adapters[0]].bias is not None
            ):
                if _eager():
                    self.fallback += 1
                return original(x, *args, **kwargs)
            name = adapters[0]
            lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
            base = getattr(layer.base_layer, "weight", None)
            if not torch.is_autocast_enabled(x.device.type) and not (
                base is not None and x.dtype == base.dtype == lora_a.weight.dtype == lora_b.weight.dtype
            ):
                if _eager():
                    self.fallback += 1  # peft's type promotion and cast back
                return original(x, *args, **kwargs)
            result = layer.base_layer(x)
            h = lora_a(layer._cast_input_dtype(x, lora_a.weight.dtype))
            if _eager():
                self.fused += 1
            out = torch.addmm(
                result.reshape(-1, result.shape[-1]),
                h.reshape(-1, h.shape[-1]),
                lora_b.weight.t(),
                alpha=layer.scaling[name],
            )
            return out.view(result.shape).to(result.dtype)

        return forward

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or self._patched:
            return
        try:
            from peft.tuners.lora.layer import Linear
        except ImportError:
            return
        if _sharded_parameters(args):
            print("[thinktune] LoRA update: peft's own forward (ZeRO-3/FSDP gather each module's weights)")
            return
        for m in model.modules():
            if type(m) is Linear and "forward" not in m.__dict__:
                m.forward = self._forward(m, m.forward)
                self._patched.append(m)

    def on_train_end(self, args, state, control, **kwargs):
        for m in self._patched:  # peft's forward for whatever runs the model next (merge, generation, export)
            m.__dict__.pop("forward", None)
        self._patched = []
        if self.fused or self.fallback or _uncounted_note(args):
            print(
                f"[thinktune] LoRA update: {self.fused} layer forwards fused into one GEMM, {self.fallback} through "
                f"peft{_uncounted_note(args)}",
                flush=True,
            )


def worker_callbacks(
    args: dict[str, Any], tokenized_final: str | None, labelled_logits: bool = False
) -> list[TrainerCallback]:
    """The callbacks ``args`` (after ``cache.prepare_tokenized``) call for, in the order they must run."""
    out: list[TrainerCallback] = [CausalRightPadding(), LoraCastUnderAutocast(), LoraScaledAddmm()]
    if labelled_logits:
        out.append(LabelledLogits())
    if args.get("include_num_input_tokens_seen", "no") in ("no", False):
        out.append(NonPaddingTokens())
    staging = args.get("tokenized_path")
    if tokenized_final and staging and staging != tokenized_final:
        out.append(PublishTokenized(tokenized_final, staging))
    return out
