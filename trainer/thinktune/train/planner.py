"""The training planner: FineTuneJob spec + hardware + model + world -> resolved LLaMA Factory arguments.

``plan()`` is a pure function (no I/O, no torch): the same inputs always give the same ``Plan``. It reads as an
ordered list of decisions (``decide_device``, ``decide_precision``, ``decide_method``, ``decide_lora``,
``decide_cutoff``, ``decide_liger``, ``decide_labelled_logits``, ``decide_per_rank_batch``, ``decide_strategy``, ``decide_memory_fallback``,
``decide_micro_batch``, ``decide_checkpointing``, ``decide_accumulation``, ``decide_steps``); each returns a
``Decision``: its value, one human sentence per choice, and warnings (bad or risky inputs, with a suggestion).
Later steps read the earlier values from the ``Planning`` they share; nothing else is mutable.

Memory comes from ``thinktune.train.memory`` (the same model ``thinktune doctor`` uses); the DeepSpeed / FSDP /
Megatron configs from ``thinktune.train.strategies``.

Speed: Liger without checkpointing is fastest when it fits (20.2k tok/s at 8x2048 vs 14.3k with GC,
/work/shared/notes/measured-anchors.md), and micro-batch 4 without GC (20.4k) beats micro-batch 8 with GC (15.3k),
but micro-batch 2 without GC (13.2k) does not (bench/results/gpu-train-2026-12-07d-h100-budgets-2048.json); so the
planner drops checkpointing whenever a micro-batch of at least ``MIN_TOKENS_WITHOUT_CHECKPOINTING`` tokens (or the
whole per-device batch) fits without it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from thinktune.contract import PlanSummary
from thinktune.hardware import HardwareInfo
from thinktune.spec import FineTuneJobSpec
from thinktune.train import cache, strategies
from thinktune.train.memory import (
    MemoryEstimate,
    ModelShape,
    TrainShape,
    budget_usable_gib,
    estimate,
    host_ram_for_offload_gib,
    usable_gib,
)

MICRO_BATCH_CANDIDATES = (64, 32, 16, 8, 4, 2, 1)
MAX_AUTO_MICRO_BATCH = 16
# Checkpointing off pays only when the micro-batch that fits without it still carries enough tokens to keep the
# GPU busy. One H100, Qwen3-4B, 2,034-token rows (bench/results/gpu-train-2026-12-07d-h100-*.json): micro-batch 4
# without checkpointing 20,414 tokens/s, micro-batch 8 with it 15,296, micro-batch 2 without it 13,230; 16 with it
# 16,353 (gpu-train-2026-12-08-h100-2048.json). The line sits between the 2-row loser (4,068 tokens) and the 4-row
# winner (8,136): at 8,192 real rows of 2,034 tokens fell short of it and a 48 GiB budget got 16 rows with
# checkpointing instead of 4 without.
MIN_TOKENS_WITHOUT_CHECKPOINTING = 6144
# The trainer image has these; mcore_adapter (Megatron) is not part of it.
TRAINER_IMAGE_PACKAGES = {
    "deepspeed": True,
    "liger_kernel": True,
    "bitsandbytes": True,
    "mcore_adapter": False,
}

StrategyName = Literal["single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp", "megatron"]
T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------
# Inputs


class WorldInfo(BaseModel):
    """Processes of this job: NNODES x NPROC_PER_NODE, as torchrun sees them (set by the operator)."""

    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(
        cls, spec: FineTuneJobSpec | None = None, gpus_per_node: int = 0, env: Mapping[str, str] | None = None
    ) -> WorldInfo:
        """NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT/NPROC_PER_NODE from ``env``; missing values from the spec
        (numNodes, numProcPerNode: auto = one per GPU, or 1 on CPU)."""
        env = os.environ if env is None else env
        nnodes = int(env.get("NNODES") or (spec.num_nodes if spec else 1))
        if env.get("NPROC_PER_NODE"):
            nproc = int(env["NPROC_PER_NODE"])
        elif spec is not None and spec.num_proc_per_node != "auto":
            nproc = int(spec.num_proc_per_node)
        else:
            nproc = max(1, gpus_per_node)
        port = env.get("MASTER_PORT")
        return cls(
            nnodes=nnodes,
            nproc_per_node=nproc,
            node_rank=int(env.get("NODE_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(port) if port else None,
        )


class DatasetFacts(BaseModel):
    """What the planner needs to know about the LLaMA Factory dataset directory."""

    dir: str | None = Field(default=None, description="dataset_dir (default: the spec's dataset.path)")
    name: str = "thinktune"  # dataset_info.json holds NAME_train (and NAME_val)
    size: int | None = None  # training samples, when known: sets total steps and intervals
    has_val: bool = True
    longest_sample: int | None = None  # tokens of the longest train/val sample (thinktune/train/lengths.py)
    total_tokens: int | None = None  # tokens of all train/val samples, what LLaMA Factory tokenizes
    # dataset + tokenizer + LLaMA Factory version (thinktune/train/cache.py input_fingerprint): keys the tokenized cache
    fingerprint: str | None = None


# ----------------------------------------------------------------------------------------------------------
# Output


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: dict[str, Any] = Field(description="Resolved LLaMA Factory arguments (run_exp(args=...)).")
    explanations: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    files: dict[str, Any] = Field(
        default_factory=dict,
        description="name -> content (dict: JSON, str: text) of configs to write into output_dir/plan/.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment for the worker (e.g. USE_MCA)."
    )
    strategy: str
    device: Literal["cpu", "cuda"]
    precision: Literal["bf16", "fp16", "fp32"]
    method: Literal["lora", "qlora", "full", "freeze"]
    world_size: int
    nnodes: int = 1
    nproc_per_node: int = 1
    micro_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int = Field(description="micro x accum x world: what will actually be used.")
    requested_global_batch_size: int
    gradient_checkpointing: bool
    liger_kernel: bool
    labelled_logits: bool = Field(
        default=False, description="Training computes logits only where a label is scored (same loss)."
    )
    lora_rank: int | None = None
    lora_alpha: int | None = None
    learning_rate: float
    cutoff_len: int
    total_steps: int | None = None
    memory_estimate_gib: dict[str, float] = Field(default_factory=dict)
    memory_budget_gib: float = Field(description="Usable memory per GPU (per process in RAM on CPU).")
    fits: bool = Field(description="The estimate is within the budget: no CUDA OOM expected.")

    def summary(self) -> PlanSummary:
        """The decisions for FineTuneJobStatus.plan (the contract's PlanSummary)."""
        return PlanSummary(
            strategy=self.strategy,
            device=self.device,
            precision=self.precision,
            method=self.method,
            world_size=self.world_size,
            nnodes=self.nnodes,
            nproc_per_node=self.nproc_per_node,
            micro_batch_size=self.micro_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            global_batch_size=self.global_batch_size,
            gradient_checkpointing=self.gradient_checkpointing,
            liger_kernel=self.liger_kernel,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            learning_rate=self.learning_rate,
            cutoff_len=self.cutoff_len,
            total_steps=self.total_steps,
            memory_estimate_gib=self.memory_estimate_gib.get("total"),
        )


@dataclass(frozen=True)
class Decision(Generic[T]):
    """One step's answer: the value, why (one sentence each), and what is bad or risky about the inputs."""

    value: T
    explanations: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass
class Planning:
    """The inputs of ``plan()`` and the values decided so far (each ``decide_*`` reads only earlier ones)."""

    spec: FineTuneJobSpec
    hw: HardwareInfo
    model: ModelShape
    world: WorldInfo
    packages: dict[str, bool]
    explanations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    precision: str = "fp32"
    method: str = "lora"
    quant_bit: int | None = None
    lora_rank: int = 16
    lora_alpha: int = 32
    cutoff: int = 2048
    longest_sample: int | None = None
    liger: bool = False
    per_rank: int = 1
    strategy: str = "single"
    micro_batch: int = 1
    gc: bool = False
    learning_rate: float = 1e-4

    def take(self, d: Decision[T]) -> T:
        self.explanations.extend(d.explanations)
        self.warnings.extend(d.warnings)
        return d.value

    @property
    def on_gpu(self) -> bool:
        return self.hw.cuda_available and bool(self.hw.gpus)

    @property
    def usable(self) -> float:
        if self.on_gpu:
            card = usable_gib(self.hw.min_gpu_total_gib)
            budget = self.spec.training.memory_budget_gib
            return min(card, budget_usable_gib(budget)) if budget else card
        return max(1.0, self.hw.ram_total_gib * 0.8 / max(1, self.world.nproc_per_node))

    @property
    def row_tokens(self) -> int:
        """Tokens of the longest row a micro-batch holds: LLaMA Factory pads each batch to its longest sample, so
        with the dataset's lengths known that sample bounds memory, not cutoffLen (packing fills rows to cutoffLen).
        bench/results/gpu-train-2026-12-01.json: sized by cutoff 4096, rows of 182-501 tokens ran at 1-5 % MFU."""
        if self.longest_sample and not self.spec.training.packing:
            return min(self.cutoff, self.longest_sample)
        return self.cutoff

    def shape(
        self, strategy: str | None = None, mb: int = 1, gc: bool = True, method: str | None = None
    ) -> TrainShape:
        m = method or self.method
        return TrainShape(
            method=m,
            precision=self.precision,
            quant_bit=self.quant_bit if m == "qlora" else None,
            strategy=strategy or self.strategy,
            world=self.world.world_size,
            lora_rank=self.lora_rank,
            lora_target=self.spec.finetuning.lora.target,
            micro_batch=mb,
            seq=self.row_tokens,
            gradient_checkpointing=gc,
            liger=self.liger,
        )

    def mem(
        self, strategy: str | None = None, mb: int = 1, gc: bool = True, method: str | None = None
    ) -> MemoryEstimate:
        return estimate(self.model, self.shape(strategy, mb, gc, method))

    def fits(
        self, strategy: str | None = None, mb: int = 1, gc: bool = True, method: str | None = None
    ) -> bool:
        return self.mem(strategy, mb, gc, method).total <= self.usable


# ----------------------------------------------------------------------------------------------------------
# The decisions, in the order plan() takes them


def decide_device(c: Planning) -> Decision[str]:
    """cuda when GPUs are visible; notes on processes vs GPUs and on GPUs another process already uses."""
    hw, nproc, warn, expl = c.hw, c.world.nproc_per_node, [], []
    n_gpus = hw.gpu_count
    if c.on_gpu and nproc > n_gpus:
        warn.append(
            f"{nproc} processes per node but only {n_gpus} GPU(s) visible: processes would share "
            f"GPUs. Suggestion: NPROC_PER_NODE={n_gpus}."
        )
    if c.on_gpu and nproc < n_gpus:
        expl.append(f"Using {nproc} of the {n_gpus} visible GPUs per node (NPROC_PER_NODE).")
    busy = next((g for g in hw.gpus if g.total_gib and g.free_gib < 0.8 * g.total_gib), None)
    if busy is not None:
        warn.append(
            f"{busy.name}: only {busy.free_gib:.0f} of {busy.total_gib:.0f} GiB free (another process uses the "
            "GPU); the plan assumes the whole card. Suggestion: a dedicated GPU."
        )
    expl.append(
        f"Hardware: {n_gpus}x {hw.gpus[0].name} ({hw.min_gpu_total_gib:.0f} GiB)"
        if c.on_gpu
        else f"Hardware: CPU only ({hw.cpu_count} cores, {hw.ram_total_gib:.0f} GiB RAM)"
    )
    expl.append(
        f"World: {c.world.nnodes} node(s) x {nproc} process(es) = {c.world.world_size}"
        + (f"; NVLink: {'yes' if hw.nvlink_everywhere else 'no'}" if n_gpus > 1 else "")
    )
    m = c.model
    expl.append(
        f"Model: {m.name or 'model'} ({m.billions:.2f} B parameters, {m.num_layers} layers, hidden "
        f"{m.hidden_size}, vocab {m.vocab_size})."
    )
    return Decision("cuda" if c.on_gpu else "cpu", tuple(expl), tuple(warn))


def decide_precision(c: Planning) -> Decision[str]:
    requested = c.spec.training.precision
    all_bf16 = c.on_gpu and c.hw.all_bf16
    if requested == "auto":
        precision = "fp32" if not c.on_gpu else "bf16" if all_bf16 else "fp16"
        why = (
            "CPU training runs in fp32."
            if not c.on_gpu
            else "every GPU supports bf16."
            if all_bf16
            else "a GPU lacks bf16 (compute capability < 8.0)."
        )
        return Decision(precision, (f"Precision {precision}: {why}",))
    warn: list[str] = []
    precision = requested
    if c.on_gpu and precision == "bf16" and not all_bf16:
        warn.append(
            "precision bf16 was requested but a GPU lacks bf16 support (needs compute capability "
            ">= 8.0); using fp16. Suggestion: precision auto."
        )
        precision = "fp16"
    elif not c.on_gpu and precision == "fp16":
        warn.append(
            "precision fp16 on CPU is not supported by the HF Trainer; using fp32. Suggestion: precision auto."
        )
        precision = "fp32"
    elif not c.on_gpu and precision == "bf16":
        warn.append("bf16 on CPU works but is slow on most CPUs; fp32 is the usual choice here.")
    return Decision(precision, (f"Precision {precision} (requested).",), tuple(warn))


def decide_method(c: Planning) -> Decision[tuple[str, int | None]]:
    """(method, quantization bits); QLoRA needs bitsandbytes on a GPU. Memory may still switch LoRA to QLoRA
    (``decide_memory_fallback``)."""
    ft = c.spec.finetuning
    method, quant_bit = ft.method, ft.quantization_bit or (4 if ft.method == "qlora" else None)
    if method == "qlora" and not c.on_gpu:
        return Decision(
            ("lora", None),
            warnings=(
                "qlora needs a CUDA GPU (bitsandbytes); on CPU the base stays unquantized (plain LoRA). "
                "Suggestion: method lora for CPU runs.",
            ),
        )
    return Decision((method, quant_bit))


def default_lora_rank(m: ModelShape, total_gpus: int) -> int:
    b = m.billions
    rank = 8 if b < 1 else 16 if b < 10 else 32 if b < 40 else 64
    if total_gpus >= 8 and b >= 1:
        rank = min(64, rank * 2)  # more GPUs = bigger global batches and more data per hour: afford capacity
    return rank


def decide_lora(c: Planning) -> Decision[tuple[int, int]]:
    """(rank, alpha): by model size and GPU count unless requested."""
    lora, m = c.spec.finetuning.lora, c.model
    total_gpus = c.world.world_size if c.on_gpu else 0
    rank = lora.rank or default_lora_rank(m, total_gpus)
    alpha = lora.alpha or 2 * rank
    if c.method not in ("lora", "qlora"):
        return Decision((rank, alpha))
    expl = [
        f"LoRA rank {rank} (requested)."
        if lora.rank
        else f"LoRA rank {rank}: chosen for a {m.billions:.1f} B model on {max(total_gpus, 1)} "
        f"{'GPU' if c.on_gpu else 'process'}(s) (<1B: 8, 1-10B: 16, 10-40B: 32, else 64; x2 from 8 GPUs).",
        f"LoRA alpha {alpha}{' (requested)' if lora.alpha else ' (2 x rank)'}, dropout {lora.dropout}, targets "
        f"'{lora.target}' ({m.lora_params(rank, lora.target):,} trainable parameters).",
    ]
    return Decision((rank, alpha), tuple(expl))


def decide_learning_rate(c: Planning) -> Decision[float]:
    """Peak learning rate by method and model size unless requested. LoRA's 1e-4 is LLaMA Factory's example
    value for 1-10 B models; the tiny models of make-tiny-model (a few million parameters, warm-started) need
    two orders more to move in a CPU demo's few dozen steps, and the same CR must stay right for both."""
    requested = c.spec.training.learning_rate
    if requested is not None:
        return Decision(requested, (f"Learning rate {requested:g} (requested).",))
    b = c.model.billions
    if c.method in ("lora", "qlora"):
        lr, why = (
            (1e-2, "<0.1 B: a test model") if b < 0.1 else (1e-4, "0.1-30 B") if b < 30 else (5e-5, ">=30 B")
        )
    else:
        lr, why = (1e-3, "<0.1 B: a test model") if b < 0.1 else (1e-5, "full/freeze fine-tuning")
    return Decision(lr, (f"Learning rate {lr:g}: {c.method} on a {b:.2f} B model ({why}).",))


def decide_cutoff(c: Planning) -> Decision[int]:
    cutoff, ctx = c.spec.training.cutoff_len, c.model.max_position_embeddings
    explicit = "cutoff_len" in c.spec.training.model_fields_set
    if not explicit and c.longest_sample:
        # unset: as long as the longest sample, rounded up to 256 (shorter sequences, larger micro-batches)
        cutoff = max(256, -(-c.longest_sample // 256) * 256)
        source = f"the longest training sample ({c.longest_sample} tokens) rounded up to 256"
    else:
        source = "spec.training.cutoffLen" if explicit else "the default"
    warn = ()
    if cutoff > ctx:
        warn = (f"cutoffLen {cutoff} exceeds the model's context ({ctx}); using {ctx}.",)
        cutoff = ctx
    expl = (
        f"cutoff_len {cutoff} ({source}): every train/val sample is counted against it before training and "
        "a longer one fails the job or is dropped (overlongSamples), never truncated.",
    )
    return Decision(cutoff, expl, warn)


def decide_liger(c: Planning) -> Decision[bool]:
    requested = c.spec.training.liger_kernel
    if requested == "off":
        return Decision(False, ("Liger kernels off (requested).",))
    if not c.on_gpu:
        if requested == "on":
            return Decision(False, warnings=("ligerKernel on needs CUDA (Triton kernels); disabled on CPU.",))
        return Decision(False, ("Liger kernels off: they need CUDA.",))
    if not c.packages["liger_kernel"]:
        if requested == "on":
            return Decision(
                False, warnings=("Liger kernels unavailable (liger-kernel not installed); disabled.",)
            )
        return Decision(False, ("Liger kernels unavailable (liger-kernel not installed): off.",))
    return Decision(
        True,
        (
            "Liger kernels on (fused RoPE/RMSNorm/SwiGLU and fused linear cross-entropy: measured "
            "+16-40% tokens/s and far less logits memory at vocab 151,936).",
        ),
    )


# LLaMA Factory arguments under which something reads the training logits at every position (a loss of its own
# or label smoothing): logits at labelled positions only would hand them a shorter tensor
LOGIT_READING_ARGS = ("label_smoothing_factor", "use_dft_loss", "use_eaft_loss", "use_asft_loss")


def decide_labelled_logits(c: Planning) -> Decision[bool]:
    """The [tokens x 151,936] logits are most of a step for a small model (profiled on the CPU demo: ~85 %), and
    a row whose label is masked (system/user prompt, padding: 39 % of the demo's rows) only costs. With the
    fused Liger loss no full logits exist anyway."""
    if c.liger:
        return Decision(False)
    reading = [k for k in LOGIT_READING_ARGS if c.spec.training.extra_args.get(k)]
    if reading:
        return Decision(
            False, (f"Logits at every position: extraArgs {', '.join(reading)} read them in the loss.",)
        )
    return Decision(
        True,
        (
            "Logits only at labelled positions in training (prompt and padding rows skipped; same loss): "
            "thinktune/train/worker_callbacks.py LabelledLogits.",
        ),
    )


def decide_per_rank_batch(c: Planning) -> Decision[int]:
    g, ws = c.spec.training.global_batch_size, c.world.world_size
    if g % ws == 0:
        return Decision(g // ws)
    per_rank = max(1, round(g / ws))
    return Decision(
        per_rank,
        warnings=(
            f"globalBatchSize {g} is not divisible by the world size {ws}; using {per_rank} per "
            f"process = {per_rank * ws} globally. Suggestion: a multiple of {ws}.",
        ),
    )


def decide_strategy(c: Planning) -> Decision[str]:
    requested = c.spec.finetuning.strategy
    if requested == "auto":
        return _auto_strategy(c)
    d = _check_forced_strategy(c, requested)
    return Decision(d.value, (f"Strategy {requested} (requested).", *d.explanations), d.warnings)


def _auto_strategy(c: Planning) -> Decision[str]:
    ws, method = c.world.world_size, c.method
    if ws == 1:
        return Decision(
            "single", ("Strategy single: one process" + (" on one GPU." if c.on_gpu else " on the CPU."),)
        )
    if not c.on_gpu:
        return Decision(
            "ddp", (f"Strategy ddp over gloo: {ws} CPU processes (DeepSpeed and FSDP need GPUs).",)
        )
    slow_links = not c.hw.nvlink_everywhere or c.world.nnodes > 1
    deepspeed = c.packages["deepspeed"]
    if method in ("lora", "qlora"):
        no_megatron = (
            "Megatron (tensor/pipeline parallel) not considered: LLaMA Factory 0.9.5's Megatron path "
            "(USE_MCA) supports full fine-tuning only; LoRA runs use DDP, ZeRO or FSDP."
        )
        if c.fits("ddp"):
            why = (
                "Strategy ddp: the base model and LoRA state fit on every GPU, so replicating them is the "
                "fastest (only the small LoRA gradients are all-reduced)."
            )
            return Decision("ddp", (no_megatron, why))
        if method == "qlora":
            why = (
                "Strategy fsdp: a 4-bit base does not fit per GPU; FSDP shards it (ZeRO-3 cannot shard "
                "bnb-quantized weights in LLaMA Factory)."
            )
            return Decision("fsdp", (no_megatron, why))
        if deepspeed and c.fits("zero3"):
            return Decision(
                "zero3",
                (
                    no_megatron,
                    "Strategy zero3: the base model does not fit per GPU; ZeRO-3 shards the parameters.",
                ),
            )
        if deepspeed:
            why = (
                "Strategy zero3_offload: even sharded, the model does not fit; parameters and optimizer "
                "state go to CPU RAM."
            )
            return Decision("zero3_offload", (no_megatron, why))
        return Decision(
            "fsdp",
            (no_megatron, "Strategy fsdp: the model does not fit per GPU and DeepSpeed is not installed."),
        )
    # full / freeze fine-tuning
    if c.fits("ddp"):
        return Decision("ddp", ("Strategy ddp: full training state fits on each GPU.",))
    if not deepspeed:
        return Decision(
            "fsdp", ("Strategy fsdp: full training state does not fit per GPU (DeepSpeed not installed).",)
        )
    if c.fits("zero2") and (slow_links or not c.fits("zero3", 2, False)):
        why = (
            "Strategy zero2: sharding optimizer state and gradients is enough, and ZeRO-2 communicates "
            "less than ZeRO-3" + (" (no NVLink / several nodes)." if slow_links else ".")
        )
        return Decision("zero2", (why,))
    if c.fits("zero3"):
        return Decision(
            "zero3", (f"Strategy zero3: parameters, gradients and optimizer state sharded across {ws} GPUs.",)
        )
    return Decision(
        "zero3_offload",
        (
            "Strategy zero3_offload: even fully sharded, the state does not fit; offloading to CPU RAM.",
            "Megatron not chosen: LLaMA Factory 0.9.5's Megatron path (USE_MCA) needs mcore_adapter, which the "
            f"default image lacks; force it with strategy megatron for very large full fine-tunes "
            f"({c.model.billions:.0f} B).",
        ),
    )


def _check_forced_strategy(c: Planning, strategy: str) -> Decision[str]:
    """A requested strategy is kept (except GPU-only ones on CPU), with a warning for each known problem."""
    ws, method = c.world.world_size, c.method
    if not c.on_gpu and strategy in ("zero2", "zero3", "zero3_offload", "fsdp", "megatron"):
        fallback = "ddp" if ws > 1 else "single"
        return Decision(
            fallback,
            warnings=(
                f"strategy {strategy} needs CUDA GPUs (DeepSpeed/FSDP/Megatron use NCCL); this is a CPU run, so "
                f"using {fallback} (gloo). Suggestion: strategy auto on CPU.",
            ),
        )
    slow_links = not c.hw.nvlink_everywhere or c.world.nnodes > 1
    checks = [
        (
            strategy == "single" and ws > 1,
            f"strategy single with {ws} processes: only one process can train; set NPROC_PER_NODE=1. "
            "Suggestion: ddp to use every GPU.",
        ),
        (strategy == "ddp" and ws == 1, "strategy ddp with one process is the same as single."),
        (
            strategy in ("zero3", "zero3_offload", "fsdp", "zero2") and ws == 1,
            f"strategy {strategy} on 1 GPU: there is nothing to shard across, so it only adds communication and "
            "gather overhead. Suggestion: "
            + ("single" if c.fits("single") else "zero3_offload (memory is short) or qlora")
            + ".",
        ),
        (
            strategy in ("zero2", "zero3", "zero3_offload") and not c.packages["deepspeed"],
            f"strategy {strategy} needs DeepSpeed, which is not installed here (it is in the trainer "
            "image). Suggestion: fsdp or run in the trainer image.",
        ),
        (
            strategy in ("zero3", "zero3_offload") and method == "qlora",
            "qlora + ZeRO-3: LLaMA Factory cannot shard bnb-quantized weights with ZeRO-3. Suggestion: "
            "strategy fsdp (FSDP+QLoRA, #5595) or ddp.",
        ),
        (
            strategy == "zero3" and ws > 1 and slow_links and method in ("lora", "qlora") and c.fits("ddp"),
            "zero3 without NVLink / across nodes gathers every layer's weights over slow links each step, "
            "although the model fits per GPU. Suggestion: ddp (LoRA all-reduces only the adapter).",
        ),
        (
            strategy == "ddp" and ws > 1 and not c.fits("ddp"),
            "strategy ddp replicates the whole model per GPU, which is estimated not to fit. Suggestion: "
            + ("fsdp." if method == "qlora" else "zero3 (or zero3_offload)."),
        ),
        (
            strategy == "megatron" and method != "full",
            "Megatron in LLaMA Factory 0.9.5 supports full fine-tuning only. Suggestion: zero3 or ddp.",
        ),
        (
            strategy == "zero2" and method in ("lora", "qlora"),
            "zero2 with LoRA shards only the tiny adapter state; it saves almost nothing over ddp.",
        ),
    ]
    return Decision(strategy, warnings=tuple(w for bad, w in checks if bad))


def decide_memory_fallback(c: Planning) -> Decision[tuple[str, int | None, str]]:
    """(method, quant_bit, strategy): when bf16 LoRA does not fit even at micro-batch 1 with checkpointing, a
    4-bit base (QLoRA) where the strategy allows it, else ZeRO-3 offload."""
    keep = (c.method, c.quant_bit, c.strategy)
    if not c.on_gpu or c.method != "lora" or c.fits():
        return Decision(keep)
    if c.packages["bitsandbytes"] and c.strategy not in ("zero3", "zero3_offload", "megatron"):
        return Decision(
            ("qlora", 4, c.strategy),
            (
                f"QLoRA (4-bit nf4 base): bf16 LoRA needs ~{c.mem(method='lora').total:.0f} GiB per GPU at "
                f"micro-batch 1 with checkpointing, more than the ~{c.usable:.0f} GiB usable.",
            ),
            (
                "Memory is short for bf16 LoRA; switched to QLoRA (4-bit). Expect ~1-2% lower quality "
                "and slower steps; more or bigger GPUs avoid it.",
            ),
        )
    if c.strategy == "zero3" and c.packages["deepspeed"] and c.fits("zero3_offload"):
        return Decision(
            (c.method, c.quant_bit, "zero3_offload"),
            ("ZeRO-3 with CPU offload: parameters and optimizer state do not fit on the GPUs.",),
        )
    if c.strategy in ("zero3", "zero3_offload"):
        return Decision(
            keep,
            warnings=(
                "The model does not fit even with ZeRO-3 at micro-batch 1; QLoRA cannot be combined "
                "with ZeRO-3. Suggestion: strategy fsdp with method qlora, or more GPUs.",
            ),
        )
    return Decision(keep)


def _divisors_desc(n: int) -> list[int]:
    return sorted(
        {d for i in range(1, int(math.isqrt(n)) + 1) if n % i == 0 for d in (i, n // i)}, reverse=True
    )


def _auto_micro_batches(c: Planning) -> list[int]:
    """The micro-batches the planner picks from, largest first: divisors of the per-process batch up to
    ``MAX_AUTO_MICRO_BATCH``."""
    return [d for d in _divisors_desc(c.per_rank) if d <= MAX_AUTO_MICRO_BATCH] or [1]


def _largest_fitting(c: Planning, gc: bool) -> int | None:
    """The largest of ``_auto_micro_batches`` that fits with (``gc``) or without checkpointing, or None."""
    return next((d for d in _auto_micro_batches(c) if c.fits(mb=d, gc=gc)), None)


def decide_micro_batch(c: Planning) -> Decision[tuple[int, bool]]:
    """(micro-batch, gradient checkpointing), chosen together: the largest divisor of the per-process batch that
    fits without checkpointing, unless it is too small to keep the GPU busy (fewer than
    ``MIN_TOKENS_WITHOUT_CHECKPOINTING`` tokens, and not the whole per-process batch) and a larger one fits with
    checkpointing."""
    t = c.spec.training
    gc_req, per_rank = t.gradient_checkpointing, c.per_rank
    if t.micro_batch_size:
        mb = min(t.micro_batch_size, per_rank) if per_rank >= 1 else 1
        warn = []
        if t.micro_batch_size > per_rank:
            warn.append(
                f"microBatchSize {t.micro_batch_size} exceeds the per-process batch {per_rank}; using {mb}."
            )
        gc = (not c.fits(mb=mb, gc=False) if c.on_gpu else False) if gc_req == "auto" else gc_req == "on"
        if c.on_gpu and not c.fits(mb=mb, gc=gc):
            warn.append(
                f"microBatchSize {mb} is estimated to need {c.mem(mb=mb, gc=gc).total:.0f} GiB per GPU "
                f"(~{c.usable:.0f} usable): expect CUDA OOM (the OOM retry halves it). Suggestion: leave "
                "microBatchSize unset."
            )
        return Decision((mb, gc), (f"Micro-batch {mb} (requested).",), tuple(warn))
    if not c.on_gpu:
        # CPU: small steps keep the console responsive (candidates are largest first)
        mb = next((d for d in _auto_micro_batches(c) if d <= 4), 1)
        return Decision((mb, gc_req == "on"), (f"Micro-batch {mb}: CPU run.",))
    plain = _largest_fitting(c, gc=False) if gc_req != "on" else None
    recomputed = _largest_fitting(c, gc=True) if gc_req != "off" else None
    chosen = None
    if plain is not None and (
        gc_req == "off"
        or recomputed is None
        or recomputed <= plain
        or plain == per_rank
        or plain * c.row_tokens >= MIN_TOKENS_WITHOUT_CHECKPOINTING
    ):
        chosen = (plain, False)
    elif recomputed is not None:
        chosen = (recomputed, True)
    warn = []
    if chosen is None:
        chosen = (1, gc_req != "off")
        warn.append(
            f"Even micro-batch 1 is estimated at {c.mem(mb=1, gc=chosen[1]).total:.0f} GiB per "
            f"GPU (~{c.usable:.0f} usable): expect CUDA OOM. Suggestion: shorter cutoffLen, QLoRA, "
            "ZeRO-3 offload or more GPUs."
        )
    mb, gc = chosen
    est = c.mem(mb=mb, gc=gc)
    expl = (
        f"Micro-batch {mb} x {c.cutoff} tokens: ~{est.total:.0f} GiB per GPU of ~{c.usable:.0f} usable "
        f"(weights {est.weights:.1f}, trainable state {est.trainable_state:.1f}, activations {est.activations:.1f}).",
    )
    return Decision(chosen, expl, tuple(warn))


def decide_checkpointing(c: Planning) -> Decision[bool]:
    """Explains the checkpointing choice ``decide_micro_batch`` made with the micro-batch."""
    gc_req, gc = c.spec.training.gradient_checkpointing, c.gc
    if gc_req == "auto" and not c.on_gpu:
        return Decision(
            gc,
            ("Gradient checkpointing off: CPU run (memory is RAM; recomputation would only slow it down).",),
        )
    if gc_req == "auto":
        if gc:
            # decide_micro_batch's choice: a smaller micro-batch fitted without checkpointing, or none did
            plain = _largest_fitting(c, gc=False)
            # a requested microBatchSize was not traded for a smaller one: only its own fit decided
            if plain is None or plain >= c.micro_batch or c.spec.training.micro_batch_size:
                return Decision(gc, ("Gradient checkpointing on: activations without it would not fit.",))
            return Decision(
                gc,
                (
                    f"Gradient checkpointing on: without it only micro-batch {plain} x {c.row_tokens} tokens fits, "
                    f"too few to keep the GPU busy (under {MIN_TOKENS_WITHOUT_CHECKPOINTING}); micro-batch "
                    f"{c.micro_batch} with it is faster (measured on one H100: 2 x 2,048 without 13.2k tokens/s, "
                    "8 x 2,048 with 15.3k).",
                ),
            )
        return Decision(
            gc,
            (
                "Gradient checkpointing off: activations fit, and skipping the recompute is ~1.4x faster "
                "(measured: Liger without checkpointing 20.2k tok/s vs 14.3k with it at 8 x 2,048).",
            ),
        )
    warn = ()
    if gc_req == "off" and c.on_gpu and not c.fits(mb=c.micro_batch, gc=False):
        warn = (
            "gradientCheckpointing off but activations are estimated not to fit; the OOM retry will "
            "turn it on. Suggestion: gradientCheckpointing auto.",
        )
    return Decision(gc, (f"Gradient checkpointing {'on' if gc else 'off'} (requested).",), warn)


def decide_accumulation(c: Planning) -> Decision[int]:
    mb, ws, g = c.micro_batch, c.world.world_size, c.spec.training.global_batch_size
    accum = max(1, c.per_rank // mb)
    warn = ()
    if c.per_rank % mb:
        warn = (
            f"per-process batch {c.per_rank} is not a multiple of micro-batch {mb}: accumulating {accum} "
            f"steps gives {mb * accum * ws} samples per step instead of {g}.",
        )
    eff = mb * accum * ws
    expl = (
        f"Global batch {eff} = micro-batch {mb} x accumulation {accum} x {ws} process(es)"
        + ("" if eff == g else f" (requested {g}; cannot be exact)")
        + ".",
    )
    return Decision(accum, expl, warn)


def decide_steps(
    c: Planning, dataset_size: int | None, global_batch: int
) -> Decision[tuple[int | None, int, int]]:
    """(total steps, save interval, eval interval): ~10 checkpoints and evaluations per run unless set."""
    t = c.spec.training
    if t.max_steps:
        total: int | None = t.max_steps
    elif dataset_size:
        total = max(1, math.ceil(t.num_train_epochs * math.ceil(dataset_size / global_batch)))
    else:
        total = None
    save = t.save_steps or (max(1, total // 10) if total else 100)
    evals = t.eval_steps or (max(1, total // 10) if total else save)
    expl = (
        f"Steps: {total if total is not None else 'unknown'}"
        + (
            f" ({dataset_size} samples x {t.num_train_epochs:g} epochs / {global_batch})"
            if dataset_size and not t.max_steps
            else ""
        )
        + f"; checkpoint every {save}, evaluate every {evals} step(s) (bounds the work lost on a restart).",
    )
    return Decision((total, save, evals), expl)


# LLaMA Factory's tokenization ("Running tokenizer on dataset", datasets.map) in one process, per token, and what
# each extra worker costs: map(num_proc=N) pickles the function, which holds the tokenizer (15.6 MB for Qwen3),
# once per shard in the parent, and each worker loads it. Measured by bench/preprocess_workers.py
# (bench/results/preprocess_workers_cpu.json): 1.1-1.3 us per token in process; 160 rows x 2k tokens took 2.0 s in
# process, 6.4 s with 2 workers (~2.2 s per worker); on the H100 machine 16 workers took 50 s for the same rows
# (~3 s per worker, the figure used).
PREPROCESS_S_PER_TOKEN = 1.1e-6
PREPROCESS_S_PER_WORKER = 3.0
MAX_PREPROCESS_WORKERS = 16


def decide_preprocessing_workers(c: Planning, tokens: int | None) -> Decision[int | None]:
    """LLaMA Factory's ``preprocessing_num_workers``: None (in process) unless the dataset is large enough that
    splitting it pays for the workers. With s = the in-process time, N workers take ~N x 3 s + s / N, least at
    N = sqrt(s / 3 s); below 2 the pool only adds time. ``tokens``: all train/val tokens, None when not counted."""
    if tokens is None:
        return Decision(
            None,
            ("Dataset preprocessing in one process (the dataset's token count is unknown).",),
        )
    alone = tokens * PREPROCESS_S_PER_TOKEN
    cap = min(MAX_PREPROCESS_WORKERS, max(1, c.hw.cpu_count // max(1, c.world.nproc_per_node)))
    n = min(cap, int(math.sqrt(alone / PREPROCESS_S_PER_WORKER)))
    if n < 2:
        return Decision(
            None,
            (
                f"Dataset preprocessing in one process: {tokens:,} train/val tokens take ~{alone:.0f} s there; "
                f"each worker process would add ~{PREPROCESS_S_PER_WORKER:.0f} s (the tokenizer is pickled to it).",
            ),
        )
    est = n * PREPROCESS_S_PER_WORKER + alone / n
    return Decision(
        n,
        (
            f"Dataset preprocessing with {n} worker processes: {tokens:,} train/val tokens, ~{alone:.0f} s in one "
            f"process, ~{est:.0f} s with {n} (each adds ~{PREPROCESS_S_PER_WORKER:.0f} s; at most {cap} here).",
        ),
    )


# ----------------------------------------------------------------------------------------------------------
# The planner


def plan(
    spec: FineTuneJobSpec,
    hw: HardwareInfo,
    *,
    model: ModelShape,
    world: WorldInfo,
    dataset: DatasetFacts | None = None,
    model_path: str | None = None,
    output_dir: str | None = None,
    packages: Mapping[str, bool] | None = None,
) -> Plan:
    """Resolve a FineTuneJob into LLaMA Factory arguments. Pure: no I/O.

    ``hw`` describes one node, ``world`` the processes (nnodes x nproc_per_node). ``packages`` says which
    optional packages the trainer has (deepspeed, liger_kernel, bitsandbytes, mcore_adapter); ``None`` = the
    trainer image. Paths default to the spec's (``output.path``, ``dataset.path``, ``model.nameOrPath``).
    """
    c = Planning(
        spec,
        hw,
        model,
        world,
        {**TRAINER_IMAGE_PACKAGES, **{k: bool(v) for k, v in (packages or {}).items()}},
    )
    ds = dataset or DatasetFacts()
    c.longest_sample = ds.longest_sample
    device = c.take(decide_device(c))
    c.precision = c.take(decide_precision(c))
    c.method, c.quant_bit = c.take(decide_method(c))
    c.lora_rank, c.lora_alpha = c.take(decide_lora(c))
    c.learning_rate = c.take(decide_learning_rate(c))
    c.cutoff = c.take(decide_cutoff(c))
    c.liger = c.take(decide_liger(c))
    labelled_logits = c.take(decide_labelled_logits(c))
    c.per_rank = c.take(decide_per_rank_batch(c))
    c.strategy = c.take(decide_strategy(c))
    c.method, c.quant_bit, c.strategy = c.take(decide_memory_fallback(c))
    c.micro_batch, c.gc = c.take(decide_micro_batch(c))
    c.gc = c.take(decide_checkpointing(c))
    accum = c.take(decide_accumulation(c))
    total_steps, save_steps, eval_steps = c.take(
        decide_steps(c, ds.size, c.micro_batch * accum * world.world_size)
    )
    preprocess_workers = c.take(decide_preprocessing_workers(c, ds.total_tokens))

    out_dir = output_dir or spec.output.path
    args = _base_args(
        c,
        ds,
        model_path or spec.model.name_or_path,
        out_dir,
        accum,
        (total_steps, save_steps, eval_steps),
        preprocess_workers,
    )
    files, env = _strategy_setup(c, args, f"{out_dir.rstrip('/')}/plan")
    mb, accum, gc = _apply_extra_args(c, args, accum)
    _tokenized_cache(c, args, ds, out_dir)
    _check_offload_ram(c)
    files["plan_explanation.txt"] = "\n".join(c.explanations) + "\n"
    est = c.mem(mb=mb, gc=gc)
    lora = c.method in ("lora", "qlora")
    return Plan(
        args=args,
        explanations=c.explanations,
        warnings=c.warnings,
        files=files,
        env=env,
        strategy=c.strategy,
        device=device,
        precision=c.precision,
        method=c.method,
        world_size=world.world_size,
        nnodes=world.nnodes,
        nproc_per_node=world.nproc_per_node,
        micro_batch_size=mb,
        gradient_accumulation_steps=accum,
        global_batch_size=mb * accum * world.world_size,
        requested_global_batch_size=spec.training.global_batch_size,
        gradient_checkpointing=gc,
        liger_kernel=c.liger,
        labelled_logits=labelled_logits,
        lora_rank=c.lora_rank if lora else None,
        lora_alpha=c.lora_alpha if lora else None,
        learning_rate=c.learning_rate,
        cutoff_len=c.cutoff,
        total_steps=total_steps,
        memory_estimate_gib=est.as_dict() if c.on_gpu else {},
        memory_budget_gib=round(c.usable, 2),
        fits=est.total <= c.usable,
    )


def _base_args(
    c: Planning,
    ds: DatasetFacts,
    model_path: str,
    out_dir: str,
    accum: int,
    steps: tuple[int | None, int, int],
    preprocess_workers: int | None,
) -> dict[str, Any]:
    """The LLaMA Factory arguments every strategy shares."""
    t, ft, on_gpu = c.spec.training, c.spec.finetuning, c.on_gpu
    total_steps, save_steps, eval_steps = steps
    args: dict[str, Any] = {
        "model_name_or_path": model_path,
        "trust_remote_code": False,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora" if c.method in ("lora", "qlora") else c.method,
        "template": c.spec.template,
        "enable_thinking": c.spec.enable_thinking,
        "mask_history": t.mask_history,
        "dataset_dir": ds.dir or (c.spec.dataset.path if c.spec.dataset else ""),
        "dataset": f"{ds.name}_train",
        "cutoff_len": c.cutoff,
        "output_dir": out_dir,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": t.save_total_limit,
        "per_device_train_batch_size": c.micro_batch,
        "gradient_accumulation_steps": accum,
        "learning_rate": c.learning_rate,
        "num_train_epochs": t.num_train_epochs,
        "lr_scheduler_type": t.lr_scheduler_type,
        # transformers 5 deprecates warmup_ratio: give steps when the total is known
        **(
            {"warmup_steps": math.ceil(t.warmup_ratio * total_steps)}
            if total_steps
            else {"warmup_ratio": t.warmup_ratio}
        ),
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "seed": t.seed,
        "data_seed": t.seed,
        "report_to": "none",
        "disable_gradient_checkpointing": not c.gc,
        "ddp_timeout": 180000000,
        # thinktune counts the non-padding tokens itself (worker_callbacks.NonPaddingTokens, on the device, one sync
        # per log): the Trainer's own count ("non_padding") calls .item() on every micro-batch, a host-device sync
        # that stalls the kernel queue, and under packing it sums segment ids.
        "include_num_input_tokens_seen": "no",
        # the Trainer tests each micro-batch's loss for NaN/Inf in Python (a host-device sync per micro-batch; off:
        # +3.7 % tokens/s on an H100, bench/NOTES-gpu.md) and logs the running average in its place, hiding it;
        # off, a NaN loss reaches the log, where the anomaly detector reports it
        "logging_nan_inf_filter": False,
        "dataloader_num_workers": 2 if on_gpu else 0,
        # batches come from pinned memory (the Trainer's default): copied to the GPU without blocking, instead of
        # a host-device sync per tensor (3 per micro-batch in the H100 profile, bench/NOTES-gpu.md)
        **({"accelerator_config": {"non_blocking": True}} if on_gpu else {}),
        "preprocessing_num_workers": preprocess_workers,
        "plot_loss": False,
    }
    if t.max_steps:
        args["max_steps"] = t.max_steps
    if ds.has_val:
        args.update(
            {
                "eval_dataset": f"{ds.name}_val",
                "eval_strategy": "steps",
                "eval_steps": eval_steps,
                "per_device_eval_batch_size": c.micro_batch,
            }
        )
    else:
        c.warnings.append(
            f"No {ds.name}_val split in the dataset: no validation loss, character or term accuracy "
            "during training. Suggestion: split.val > 0 in the DatasetBuild."
        )
    if c.method in ("lora", "qlora"):
        args.update(
            {
                "lora_rank": c.lora_rank,
                "lora_alpha": c.lora_alpha,
                "lora_dropout": ft.lora.dropout,
                "lora_target": ft.lora.target,
            }
        )
    if c.method == "qlora":
        args.update(
            {
                "quantization_bit": c.quant_bit,
                "quantization_method": "bnb",
                "quantization_type": "nf4",
                "double_quantization": True,
                "upcast_layernorm": True,
            }
        )
        c.explanations.append(
            f"QLoRA: {c.quant_bit}-bit bitsandbytes base ({'nf4, ' if c.quant_bit == 4 else ''}double "
            "quantization), layer norms upcast."
        )
    if c.precision in ("bf16", "fp16"):
        args[c.precision] = True
    if not on_gpu:
        args["use_cpu"] = True
    if c.liger:
        args["enable_liger_kernel"] = True
    if on_gpu:
        args["flash_attn"] = "auto"
    if t.packing:
        _packing_args(c, args)
    return args


def _packing_args(c: Planning, args: dict[str, Any]) -> None:
    """Neat packing, and the token count it breaks: its attention_mask holds segment ids (a 4D float mask with
    sdpa), so the Trainer's ``non_padding`` count would sum garbage (-3.7e19 tokens/step,
    bench/results/gpu-train-2026-12-01.json); the worker counts instead, packed or not (worker_callbacks.py)."""
    args["neat_packing"] = True
    c.explanations.append(
        "Neat packing (block-diagonal attention, no cross-contamination between samples); tokens/s counted by "
        "thinktune from the input ids (the Trainer's count would sum the packed attention mask)."
    )
    if c.on_gpu and not c.packages.get("flash_attn"):
        c.warnings.append(
            "packing with sdpa (no flash-attn in the trainer) builds a dense O(L^2) block mask per packed row: "
            "measured ~3x slower per step than unpacked (6.13 s vs 1.90 s, 105 GiB peak, Qwen3-4B on one H200, "
            "bench/NOTES-gpu.md); it pays only with FlashAttention-2. Suggestion: packing false unless "
            "flash-attn is installed."
        )
    if c.on_gpu and c.micro_batch > 1:
        c.warnings.append(
            "with FlashAttention-2 LLaMA Factory's neat packing requires micro-batch 1 (#10317)."
        )


def _tokenized_cache(c: Planning, args: dict[str, Any], ds: DatasetFacts, out_dir: str) -> None:
    """LLaMA Factory's ``tokenized_path`` keyed by the inputs and arguments that shape the tokenized rows
    (thinktune/train/cache.py), so an OOM retry or a gang restart loads the dataset instead of tokenizing again."""
    if not ds.fingerprint or args.get("tokenized_path"):
        return
    args["tokenized_path"] = cache.tokenized_path(out_dir, ds.fingerprint, args)
    c.explanations.append(
        f"Tokenized dataset cached at {args['tokenized_path']} (keyed by data, tokenizer, template, cutoff, "
        "packing): a retry or restart loads it instead of tokenizing again."
    )


def _strategy_setup(
    c: Planning, args: dict[str, Any], plan_dir: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The strategy's configs (``thinktune.train.strategies``) into ``args``; returns (files, env)."""
    files: dict[str, Any] = {}
    env: dict[str, str] = {}
    s = c.strategy
    if s in strategies.DEEPSPEED_FILES:
        name = strategies.DEEPSPEED_FILES[s]
        files[name] = strategies.deepspeed_config(s)
        args["deepspeed"] = f"{plan_dir}/{name}"
    elif s == "fsdp":
        files["fsdp_config.json"] = strategies.fsdp_training_config(c.model)
        files["accelerate_fsdp.yaml"] = strategies.accelerate_fsdp_yaml(c.world, c.model, c.precision)
        args["fsdp"] = "full_shard auto_wrap"
        args["fsdp_config"] = f"{plan_dir}/fsdp_config.json"
        if c.method == "qlora":
            c.explanations.append(
                "FSDP + QLoRA: the maintainer-recommended way to shard a quantized base (#5595)."
            )
    elif s == "megatron":
        env["USE_MCA"] = "1"
        mca = strategies.megatron_args(c.world.nproc_per_node, c.world.nnodes)
        args.update(mca)
        c.explanations.append(
            f"Megatron (mcore_adapter, USE_MCA=1): tensor parallel {mca['tensor_model_parallel_size']}, "
            f"pipeline parallel {mca['pipeline_model_parallel_size']}."
        )
        if not c.packages["mcore_adapter"]:
            c.warnings.append(
                "strategy megatron needs mcore_adapter + megatron-core + transformer_engine in the trainer "
                "image (not part of the default image). Suggestion: zero3 for full fine-tuning."
            )
    return files, env


def _apply_extra_args(c: Planning, args: dict[str, Any], accum: int) -> tuple[int, int, bool]:
    """The user's extraArgs win over the planner; returns (micro-batch, accumulation, checkpointing) as they
    end up, so the plan reports what will run."""
    extra = c.spec.training.extra_args
    mb, gc = c.micro_batch, c.gc
    if extra:
        args.update(extra)
        c.explanations.append(f"extraArgs override: {', '.join(sorted(extra))}.")
        if args.get("overwrite_output_dir"):
            c.warnings.append(
                "extraArgs.overwrite_output_dir disables resuming from the last checkpoint after a restart."
            )
        mb = int(args["per_device_train_batch_size"])
        accum = int(args["gradient_accumulation_steps"])
        gc = not bool(args["disable_gradient_checkpointing"])
    if not extra.get("overwrite_output_dir"):
        args.pop("overwrite_output_dir", None)
    return mb, accum, gc


def _check_offload_ram(c: Planning) -> None:
    if c.strategy != "zero3_offload" or not c.hw.ram_total_gib:
        return
    host = host_ram_for_offload_gib(c.model, c.shape())
    per_node = 0.8 * c.hw.ram_total_gib
    if host > per_node * c.world.nnodes:
        c.warnings.append(
            f"ZeRO-3 offload keeps ~{host:.0f} GiB of parameters and optimizer state in CPU RAM, "
            f"more than the ~{per_node:.0f} GiB usable per node. Suggestion: more nodes or GPUs, "
            "or LoRA/QLoRA."
        )


def train_shape(p: Plan, **override: Any) -> TrainShape:
    """The memory model's view of a plan (what ``p.memory_estimate_gib`` was computed from), with overrides:
    how the doctor asks "and with another method / micro-batch?" without a second memory model."""
    a = p.args
    fields: dict[str, Any] = {
        "method": p.method,
        "precision": p.precision,
        "quant_bit": a.get("quantization_bit"),
        "strategy": p.strategy,
        "world": p.world_size,
        "lora_rank": p.lora_rank or 16,
        "lora_target": a.get("lora_target", "all"),
        "micro_batch": p.micro_batch_size,
        "seq": p.cutoff_len,
        "gradient_checkpointing": p.gradient_checkpointing,
        "liger": p.liger_kernel,
    }
    return TrainShape(**{**fields, **override})


def write_plan_files(p: Plan, output_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``p.files`` into ``output_dir/plan/`` and ``plan.json``; return name -> path."""
    d = Path(output_dir) / "plan"
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name, content in p.files.items():
        path = d / name
        path.write_text(
            json.dumps(content, indent=2) + "\n" if isinstance(content, (dict, list)) else str(content)
        )
        out[name] = path
    (d / "plan.json").write_text(p.model_dump_json(indent=2))
    out["plan.json"] = d / "plan.json"
    return out
