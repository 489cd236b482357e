"""``thinktune doctor``: can this machine fine-tune the chosen model, and how?

It answers from what is on disk, never from a hub: the hardware (``thinktune.hardware``), the model's
``config.json`` (a local directory, the local Hugging Face cache, or a built-in table of known Qwen3
configs), a memory estimate per training method, and whether the tokenizer and chat template keep the
``<think>`` reasoning intact. Exit code 0 means "you can train this model here", 1 means "you cannot",
with every failing check naming what is missing and the fix.

Memory model (per GPU, one model replica, bf16 compute, AdamW; GiB = 2**30 bytes)
-----------------------------------------------------------------------------------
Parameters from config.json, per decoder layer::

    attn = h*(H*d) + 2*h*(K*d) + (H*d)*h        q, k, v, o   (H heads, K kv heads, head_dim d)
    mlp  = 3*h*I                                gate, up, down
    N    = L*(attn + mlp + norms) + V*h*(1 if tied else 2) + h

LoRA trainable parameters (all 7 linear layers, rank r)::  P = L * r * sum(in + out)

Bytes::

    LoRA   weights = 2*N (bf16)                          + 16*P (fp32 weight, grad, Adam m and v)
    QLoRA  weights = 0.516*N_linear + 2*(N - N_linear)   + 16*P
           (NF4 = 4 bits + double-quantised block scales ~0.13 bits; embeddings and norms stay bf16)
    Full   weights = 18*N  (LLaMA Factory's own rule for bf16 AMP: fp32 master weights, fp32 grads,
           Adam m and v = 16 bytes, plus ~2 bytes of bf16 working copies)

Activations for ``T = micro_batch * seq_len`` tokens, bf16 (2 bytes per element)::

    per layer and token     a   = 2*(12*h + 4*I)   projections, attention output, norms, residuals (~12h)
                                                   and the MLP's gate/up/activation products (~4I)
    with grad checkpointing act = T * (2*L*h + a)  only each layer's input is kept, one layer recomputed
    without                 act = T * L * a
    logits (unfused CE)     T * 12*V               bf16 logits + fp32 upcast + fp32 and bf16 gradients
                                                   (0 with a fused linear cross-entropy such as Liger's)
    total = weights + optimizer state + 1.1 * (act + logits) + 1 GiB (CUDA context, cuBLAS workspace)

The 1.1 covers allocator fragmentation. Checked against notes/measured-anchors.md (Qwen3-4B, one H200,
LoRA r=16; measured torch peak vs this estimate, which also counts the CUDA context): S=2048 micro-batch 4,
checkpointing, unfused CE 25.7 vs 27.0; micro-batch 8 + Liger 14.0 vs 14.4; S=8192 micro-batch 2 unfused
43.4 vs 45.0; without checkpointing + Liger, micro-batch 4 46.5 vs 51.1 and 8 84.9 vs 93.1. So it errs
high by 3-10%, the safe side for a "does it fit" answer. Attention scores are not counted: SDPA and
FlashAttention never materialise the S x S matrix.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from thinktune.hardware import GIB, HardwareInfo, detect_hardware

DEFAULT_MODEL = "Qwen/Qwen3-4B-Thinking-2507"
METHODS = ("lora", "qlora", "full")
# Leave this fraction of device memory unplanned: NCCL buffers, fragmentation spikes, eval batches.
USABLE_FRACTION = 0.95
# Models at most this large may "train" on CPU, as a smoke test of the pipeline (not to learn anything).
CPU_SMOKE_MAX_PARAMS = 100_000_000


# ------------------------------------------------------------------------------------------ model shape


@dataclass
class ModelDims:
    """The numbers of a decoder-only transformer that set its memory footprint."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    model_type: str = "qwen3"

    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, source: str = "config.json") -> ModelDims:
        """Read a Hugging Face config.json dict. Raises ValueError naming the missing field."""
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
        kv = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or hidden // heads
        return cls(
            hidden=hidden,
            layers=need("num_hidden_layers", "n_layer"),
            heads=heads,
            kv_heads=int(kv),
            head_dim=int(head_dim),
            intermediate=need("intermediate_size", "n_inner", "ffn_dim"),
            vocab=need("vocab_size"),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            model_type=str(cfg.get("model_type", "unknown")),
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the 7 linear layers of one decoder layer."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def params(self) -> int:
        # RMSNorms: 2 per layer (h) + Qwen3's q/k norms (head_dim each) + the final norm.
        norms = self.layers * (2 * self.hidden + 2 * self.head_dim) + self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.linear_params + norms + embeddings

    def lora_params(self, rank: int) -> int:
        return self.layers * rank * sum(a + b for a, b in self.linear_shapes())


# Known configs for hub ids the doctor may be asked about offline (values from each model's config.json).
_QWEN3_4B = ModelDims(2560, 36, 32, 8, 128, 9728, 151936, True)
KNOWN_CONFIGS: dict[str, ModelDims] = {
    "qwen/qwen3-4b-thinking-2507": _QWEN3_4B,
    "qwen/qwen3-4b-instruct-2507": _QWEN3_4B,
    "qwen/qwen3-4b": _QWEN3_4B,
    "qwen/qwen3-4b-base": _QWEN3_4B,
    "qwen/qwen3-0.6b": ModelDims(1024, 28, 16, 8, 128, 3072, 151936, True),
    "qwen/qwen3-1.7b": ModelDims(2048, 28, 16, 8, 128, 6144, 151936, True),
    "qwen/qwen3-8b": ModelDims(4096, 36, 32, 8, 128, 12288, 151936, False),
}


# ------------------------------------------------------------------------------------------ estimates


@dataclass
class TrainSetting:
    """The training shape the memory estimate is for (LLaMA Factory's defaults, LoRA rank 16)."""

    seq_len: int = 2048
    micro_batch: int = 1
    gradient_checkpointing: bool = True
    fused_cross_entropy: bool = False  # Liger's fused linear cross-entropy (enable_liger_kernel)
    lora_rank: int = 16


@dataclass
class MemoryEstimate:
    method: str  # lora | qlora | full
    trainable_params: int
    weights_gib: float
    optimizer_gib: float  # trainable weights in fp32 + grads + Adam moments (full: included in weights)
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    per_sample_gib: float  # what one more sequence in the micro-batch adds


def estimate_memory(dims: ModelDims, method: str, setting: TrainSetting | None = None) -> MemoryEstimate:
    """Peak GPU memory of one training replica; see the module docstring for every term."""
    s = setting or TrainSetting()
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    n = dims.params
    lora = dims.lora_params(s.lora_rank)
    if method == "lora":
        weights, trainable = 2.0 * n, lora
    elif method == "qlora":
        weights, trainable = 0.516 * dims.linear_params + 2.0 * (n - dims.linear_params), lora
    else:
        weights, trainable = 18.0 * n, n
    optimizer = 16.0 * trainable if method != "full" else 0.0

    per_layer = 2.0 * (12 * dims.hidden + 4 * dims.intermediate)
    if s.gradient_checkpointing:
        act_tok = 2.0 * dims.layers * dims.hidden + per_layer
    else:
        act_tok = dims.layers * per_layer
    logits_tok = 0.0 if s.fused_cross_entropy else 12.0 * dims.vocab
    tokens = s.micro_batch * s.seq_len
    activations = 1.1 * tokens * act_tok
    logits = 1.1 * tokens * logits_tok
    overhead = 1.0 * GIB
    total = weights + optimizer + activations + logits + overhead
    return MemoryEstimate(
        method=method,
        trainable_params=int(trainable),
        weights_gib=round(weights / GIB, 2),
        optimizer_gib=round(optimizer / GIB, 2),
        activations_gib=round(activations / GIB, 2),
        logits_gib=round(logits / GIB, 2),
        overhead_gib=round(overhead / GIB, 2),
        total_gib=round(total / GIB, 2),
        per_sample_gib=round(1.1 * s.seq_len * (act_tok + logits_tok) / GIB, 3),
    )


# ------------------------------------------------------------------------------------------ the report


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | info
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    model: str
    model_source: str  # local | hf-cache | builtin-table | missing
    is_tiny: bool
    dims: dict[str, Any] | None
    params: int | None
    setting: dict[str, Any]
    estimates: dict[str, dict[str, Any]]
    fits: dict[str, bool]  # per method, on this machine's GPUs
    max_micro_batch: dict[str, int]  # per method, at setting.seq_len (0 = does not fit)
    hardware: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    recommendation: str = ""
    can_train: bool = False

    @property
    def exit_code(self) -> int:
        return 0 if self.can_train else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        return d


@dataclass
class _Resolved:
    source: str
    dims: ModelDims | None
    local_dir: Path | None  # where config/tokenizer files live, if anywhere
    tokenizer: str | None  # what to hand to load_tokenizer
    weights_present: bool


def _hf_cache_dir(repo_id: str) -> Path | None:
    """Snapshot directory of ``repo_id`` in the local Hugging Face cache, if its config.json is there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # malformed ids raise validation errors; treat as "not cached"
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _has_weights(d: Path) -> bool:
    return (
        any(d.glob("*.safetensors")) or any(d.glob("*.bin")) or (d / "model.safetensors.index.json").is_file()
    )


def _resolve(model: str, checks: list[Check]) -> _Resolved:
    from thinktune.qwen_tokenizer import BUILTIN_QWEN3, HUB_ID_PATTERN

    path = Path(model).expanduser()
    if path.exists() or not HUB_ID_PATTERN.match(model):
        if not path.is_dir():
            checks.append(
                Check(
                    "model",
                    "fail",
                    f"model path {path} does not exist"
                    if not path.exists()
                    else f"{path} is not a directory",
                    f"create a tiny test model with `thinktune make-tiny-model {path}`, or pass a model "
                    f"directory or a hub id such as {DEFAULT_MODEL}",
                )
            )
            return _Resolved("missing", None, None, None, False)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            checks.append(
                Check(
                    "model",
                    "fail",
                    f"{cfg_file} is missing: {path} is not a Hugging Face model directory",
                    f"point --model at a directory saved with save_pretrained, or run "
                    f"`thinktune make-tiny-model {path}`",
                )
            )
            return _Resolved("missing", None, None, None, False)
        weights = _has_weights(path)
        if not weights:
            checks.append(
                Check(
                    "model",
                    "fail",
                    f"{path} has config.json but no weights (*.safetensors / *.bin)",
                    "copy the weights next to config.json, or re-create the model",
                )
            )
        return _Resolved("local", _dims_from_file(cfg_file, checks), path, str(path), weights)

    cached = _hf_cache_dir(model)
    if cached is not None:
        weights = _has_weights(cached)
        if not weights:
            checks.append(
                Check(
                    "model",
                    "warn",
                    f"{model}: config.json is in the Hugging Face cache ({cached}) but the weights are not",
                    "download them where there is hub access: `hf download " + model + "`",
                )
            )
        return _Resolved("hf-cache", _dims_from_file(cached / "config.json", checks), cached, model, weights)

    known = KNOWN_CONFIGS.get(model.lower())
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if known is None:
        checks.append(
            Check(
                "model",
                "fail",
                f"{model} is not a local directory, not in the Hugging Face cache and not in thinktune's "
                "table of known configs, so its size is unknown",
                f"download it first (`hf download {model}`), pass a local model directory, or create a "
                f"tiny test model with `thinktune make-tiny-model DIR` and pass --model DIR",
            )
        )
        return _Resolved("missing", None, None, None, False)
    tokenizer = BUILTIN_QWEN3 if known.model_type == "qwen3" else None
    if offline:
        checks.append(
            Check(
                "model",
                "fail",
                f"{model} weights are not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
                "downloading them (size estimated from the built-in config table)",
                f"download on a machine with hub access (`hf download {model}`) and copy the cache, "
                "or unset HF_HUB_OFFLINE",
            )
        )
    else:
        checks.append(
            Check(
                "model",
                "warn",
                f"{model} is not downloaded yet; training will fetch ~{2 * known.params / GIB:.1f} GiB "
                "from the hub (size estimated from the built-in config table)",
                "make sure the machine has hub access, or pre-download with `hf download " + model + "`",
            )
        )
    return _Resolved("builtin-table", known, None, tokenizer, False)


def _dims_from_file(cfg_file: Path, checks: list[Check]) -> ModelDims | None:
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        return ModelDims.from_config(cfg, source=str(cfg_file))
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as exc:
        checks.append(
            Check("model config", "fail", f"cannot read {cfg_file}: {exc}", "fix or replace config.json")
        )
        return None


@cache
def _builtin_tokenizer() -> Any:
    # Read-only use below, so one shared instance is safe; saves ~2 s per doctor run in one process.
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer

    return load_qwen3_tokenizer()


def _check_tokenizer(tokenizer_ref: str | None, dims: ModelDims | None, checks: list[Check]) -> bool:
    """<think>/</think> are single tokens (at Qwen3's ids for Qwen3) and the template keeps reasoning."""
    from thinktune.chat_template import GENERATION_PROMPT
    from thinktune.qwen_tokenizer import BUILTIN_QWEN3, END_THINK_ID, THINK_ID, load_tokenizer

    if tokenizer_ref is None:
        checks.append(
            Check(
                "tokenizer", "fail", "no tokenizer available for this model", "pass a local model directory"
            )
        )
        return False
    try:
        tok = _builtin_tokenizer() if tokenizer_ref == BUILTIN_QWEN3 else load_tokenizer(tokenizer_ref)
    except Exception as exc:  # any loader failure is a finding to report, not a crash
        checks.append(Check("tokenizer", "fail", f"cannot load tokenizer {tokenizer_ref}: {exc}", ""))
        return False
    where = (
        "built-in Qwen3 tokenizer (same as the hub's)" if tokenizer_ref == BUILTIN_QWEN3 else tokenizer_ref
    )
    ok = True

    ids = {t: tok.encode(t, add_special_tokens=False) for t in ("<think>", "</think>")}
    single = all(len(v) == 1 for v in ids.values())
    want_qwen_ids = dims is not None and dims.model_type == "qwen3"
    if not single:
        checks.append(
            Check(
                "think tokens",
                "fail",
                f"<think>/</think> are not single tokens in {where}: {ids}; the model cannot emit its "
                "reasoning markers as trained",
                "use a thinking model's tokenizer (e.g. Qwen/Qwen3-4B-Thinking-2507)",
            )
        )
        ok = False
    elif want_qwen_ids and (ids["<think>"][0], ids["</think>"][0]) != (THINK_ID, END_THINK_ID):
        checks.append(
            Check(
                "think tokens",
                "fail",
                f"<think>/</think> are ids {ids['<think>'][0]}/{ids['</think>'][0]}, Qwen3 has "
                f"{THINK_ID}/{END_THINK_ID}: tokenizer and model do not match",
                "use the tokenizer that ships with the model",
            )
        )
        ok = False
    else:
        checks.append(
            Check(
                "think tokens", "ok", f"<think>={ids['<think>'][0]}, </think>={ids['</think>'][0]} ({where})"
            )
        )

    if dims is not None and len(tok) > dims.vocab:
        checks.append(
            Check(
                "vocab",
                "fail",
                f"tokenizer has {len(tok)} tokens but the model's embedding has {dims.vocab} rows",
                "use the model's own tokenizer",
            )
        )
        ok = False

    if not getattr(tok, "chat_template", None):
        checks.append(
            Check(
                "chat template",
                "warn",
                f"{where} has no chat template; training uses LLaMA Factory's `qwen3` template, but "
                "inference after export will not know how to format a conversation",
                "use a tokenizer with the Qwen3-Thinking-2507 template",
            )
        )
        return ok
    try:
        convo = [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "<think>\nR\n</think>\n\nA"},
        ]
        rendered = tok.apply_chat_template(convo, tokenize=False)
        prompt = tok.apply_chat_template(convo[:1], tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a broken Jinja template
        checks.append(Check("chat template", "fail", f"the chat template does not render: {exc}", ""))
        return False
    if "<think>\nR\n</think>\n\nA" not in rendered:
        checks.append(
            Check(
                "chat template",
                "fail",
                f"the chat template drops or rewrites the reasoning of the final turn: {rendered!r}",
                "use the Qwen3-Thinking-2507 chat template",
            )
        )
        ok = False
    elif not prompt.endswith(GENERATION_PROMPT):
        checks.append(
            Check(
                "chat template",
                "warn",
                "renders a thinking turn, but its generation prompt does not pre-fill '<think>\\n' "
                "(an instruct/hybrid template); Qwen3-Thinking-2507 models expect the pre-fill",
                "",
            )
        )
    else:
        checks.append(
            Check("chat template", "ok", "renders a thinking turn; generation prompt pre-fills '<think>\\n'")
        )
    return ok


def _max_micro_batch(dims: ModelDims, method: str, setting: TrainSetting, budget_gib: float) -> int:
    base = estimate_memory(dims, method, TrainSetting(**{**asdict(setting), "micro_batch": 0}))
    per = base.per_sample_gib
    if per <= 0 or base.total_gib > budget_gib:
        return 0
    return int((budget_gib - base.total_gib) // per)


def _disk_needed_gib(dims: ModelDims, weights_present: bool) -> float:
    """Download (if needed) + a merged bf16 export + 3 LoRA checkpoints with optimizer state."""
    bf16 = 2 * dims.params / GIB
    checkpoints = 3 * 12 * dims.lora_params(16) / GIB
    return (0 if weights_present else bf16) + bf16 + checkpoints


def _fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _fmt_gib(x: float) -> str:
    return f"{x:.1f} GiB" if x >= 1 else f"{x:.2f} GiB"


def _hardware_verdict(
    model: str,
    hw: HardwareInfo,
    dims: ModelDims,
    is_tiny: bool,
    setting: TrainSetting,
    estimates: dict[str, MemoryEstimate],
    fits: dict[str, bool],
    max_mb: dict[str, int],
    budget: float,
) -> tuple[bool, str]:
    """(fits on this hardware?, the recommendation sentence)."""
    lora, qlora, full = estimates["lora"], estimates["qlora"], estimates["full"]
    if not hw.cuda_available:
        if not is_tiny:
            return False, (
                f"no GPU: CPU can only run the tiny model for smoke tests. {model} needs a GPU with "
                f"~{_fmt_gib(lora.total_gib)} for LoRA bf16 (~{_fmt_gib(qlora.total_gib)} for QLoRA 4-bit); "
                "run on a GPU machine, or create a tiny model (`thinktune make-tiny-model DIR`) and pass "
                "`--model DIR` for a CPU smoke test"
            )
        # On CPU everything is fp32 and fully trainable at worst: the full estimate bounds RAM use.
        cpu_need = full.total_gib - full.overhead_gib
        if hw.ram_available_gib < cpu_need:
            return False, (
                f"no GPU and only {_fmt_gib(hw.ram_available_gib)} RAM free; even this tiny model needs "
                f"~{_fmt_gib(cpu_need)} at seq_len {setting.seq_len}: lower seq_len"
            )
        return True, (
            "no GPU: CPU can only run the tiny model for smoke tests -- this is a tiny model, so a CPU smoke "
            "run works (its outputs are meaningless). For real training use --model on a GPU machine"
        )
    what = f"{hw.gpus[0].name} {hw.min_gpu_total_gib:.0f} GiB ({_fmt_gib(budget)} usable)"
    if hw.gpu_count > 1:
        what = f"{hw.gpu_count}x {what}, {hw.topology.interconnect}"
    if fits["lora"]:
        roomy = lora.total_gib <= 0.5 * budget
        rec = (
            f"{what}: LoRA bf16 fits"
            + (" with room; no QLoRA needed" if roomy else " but tightly: keep micro-batch small")
            + f" (~{_fmt_gib(lora.total_gib)} at micro-batch {setting.micro_batch} x {setting.seq_len} tokens "
            f"with gradient checkpointing; up to micro-batch {max_mb['lora']} fits)"
        )
        if fits["full"]:
            rec += f"; full fine-tuning also fits (~{_fmt_gib(full.total_gib)})"
        return True, rec
    if fits["qlora"]:
        rec = (
            f"{what}: LoRA bf16 needs ~{_fmt_gib(lora.total_gib)} and does not fit; use QLoRA 4-bit + "
            f"gradient checkpointing (~{_fmt_gib(qlora.total_gib)})"
        )
        if importlib.util.find_spec("bitsandbytes") is None:
            return (
                False,
                rec + "; QLoRA needs bitsandbytes, which is not installed: pip install 'bitsandbytes>=0.43'",
            )
        return True, rec
    return False, (
        f"{what}: {model} does not fit even with QLoRA 4-bit (~{_fmt_gib(qlora.total_gib)} needed): lower "
        "seq_len, use a smaller model or a larger GPU"
    )


def run_doctor(
    model: str | None = None,
    output_dir: Path | str | None = None,
    *,
    setting: TrainSetting | None = None,
    hardware: HardwareInfo | None = None,
) -> DoctorReport:
    """Inspect hardware + model + tokenizer and decide whether (and how) this machine can train.

    ``hardware`` may be injected (``HardwareInfo.from_dict``) to ask about another machine.
    """
    from thinktune.tiny_model import read_tiny_marker

    model = model or DEFAULT_MODEL
    setting = setting or TrainSetting()
    hw = hardware or detect_hardware(output_dir or ".")
    checks: list[Check] = []

    # -- hardware
    if hw.cuda_available:
        gpu_desc = ", ".join(f"{g.name} ({g.total_gib:.0f} GiB, {g.free_gib:.0f} free)" for g in hw.gpus)
        checks.append(Check("CUDA", "ok", f"{hw.gpu_count} GPU(s): {gpu_desc}"))
        if hw.gpu_count > 1:
            checks.append(
                Check("GPU interconnect", "info", f"{hw.topology.interconnect} ({hw.topology.source})")
            )
        if not hw.all_bf16:
            checks.append(
                Check(
                    "bf16",
                    "warn",
                    "not every GPU supports bfloat16 (compute capability < 8.0)",
                    "train in fp16 (LLaMA Factory: fp16: true, bf16: false)",
                )
            )
    else:
        why = "; ".join(hw.notes) or "no CUDA device"
        checks.append(
            Check(
                "CUDA",
                "warn",
                f"no GPU: {why}. CPU can only run the tiny model for smoke tests",
                "run on a machine with an NVIDIA GPU for real training",
            )
        )
    checks.append(
        Check(
            "host",
            "info",
            f"{hw.cpu_count} CPUs, {hw.ram_total_gib:.1f} GiB RAM ({hw.ram_available_gib:.1f} free)",
        )
    )

    # -- model
    resolved = _resolve(model, checks)
    dims = resolved.dims
    marker = read_tiny_marker(resolved.local_dir) if resolved.local_dir else None
    is_tiny = marker is not None or (dims is not None and dims.params <= CPU_SMOKE_MAX_PARAMS)
    if dims is not None:
        checks.append(
            Check(
                "model size",
                "ok" if resolved.source in ("local", "hf-cache") and resolved.weights_present else "info",
                f"{model}: {dims.model_type}, {_fmt_params(dims.params)} parameters "
                f"(hidden {dims.hidden}, {dims.layers} layers, {dims.heads}/{dims.kv_heads} heads, "
                f"vocab {dims.vocab}{', tied' if dims.tied else ''}){' [thinktune tiny model]' if marker else ''}",
            )
        )

    if resolved.source != "missing":
        _check_tokenizer(resolved.tokenizer, dims, checks)  # failures become blockers below

    # -- memory
    estimates: dict[str, MemoryEstimate] = {}
    fits: dict[str, bool] = {}
    max_mb: dict[str, int] = {}
    budget = min(hw.min_gpu_free_gib, USABLE_FRACTION * hw.min_gpu_total_gib) if hw.cuda_available else 0.0
    if dims is not None:
        for m in METHODS:
            est = estimate_memory(dims, m, setting)
            estimates[m] = est
            fits[m] = hw.cuda_available and est.total_gib <= budget
            max_mb[m] = _max_micro_batch(dims, m, setting, budget) if hw.cuda_available else 0
        need = _disk_needed_gib(dims, resolved.weights_present)
        disk_ok = hw.disk_free_gib >= need
        checks.append(
            Check(
                "disk",
                "ok" if disk_ok else "fail",
                f"{_fmt_gib(hw.disk_free_gib)} free at {hw.disk_path}; this model needs ~{_fmt_gib(need)} "
                "(download, checkpoints, merged export)",
                "" if disk_ok else "free disk space or choose an output directory on a larger volume",
            )
        )
    else:
        disk_ok = True

    # -- decision: the hardware verdict first (it is what people run the doctor for), then blockers
    blockers = [f"{c.name}: {c.detail}" for c in checks if c.status == "fail" and c.name != "disk"]
    if dims is None:
        hw_ok, rec = False, "cannot estimate memory without the model's config"
    else:
        hw_ok, rec = _hardware_verdict(model, hw, dims, is_tiny, setting, estimates, fits, max_mb, budget)
    if not disk_ok:
        blockers.append("not enough free disk (see the 'disk' check)")
    if blockers:
        rec += ". Blocked by: " + "; ".join(blockers)
    can_train = hw_ok and not blockers

    return DoctorReport(
        model=model,
        model_source=resolved.source,
        is_tiny=is_tiny,
        dims=asdict(dims) if dims else None,
        params=dims.params if dims else None,
        setting=asdict(setting),
        estimates={k: asdict(v) for k, v in estimates.items()},
        fits=fits,
        max_micro_batch=max_mb,
        hardware=hw.to_dict(),
        checks=checks,
        recommendation=rec,
        can_train=can_train,
    )


# ------------------------------------------------------------------------------------------ rendering

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}


def render_report(report: DoctorReport, console: Any = None) -> None:
    """Human-readable report (rich tables)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    checks = Table(title=f"thinktune doctor: {report.model}")
    checks.add_column("check", no_wrap=True)
    checks.add_column("status", no_wrap=True)
    checks.add_column("detail", overflow="fold")
    for c in report.checks:
        detail = escape(c.detail) + (f"\n[bold]fix:[/] {escape(c.fix)}" if c.fix else "")
        checks.add_row(c.name, f"[{_STYLE.get(c.status, '')}]{c.status}[/]", detail)
    console.print(checks)

    if report.estimates:
        s = report.setting
        mem = Table(
            title=(
                f"estimated peak GPU memory per replica (GiB): seq_len {s['seq_len']}, micro-batch "
                f"{s['micro_batch']}, grad checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, "
                f"LoRA r={s['lora_rank']}"
            )
        )
        for col in ("method", "weights", "optim", "activ", "logits", "total", "fits", "max mb"):
            mem.add_column(col, justify="right" if col not in ("method", "fits") else "left")
        labels = {"lora": "LoRA bf16", "qlora": "QLoRA 4bit", "full": "full AMP"}
        for m, e in report.estimates.items():
            mem.add_row(
                labels.get(m, m),
                f"{e['weights_gib']:.2f}",
                f"{e['optimizer_gib']:.2f}",
                f"{e['activations_gib']:.2f}",
                f"{e['logits_gib']:.2f}",
                f"{e['total_gib']:.2f}",
                "[green]yes[/]" if report.fits.get(m) else "[red]no[/]",
                str(report.max_micro_batch.get(m, 0)),
            )
        console.print(mem)
    verdict = "[green]can train[/]" if report.can_train else "[bold red]cannot train[/]"
    console.print(f"{verdict}: {escape(report.recommendation)}")


def doctor_command(
    model: str | None = None,
    json_out: bool = False,
    *,
    output_dir: Path | str | None = None,
    seq_len: int = 2048,
    micro_batch: int = 1,
) -> int:
    """Entry point for ``thinktune doctor [--model M] [--json] [--output-dir D]``; returns the exit code."""
    report = run_doctor(model, output_dir, setting=TrainSetting(seq_len=seq_len, micro_batch=micro_batch))
    if json_out:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_report(report)
    return report.exit_code
