"""``thinktune doctor``: can this machine fine-tune the chosen model, and how?

detect hardware (``thinktune.hardware``) -> ``plan()`` (``thinktune.train.planner``, the same planner and memory
model ``thinktune train`` uses, so the two cannot disagree) -> tokenizer / chat template / disk checks -> render.
It answers from what is on disk, never from a hub: the model's ``config.json`` comes from a local directory, the
local Hugging Face cache, or the built-in table of known configs (``thinktune.train.memory.KNOWN_CONFIGS``).

The verdict is the plan for this machine with every GPU in use (``thinktune train``'s defaults: LoRA, automatic
strategy, micro-batch, checkpointing and Liger); the table shows LoRA, QLoRA and full fine-tuning each planned the
same way. When the model does not fit, the doctor plans the same card 2, 4, 8, ... times over and says how many
GPUs of this size, with which strategy, would. Exit code 0 means "you can train this model here", 1 means "you
cannot", with every failing check naming what is missing and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from thinktune.hardware import GIB, HardwareInfo, detect_hardware, installed_packages
from thinktune.spec import FineTuneJobSpec
from thinktune.train.memory import ModelShape, estimate, max_micro_batch
from thinktune.train.planner import Plan, WorldInfo, plan, train_shape

DEFAULT_MODEL = "Qwen/Qwen3-4B-Thinking-2507"
METHODS = ("lora", "qlora", "full")
# Models at most this large may "train" on CPU, as a smoke test of the pipeline (not to learn anything).
CPU_SMOKE_MAX_PARAMS = 100_000_000
GPUS_PER_NODE = 8  # beyond one node's worth the guidance counts nodes of 8
MAX_GUIDED_GPUS = 64


@dataclass
class DoctorSetting:
    """The training shape to check; ``None`` / ``auto`` = the planner's choice, as ``thinktune train`` would."""

    seq_len: int = 2048
    micro_batch: int | None = None
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    liger_kernel: Literal["auto", "on", "off"] = "auto"

    def spec(self, method: str) -> FineTuneJobSpec:
        training: dict[str, Any] = {
            "cutoffLen": self.seq_len,
            "gradientCheckpointing": self.gradient_checkpointing,
            "ligerKernel": self.liger_kernel,
        }
        if self.micro_batch:
            training["microBatchSize"] = self.micro_batch
        return FineTuneJobSpec.model_validate(
            {
                "output": {"path": "doctor"},
                "dataset": {"path": "dataset"},
                "finetuning": {"method": method},
                "training": training,
            }
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
    shape: dict[str, Any] | None
    params: int | None
    setting: dict[str, Any]
    plan: dict[str, Any] | None  # the verdict's plan: decisions, explanations, warnings
    estimates: dict[str, dict[str, float]]  # per method: weights, trainable_state, activations, total (GiB)
    fits: dict[str, bool]  # per method, planned on this machine's GPUs
    max_micro_batch: dict[str, int]  # per method, at the planned setting (0 = does not fit)
    hardware: dict[str, Any]
    multi_gpu: str = ""  # how many GPUs of this size would fit, when these do not
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
    dims: ModelShape | None
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

    known = ModelShape.known(model)
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
                f"{model} is not downloaded yet; training will fetch ~{2 * known.num_params / GIB:.1f} GiB "
                "from the hub (size estimated from the built-in config table)",
                "make sure the machine has hub access, or pre-download with `hf download " + model + "`",
            )
        )
    return _Resolved("builtin-table", known, None, tokenizer, False)


def _dims_from_file(cfg_file: Path, checks: list[Check]) -> ModelShape | None:
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        return ModelShape.from_config(cfg, name=str(cfg_file.parent), source=str(cfg_file))
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


