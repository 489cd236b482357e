"""One memory model for the planner and the doctor: the model's shape, a per-GPU estimate, the usable budget.

Everything here is pure (no torch, no I/O except ``ModelShape.from_path`` reading a config.json), so the planner
(``thinktune.train.planner``) and ``thinktune doctor`` (``thinktune.doctor``) give the same answer for the same
machine: the doctor calls the planner, and the planner calls ``estimate``.

Per GPU, in GiB (2**30 bytes):

- weights: parameters x bytes (bf16 2, fp32 4; QLoRA: NF4 linears at 0.516 B/param = 4 bits + double-quantised
  block scales, embeddings and norms stay bf16; 8-bit: ~1.1 B/param), divided by the world size when parameters
  are sharded (ZeRO-3, FSDP) and ~0 on the GPU with ZeRO-3 offload.
- trainable state: fp32 master + grad + Adam m/v = 16 B per trainable parameter (sharded by ZeRO-2/3 and FSDP;
  in CPU RAM with offload). Full fine-tuning keeps the bf16 weights on top (LLaMA Factory's "18 B/param").
- activations per token, see the calibration constants below.
- usable: 92% of the card minus 1.5 GiB (CUDA context, cuBLAS workspace, NCCL buffers, allocator fragmentation:
  the measured figures are ``torch.cuda.max_memory_allocated``, which counts none of these).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thinktune.spec import DEFAULT_BASE_MODEL

GiB = 1024**3

# --- calibration: LLaMA Factory 0.9.5 through thinktune's worker (LoRA inputs not cast to float32 under autocast,
# right-padded batches causal without a mask: thinktune.train.worker_callbacks), Liger on, LoRA r16 on all
# linears, dropout 0, bf16, Qwen3-4B architecture, rows as long as the cutoff allows (2,033-2,035 tokens at 2048,
# 8,177-8,178 at 8192: LLaMA Factory pads each micro-batch to its longest row). torch peaks on one H100 80GB
# (bench/results/gpu-train-2026-12-07d-h100-*.json):
#   micro-batch 4, no checkpointing: 38.62 GiB; micro-batch 2, no checkpointing: 23.37 GiB
#   -> 7.63 GiB per 2,034-token row: 43.7 B per token per (layer x hidden unit); ~8.1 GiB at micro-batch 0
#      (bf16 weights 7.5 + LoRA state 0.5, as weight_bytes and TRAINABLE_STATE_BYTES say);
#   micro-batch 8 with checkpointing: 13.20 GiB at 2048; micro-batch 2 with checkpointing: 13.21 GiB at 8192;
#   and on one H200 (bench/results/gpu-train-2026-12-07e-h200-addmm-2048.json) micro-batch 8 without: 69.05 GiB.
# 45 B is 1.02-1.06x those peaks (1.03x at micro-batch 8). The earlier 61 B (and its runs: (b), and (c) before
# 2026-12-07's third H100 session) included a bf16 copy of every LoRA input kept for the backward, made by peft's
# float32 cast and autocast's cast back (LoraCastUnderAutocast removes both): plain transformers + peft still pays
# it (50.56 GiB at micro-batch 4, 82.72 at 8 on an H200), thinktune's runs no longer do.
ACT_BYTES_PER_LAYER_HIDDEN = 45.0  # activations kept per token without checkpointing, bf16, Liger
LOGITS_BYTES_PER_VOCAB = 13.0  # per token without Liger's fused linear cross-entropy
# With checkpointing only each layer's bf16 input survives (2 B per layer-hidden) plus the recomputed layer (the
# term above, once) and the gradients flowing back: 3 B fits both checkpointed runs (13.96 GiB estimated for
# 13.20 and 13.21 measured).
GC_BYTES_PER_LAYER_HIDDEN = 3.0
QLORA_NF4_BYTES = 0.516  # per quantized linear parameter (4 bits + double-quantised block scales)
INT8_BYTES = 1.1
TRAINABLE_STATE_BYTES = 16  # fp32 weight + fp32 grad + Adam m + v
USABLE_FRACTION = 0.92
RESERVED_GIB = 1.5

Method = Literal["lora", "qlora", "full", "freeze"]
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelShape(BaseModel):
    """The numbers of a decoder-only transformer that set its memory footprint and LoRA size."""

    model_config = ConfigDict(frozen=True)

    name: str = DEFAULT_BASE_MODEL
    model_type: str = "qwen3"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 262_144
    torch_dtype: str = "bfloat16"

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, name: str = "", source: str = "config.json"
    ) -> ModelShape:
        """From a transformers ``config.json`` dict; raises ValueError naming the missing field."""
        cfg = dict(config)
        if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrappers keep the LM inside
            cfg = {**cfg["text_config"], "model_type": cfg.get("model_type", "")}

        def need(*names: str) -> int:
            for n in names:
                if cfg.get(n) is not None:
                    return int(cfg[n])
            raise ValueError(
                f"{source}: field {names[0]!r} is missing, so the model size cannot be estimated; "
                "is this a decoder-only causal LM config?"
            )

        hidden = need("hidden_size", "n_embd", "d_model")
        heads = need("num_attention_heads", "n_head")
        return cls(
            name=name or str(cfg.get("_name_or_path", "")),
            model_type=str(cfg.get("model_type") or "unknown"),
            hidden_size=hidden,
            num_layers=need("num_hidden_layers", "n_layer"),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=need("intermediate_size", "n_inner", "ffn_dim"),
            vocab_size=need("vocab_size"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 32768),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ModelShape:
        cfg_file = Path(path) / "config.json"
        return cls.from_config(
            json.loads(cfg_file.read_text(encoding="utf-8")), name=str(path), source=str(cfg_file)
        )

    @classmethod
    def known(cls, hub_id: str) -> ModelShape | None:
        """The shape of a hub model from the built-in table (offline use), or None."""
        cfg = KNOWN_CONFIGS.get(hub_id.lower())
        return None if cfg is None else cls.from_config(cfg, name=hub_id)

    @classmethod
    def qwen3_4b(cls, name: str = DEFAULT_BASE_MODEL) -> ModelShape:
        return cls.from_config(KNOWN_CONFIGS["qwen/qwen3-4b"], name=name)

    @classmethod
    def guess(cls, name_or_path: str) -> ModelShape:
        """A local config.json if there is one, else the known-config table, else Qwen3-4B's shape (the default
        model; the planner must not reach a hub)."""
        p = Path(name_or_path)
        if (p / "config.json").is_file():
            return cls.from_path(p)
        return cls.known(name_or_path) or cls.qwen3_4b(name_or_path)

    # ---- derived sizes -----------------------------------------------------------------------------------

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of the 7 linear layers of one decoder layer."""
        h, q, kv, i = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        return self.num_layers * sum(a * b for a, b in self.linear_shapes().values())

    @property
    def num_params(self) -> int:
        # RMSNorms: 2 per layer (hidden) + Qwen3's q/k norms (head_dim each) + the final norm.
        norms = self.num_layers * (2 * self.hidden_size + 2 * self.head_dim) + self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.linear_params + norms + embeddings

    @property
    def billions(self) -> float:
        return self.num_params / 1e9

    def lora_params(self, rank: int, target: str = "all") -> int:
        """Trainable LoRA parameters for ``rank`` on the targeted linear layers (``all`` = the 7 per layer;
        unknown module names count as all, the cautious side)."""
        shapes = self.linear_shapes()
        names = set(shapes) if target.strip() in ("all", "") else {t.strip() for t in target.split(",")}
        per_layer = sum((a + b) * rank for n, (a, b) in shapes.items() if n in names)
        if per_layer == 0:
            per_layer = sum((a + b) * rank for a, b in shapes.values())
        return per_layer * self.num_layers


_QWEN3_4B = {
    "model_type": "qwen3",
    "hidden_size": 2560,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 9728,
    "vocab_size": 151_936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 262_144,
}
# Hub ids the planner and doctor may be asked about offline (values from each model's config.json).
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen/qwen3-4b-thinking-2507": _QWEN3_4B,
    "qwen/qwen3-4b-instruct-2507": _QWEN3_4B,
    "qwen/qwen3-4b": {**_QWEN3_4B, "max_position_embeddings": 40_960},
    "qwen/qwen3-4b-base": {**_QWEN3_4B, "max_position_embeddings": 32_768},
    "qwen/qwen3-0.6b": {
        **_QWEN3_4B,
        "hidden_size": 1024,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "intermediate_size": 3072,
        "max_position_embeddings": 40_960,
    },
    "qwen/qwen3-1.7b": {
        **_QWEN3_4B,
        "hidden_size": 2048,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "intermediate_size": 6144,
        "max_position_embeddings": 40_960,
    },
    "qwen/qwen3-8b": {
        **_QWEN3_4B,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "tie_word_embeddings": False,
        "max_position_embeddings": 40_960,
    },
}


# ---------------------------------------------------------------------------------------------------------
# The estimate


class TrainShape(BaseModel):
    """One training configuration, as far as memory is concerned."""

    model_config = ConfigDict(frozen=True)

    method: Method = "lora"
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    quant_bit: int | None = None  # qlora only: 4 or 8
    strategy: str = "single"
    world: int = 1
    lora_rank: int = 16
    lora_target: str = "all"
    micro_batch: int = 1
    seq: int = 2048
    gradient_checkpointing: bool = True
    liger: bool = False