def _check_tokenizer(tokenizer_ref: str | None, dims: ModelShape | None, checks: list[Check]) -> bool:
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

    if dims is not None and len(tok) > dims.vocab_size:
        checks.append(
            Check(
                "vocab",
                "fail",
                f"tokenizer has {len(tok)} tokens but the model's embedding has {dims.vocab_size} rows",
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


# ------------------------------------------------------------------------------------------ planning


def _plan(
    shape: ModelShape,
    hw: HardwareInfo,
    setting: DoctorSetting,
    method: str,
    packages: dict[str, bool],
    nnodes: int = 1,
) -> Plan:
    world = WorldInfo(nnodes=nnodes, nproc_per_node=max(1, hw.gpu_count))
    return plan(setting.spec(method), hw, model=shape, world=world, model_path=shape.name, packages=packages)


def _method_row(p: Plan, method: str, shape: ModelShape) -> tuple[dict[str, float], bool, int]:
    """(estimate, fits, max micro-batch) of ``method`` as planned in ``p``. When the planner switched LoRA to
    QLoRA for memory, the LoRA row is the setting it rejected: micro-batch 1 with checkpointing."""
    if p.method == method:
        t = train_shape(p)
        est, fits = estimate(shape, t), p.fits
    else:
        t = train_shape(p, method=method, micro_batch=1, gradient_checkpointing=True)
        est = estimate(shape, t)
        fits = False
    on_gpu = p.device == "cuda"
    mb = max_micro_batch(shape, t, p.memory_budget_gib) if on_gpu and fits else 0
    return est.as_dict(), fits, mb


def _same_gpus(hw: HardwareInfo, n: int) -> HardwareInfo:
    """This machine with ``n`` copies of its smallest GPU on one node (NVLink as it has now)."""
    gpu = min(hw.gpus, key=lambda g: g.total_gib)
    d = hw.to_dict()
    d["gpus"] = [{**asdict(gpu), "index": i, "free_gib": gpu.total_gib} for i in range(n)]
    interconnect = "nvlink" if hw.nvlink_everywhere else "pcie"
    d["topology"] = {"interconnect": interconnect if n > 1 else "single", "nvlink": hw.nvlink_everywhere}
    return HardwareInfo.from_dict(d)


def multi_gpu_guidance(
    shape: ModelShape, hw: HardwareInfo, setting: DoctorSetting, packages: dict[str, bool]
) -> tuple[int, Plan] | None:
    """The fewest GPUs of this machine's size (powers of two up to 64; nodes of 8 beyond one node) whose plan
    fits without falling back to a quantized base, or None."""
    n = 2
    while n <= MAX_GUIDED_GPUS:
        per_node = min(n, GPUS_PER_NODE)
        p = _plan(shape, _same_gpus(hw, per_node), setting, "lora", packages, nnodes=n // per_node)
        if p.fits:
            return n, p
        n *= 2
    return None


def _gpu_words(hw: HardwareInfo, n: int | None = None) -> str:
    n = hw.gpu_count if n is None else n
    return f"{n}x {hw.gpus[0].name} {hw.min_gpu_total_gib:.0f} GiB"


def _describe(p: Plan) -> str:
    mem = p.memory_estimate_gib.get("total")
    return (
        f"{p.method} {p.precision}, strategy {p.strategy}, micro-batch {p.micro_batch_size} x {p.cutoff_len} "
        f"tokens, gradient checkpointing {'on' if p.gradient_checkpointing else 'off'}, Liger "
        f"{'on' if p.liger_kernel else 'off'}"
        + (f" (~{_fmt_gib(mem)} of {_fmt_gib(p.memory_budget_gib)} usable)" if mem else "")
    )


def _verdict(
    model: str,
    hw: HardwareInfo,
    shape: ModelShape,
    is_tiny: bool,
    plans: dict[str, Plan],
    fits: dict[str, bool],
    guidance: tuple[int, Plan] | None,
    packages: dict[str, bool],
) -> tuple[bool, str, str]:
    """(can this machine train it, the recommendation, the multi-GPU guidance)."""
    lead = plans["lora"]
    if not hw.cuda_available:
        if not is_tiny:
            lora = estimate(
                shape, train_shape(lead, precision="bf16", gradient_checkpointing=True, micro_batch=1)
            )
            return (
                False,
                (
                    f"no GPU: CPU can only run the tiny model for smoke tests. {model} needs a GPU with "
                    f"~{_fmt_gib(lora.total + 1.5)} for LoRA bf16 at micro-batch 1 with checkpointing; run on a GPU "
                    "machine, or create a tiny model (`thinktune make-tiny-model DIR`) and pass `--model DIR` for a "
                    "CPU smoke test"
                ),
                "",
            )
        if not lead.fits:
            return (
                False,
                (
                    f"no GPU and {_fmt_gib(hw.ram_total_gib)} RAM; even this tiny model is planned at "
                    f"~{_fmt_gib(estimate(shape, train_shape(lead)).total)} at seq_len {lead.cutoff_len}: lower seq_len"
                ),
                "",
            )
        return (
            True,
            (
                "no GPU: CPU can only run the tiny model for smoke tests -- this is a tiny model, so a CPU smoke "
                "run works (its outputs are meaningless). For real training use --model on a GPU machine"
            ),
            "",
        )
    what = _gpu_words(hw) + (f", {hw.topology.interconnect}" if hw.gpu_count > 1 else "")
    if fits["lora"]:
        roomy = lead.memory_estimate_gib["total"] <= 0.5 * lead.memory_budget_gib
        rec = (
            f"{what}: LoRA {lead.precision} fits"
            + (" with room; no QLoRA needed" if roomy else "")
            + f": {_describe(lead)}"
        )
        if fits["full"]:
            rec += f"; full fine-tuning also fits (strategy {plans['full'].strategy})"
        return True, rec, ""
    more = ""
    if guidance is not None:
        n, gp = guidance
        nodes = f" ({n // GPUS_PER_NODE} nodes of {GPUS_PER_NODE})" if n > GPUS_PER_NODE else ""
        more = f"LoRA {gp.precision} fits on {_gpu_words(hw, n)}{nodes} with strategy {gp.strategy}: {_describe(gp)}"
    if fits["qlora"]:
        rec = f"{what}: LoRA bf16 does not fit; the planner uses QLoRA 4-bit: {_describe(plans['qlora'])}" + (
            f". Without quantization: {more}" if more else ""
        )
        if not packages["bitsandbytes"]:
            return (
                False,
                rec + "; QLoRA needs bitsandbytes, which is not installed: pip install 'bitsandbytes>=0.43'",
                more,
            )
        return True, rec, more
    qlora_total = plans["qlora"].memory_estimate_gib.get("total", 0.0)
    rec = f"{what}: {model} does not fit even with QLoRA 4-bit (~{_fmt_gib(qlora_total)} needed per GPU)"
    rec += f"; {more}" if more else ": lower seq_len or use a smaller model"
    return False, rec, more


def _disk_needed_gib(shape: ModelShape, weights_present: bool) -> float:
    """Download (if needed) + a merged bf16 export + 3 LoRA checkpoints with optimizer state."""
    bf16 = 2 * shape.num_params / GIB
    checkpoints = 3 * 12 * shape.lora_params(16) / GIB
    return (0 if weights_present else bf16) + bf16 + checkpoints


def _fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _fmt_gib(x: float) -> str:
    return f"{x:.1f} GiB" if x >= 1 else f"{x:.2f} GiB"


def _hardware_checks(hw: HardwareInfo) -> list[Check]:
    checks: list[Check] = []
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
                    "the planner trains in fp16 (LLaMA Factory: fp16: true, bf16: false)",
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
    return checks


def run_doctor(
    model: str | None = None,
    output_dir: Path | str | None = None,
    *,
    setting: DoctorSetting | None = None,
    hardware: HardwareInfo | None = None,
    packages: dict[str, bool] | None = None,
) -> DoctorReport:
    """Inspect hardware + model + tokenizer and decide whether (and how) this machine can train.

    ``hardware`` may be injected (``HardwareInfo.from_dict``) to ask about another machine; ``packages`` (the
    planner's) defaults to what is installed here.
    """
    from thinktune.tiny_model import read_tiny_marker

    model = model or DEFAULT_MODEL
    setting = setting or DoctorSetting()
    hw = hardware or detect_hardware(output_dir or ".")
    pk = installed_packages() if packages is None else packages
    checks = _hardware_checks(hw)

    # -- model
    resolved = _resolve(model, checks)
    shape = resolved.dims
    marker = read_tiny_marker(resolved.local_dir) if resolved.local_dir else None
    is_tiny = marker is not None or (shape is not None and shape.num_params <= CPU_SMOKE_MAX_PARAMS)
    if shape is not None:
        checks.append(
            Check(
                "model size",
                "ok" if resolved.source in ("local", "hf-cache") and resolved.weights_present else "info",
                f"{model}: {shape.model_type}, {_fmt_params(shape.num_params)} parameters "
                f"(hidden {shape.hidden_size}, {shape.num_layers} layers, {shape.num_heads}/{shape.num_kv_heads} "
                f"heads, vocab {shape.vocab_size}{', tied' if shape.tie_word_embeddings else ''})"
                f"{' [thinktune tiny model]' if marker else ''}",
            )
        )
    if resolved.source != "missing":
        _check_tokenizer(resolved.tokenizer, shape, checks)  # failures become blockers below

    # -- plan: the same planner and memory model as `thinktune train`
    plans: dict[str, Plan] = {}
    estimates: dict[str, dict[str, float]] = {}
    fits: dict[str, bool] = {}
    max_mb: dict[str, int] = {}
    guidance: tuple[int, Plan] | None = None
    disk_ok = True
    if shape is not None:
        for m in METHODS:
            plans[m] = _plan(shape, hw, setting, m, pk)
            estimates[m], fits[m], max_mb[m] = _method_row(plans[m], m, shape)
        if hw.cuda_available and not fits["lora"]:
            guidance = multi_gpu_guidance(shape, hw, setting, pk)
        need = _disk_needed_gib(shape, resolved.weights_present)
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
        for w in plans["lora"].warnings:
            checks.append(Check("plan", "warn", w))

    # -- decision: the hardware verdict first (it is what people run the doctor for), then blockers
    blockers = [f"{c.name}: {c.detail}" for c in checks if c.status == "fail" and c.name != "disk"]
    if shape is None:
        hw_ok, rec, more = False, "cannot estimate memory without the model's config", ""
    else:
        hw_ok, rec, more = _verdict(model, hw, shape, is_tiny, plans, fits, guidance, pk)
    if not disk_ok:
        blockers.append("not enough free disk (see the 'disk' check)")
    if blockers:
        rec += ". Blocked by: " + "; ".join(blockers)
    lead = plans.get("qlora" if fits.get("qlora") and not fits.get("lora") else "lora")
    return DoctorReport(
        model=model,
        model_source=resolved.source,
        is_tiny=is_tiny,
        shape=shape.model_dump() if shape else None,
        params=shape.num_params if shape else None,
        setting=asdict(setting),
        plan=None
        if lead is None
        else {**lead.summary().model_dump(), "explanations": lead.explanations, "warnings": lead.warnings},
        estimates=estimates,
        fits=fits,
        max_micro_batch=max_mb,
        hardware=hw.to_dict(),
        multi_gpu=more,
        checks=checks,
        recommendation=rec,
        can_train=hw_ok and not blockers,
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
        mem = Table(title=f"planned peak memory per GPU (GiB) at seq_len {report.setting['seq_len']}")
        for col in ("method", "weights", "trainable", "activations", "total", "fits", "max mb"):
            mem.add_column(col, justify="right" if col not in ("method", "fits") else "left")
        labels = {"lora": "LoRA", "qlora": "QLoRA 4bit", "full": "full"}
        for m, e in report.estimates.items():
            mem.add_row(
                labels.get(m, m),
                f"{e['weights']:.2f}",
                f"{e['trainable_state']:.2f}",
                f"{e['activations']:.2f}",
                f"{e['total']:.2f}",
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
    micro_batch: int | None = None,
) -> int:
    """Entry point for ``thinktune doctor [--model M] [--json]``; returns the exit code."""
    report = run_doctor(model, output_dir, setting=DoctorSetting(seq_len=seq_len, micro_batch=micro_batch))
    if json_out:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        render_report(report)
    return report.exit_code