class MemoryEstimate(BaseModel):
    """Per-GPU memory (GiB) of one configuration; ``per_sample`` is what one more sequence adds."""

    weights: float
    trainable_state: float
    activations: float
    total: float
    per_sample: float
    trainable_params: int = Field(exclude=True)

    def as_dict(self) -> dict[str, float]:
        return {
            "weights": self.weights,
            "trainable_state": self.trainable_state,
            "activations": self.activations,
            "total": self.total,
        }


def trainable_params(m: ModelShape, t: TrainShape) -> int:
    if t.method in ("lora", "qlora"):
        return m.lora_params(t.lora_rank, t.lora_target)
    if t.method == "freeze":
        return m.num_params // max(1, m.num_layers) * 2  # LLaMA Factory trains the last layers: rough
    return m.num_params


def weight_bytes(m: ModelShape, t: TrainShape) -> float:
    if t.method == "qlora":
        per_linear = QLORA_NF4_BYTES if (t.quant_bit or 4) == 4 else INT8_BYTES
        return per_linear * m.linear_params + 2.0 * (m.num_params - m.linear_params)
    full_bytes = 4.0 if t.precision == "fp32" else 2.0
    return full_bytes * m.num_params


def activation_bytes_per_token(m: ModelShape, t: TrainShape) -> float:
    lh = m.num_layers * m.hidden_size
    if t.gradient_checkpointing:
        b = (
            GC_BYTES_PER_LAYER_HIDDEN * lh + ACT_BYTES_PER_LAYER_HIDDEN * m.hidden_size
        )  # + one recomputed layer
    else:
        b = ACT_BYTES_PER_LAYER_HIDDEN * lh
    if t.precision == "fp32":
        b *= 2
    return b + (0.0 if t.liger else LOGITS_BYTES_PER_VOCAB * m.vocab_size)


def estimate(m: ModelShape, t: TrainShape) -> MemoryEstimate:
    """Per-GPU memory estimate of ``t`` for model ``m`` (see the module docstring for every term)."""
    n_train = trainable_params(m, t)
    weights = weight_bytes(m, t)
    state = n_train * TRAINABLE_STATE_BYTES
    if t.strategy in ("zero3", "fsdp"):
        weights /= t.world
        state /= t.world
    elif t.strategy == "zero2":
        state /= t.world
    elif t.strategy == "zero3_offload":
        weights = weights / t.world * 0.1  # parameters live on the CPU; a few layers are gathered at a time
        state = 0.0
    per_sample = activation_bytes_per_token(m, t) * t.seq
    act = per_sample * t.micro_batch
    total = weights + state + act
    return MemoryEstimate(
        weights=round(weights / GiB, 2),
        trainable_state=round(state / GiB, 2),
        activations=round(act / GiB, 2),
        total=round(total / GiB, 2),
        per_sample=round(per_sample / GiB, 3),
        trainable_params=n_train,
    )


def usable_gib(gpu_total_gib: float) -> float:
    """What the planner may fill on a card of ``gpu_total_gib`` (see the module docstring)."""
    return max(0.0, gpu_total_gib * USABLE_FRACTION - RESERVED_GIB)


def budget_usable_gib(budget_gib: float) -> float:
    """What the planner may fill under ``spec.training.memoryBudgetGiB``. The worker caps PyTorch's allocator at the
    budget (reserved memory, fragmentation included) while the estimate is of allocated memory, so the plan keeps
    the card's margin for fragmentation (``USABLE_FRACTION``); the CUDA context is outside the cap."""
    return budget_gib * USABLE_FRACTION


def max_micro_batch(m: ModelShape, t: TrainShape, budget_gib: float) -> int:
    """The largest micro-batch of ``t`` that fits ``budget_gib`` (0 = not even one sample)."""
    base = estimate(m, t.model_copy(update={"micro_batch": 0}))
    if base.per_sample <= 0 or base.total + base.per_sample > budget_gib:
        return 0
    return int((budget_gib - base.total) // base.per_sample)


def host_ram_for_offload_gib(m: ModelShape, t: TrainShape) -> float:
    """CPU RAM ZeRO-3 offload keeps per node: bf16 parameters + fp32 optimizer state of the trainable ones."""
    return (m.num_params * 2 + trainable_params(m, t) * TRAINABLE_STATE_BYTES) / GiB
