"""The contract between the workload (a pod running `thinktune ...`) and the operator, in one typed place.

Everything that crosses that seam is defined here and nowhere else:

- exit codes (how the operator tells a GPU failure from a bug),
- the environment variables a pod actually reads (the operator's builders set exactly these),
- the termination message: one JSON object that a stage writes to the pod's termination log when it ends
  (a stage result on success, a failure verdict otherwise) and the operator reads from the pod status,
- the plan summary (``FineTuneJobStatus.plan``),
- the trainer's Prometheus metric names and how they map onto ``FineTuneJobStatus.progress``.

Writers (``thinktune.runner``, ``thinktune.train.failures``, the metrics exporter) and readers
(``thinktune_operator.gpu_health``, the operator's planners, ``thinktune_operator.progress``) import from here,
so a renamed key fails the contract tests (tests/unit/test_contract.py) instead of passing silently. This module
needs only pydantic and the standard library: the operator image imports it without torch.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from thinktune.spec import DatasetCounts, ExportArtifact

# ---------------------------------------------------------------------------------------------------------
# Exit codes

EXIT_OK = 0
EXIT_APP_FAILURE = 1  # bad data, a bug, a config error: counted against runPolicy.backoffLimit
EXIT_USAGE = 2  # the user's input is wrong (one clear line was printed); retrying cannot help
EXIT_GPU_FAILURE = 75  # EX_TEMPFAIL: the device or its link broke; counted against infraFailureLimit
EXIT_OOM = 76  # CUDA out of memory inside a worker; the launcher retries with a smaller micro-batch

# ---------------------------------------------------------------------------------------------------------
# Environment a workload pod reads (the operator's builders set these and no others of ours)

ENV_TERMINATION_LOG = "THINKTUNE_TERMINATION_LOG"  # where the termination message goes
ENV_METRICS_PORT = "THINKTUNE_METRICS_PORT"  # Prometheus port of local rank 0 (rank r serves port + r)
ENV_NODE_NAME = "NODE_NAME"  # downward API: spec.nodeName, recorded in failure messages
ENV_POD_NAME = "POD_NAME"  # downward API: metadata.name
ENV_POD_NAMESPACE = "POD_NAMESPACE"  # downward API: metadata.namespace (metric labels)
# torchrun's rendezvous, read by the launcher (thinktune.train.launcher) and the planner's world view
ENV_NNODES = "NNODES"
ENV_NODE_RANK = "NODE_RANK"
ENV_NPROC_PER_NODE = "NPROC_PER_NODE"
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_FORCE_TORCHRUN = "FORCE_TORCHRUN"
# compiled kernels (Triton, Inductor) shared by every job that mounts it; unset: the job's output volume
ENV_KERNEL_CACHE = "THINKTUNE_KERNEL_CACHE"
# where the kernel cache sits under a directory: a job's output dir (its own), or a PVC's root (the operator's
# shared one, ENV_KERNEL_CACHE)
KERNEL_CACHE_PATH = ".thinktune/kernel-cache"

POD_ENV = (
    ENV_TERMINATION_LOG,
    ENV_METRICS_PORT,
    ENV_NODE_NAME,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_NNODES,
    ENV_NODE_RANK,
    ENV_NPROC_PER_NODE,
    ENV_MASTER_ADDR,
    ENV_MASTER_PORT,
    ENV_FORCE_TORCHRUN,
    ENV_KERNEL_CACHE,
)

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message


def truthy(value: str | None) -> bool:
    """How every boolean environment variable of ours is read."""
    return (value or "").strip().lower() in ("1", "true", "y", "yes", "on")


# ---------------------------------------------------------------------------------------------------------
# Termination messages


class ContractModel(BaseModel):
    """camelCase on the wire (like the CR status it feeds), snake_case in Python; unknown keys are an error, so
    a writer that drifts from this module fails its round-trip test."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


FailureCategory = Literal["gpu_failure", "oom", "application"]
FAILURE_REASON: dict[str, str] = {
    "gpu_failure": "GPUFailure",
    "oom": "OutOfMemory",
    "application": "ApplicationError",
}
SEVERITY: dict[str, int] = {"gpu_failure": 2, "oom": 1, "application": 0}


class FailureMessage(ContractModel):
    """A stage ended with an error; ``category`` decides which budget the operator charges."""

    kind: Literal["failure"] = "failure"
    reason: Literal["GPUFailure", "OutOfMemory", "ApplicationError", "InvalidInput"]
    category: FailureCategory
    detail: str = Field(default="", description="the short classification, e.g. 'uncorrectable ECC error'")
    gpu: str | None = None
    node: str | None = None
    pod: str | None = None
    rank: int | None = None
    exit_code: int
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    message: str = Field(default="", description="the error text (tail), for status.message and the Event")


class PlanSummary(ContractModel):
    """The planner's decisions, as they appear in FineTuneJobStatus.plan (and `kubectl get ftj -o yaml`)."""

    strategy: str
    device: str
    precision: str
    method: str
    world_size: int
    nnodes: int
    nproc_per_node: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    gradient_checkpointing: bool
    liger_kernel: bool
    lora_rank: int | None = None
    lora_alpha: int | None = None
    learning_rate: float | None = None  # absent in statuses written before the planner chose it
    cutoff_len: int
    total_steps: int | None = None
    memory_estimate_gib: float | None = None


class DatasetResult(ContractModel):
    """A DatasetBuild pod finished."""

    kind: Literal["dataset"] = "dataset"
    counts: DatasetCounts
    output_path: str
    report_path: str


class TrainResult(ContractModel):
    """A FineTuneJob's rank-0 pod finished training (and evaluation, when enabled)."""

    kind: Literal["train"] = "train"
    adapter_path: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    oom_retries: int = 0
    plan: PlanSummary | None = None
    report_path: str | None = None


class ExportResult(ContractModel):
    """A ModelExport pod finished."""

    kind: Literal["export"] = "export"
    artifacts: list[ExportArtifact] = Field(default_factory=list)
    report_path: str | None = None


TerminationMessage = Annotated[
    FailureMessage | DatasetResult | TrainResult | ExportResult, Field(discriminator="kind")
]
_MESSAGE = TypeAdapter(TerminationMessage)


def termination_log_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Where to write: ``path``, else $THINKTUNE_TERMINATION_LOG, else /dev/termination-log if it exists
    (a plain local run has neither and writes nothing)."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_TERMINATION_LOG):
        return Path(os.environ[ENV_TERMINATION_LOG])
    p = Path(DEFAULT_TERMINATION_LOG)
    return p if p.exists() else None


def encode_termination_message(msg: TerminationMessage) -> str:
    """Compact JSON that fits the kubelet's 4 KiB: a failure's text is cut from the front (the end of an error
    says what broke); a result drops its metrics before anything the operator needs to act on."""
    text = msg.to_json()
    if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
        return text
    if isinstance(msg, FailureMessage):
        over = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
        keep = max(0, len(msg.message.encode()) - over - 64)
        cut = msg.message.encode()[-keep:].decode("utf-8", "ignore") if keep else ""
        return msg.model_copy(update={"message": cut}).to_json()
    trimmed = msg
    for field in ("metrics", "plan", "artifacts"):
        if field in type(msg).model_fields and len(trimmed.to_json().encode()) > TERMINATION_MESSAGE_LIMIT:
            default = type(msg).model_fields[field].get_default(call_default_factory=True)
            trimmed = trimmed.model_copy(update={field: default})
    return trimmed.to_json()


def write_termination_message(
    msg: TerminationMessage, path: str | os.PathLike[str] | None = None
) -> Path | None:
    """Write ``msg`` unless the file already holds a more severe failure of this attempt: when one rank hits a
    GPU failure, the others often die next with a collective error, and that must not hide the GPU failure.
    A missing or read-only log never fails a finished stage (returns None)."""
    target = termination_log_path(path)
    if target is None:
        return None
    old = read_termination_message(target.read_text(errors="replace")) if target.is_file() else None
    if (
        isinstance(old, FailureMessage)
        and isinstance(msg, FailureMessage)
        and SEVERITY[old.category] > SEVERITY[msg.category]
    ):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(encode_termination_message(msg), encoding="utf-8")
    except OSError:
        return None
    return target


def read_termination_message(text: str | None) -> TerminationMessage | None:
    """The operator's reader. With terminationMessagePolicy FallbackToLogsOnError the kubelet puts the log tail
    there when the file is empty, so the last JSON line wins; anything that is not one of our messages -> None."""
    if not text or not text.strip():
        return None
    candidates = [text.strip()] + [
        ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip().startswith("{")
    ]
    for c in candidates:
        try:
            return _MESSAGE.validate_python(json.loads(c))
        except (ValueError, ValidationError):
            continue
    return None


# ---------------------------------------------------------------------------------------------------------
# Prometheus: the trainer's metric names (thinktune_train_*) and the progress they feed

TRAIN_METRIC_PREFIX = "thinktune_train_"
# gauge name (without the prefix) -> help text. The exporter registers exactly these.
TRAIN_GAUGES: dict[str, str] = {
    "step": "optimizer steps done",
    "total_steps": "planned optimizer steps",
    "progress_ratio": "step / total_steps",
    "epoch": "current epoch",
    "loss": "latest training loss",
    "eval_loss": "latest validation loss",
    "learning_rate": "current learning rate",
    "grad_norm": "latest gradient norm",
    "tokens_per_second": "non-padding tokens per second over all ranks",
    "tokens_total": "non-padding tokens trained so far",
    "eta_seconds": "estimated seconds to finish (training and evaluation)",
    "gpu_memory_allocated_bytes": "torch.cuda.memory_allocated of this rank",
    "gpu_memory_reserved_bytes": "torch.cuda.memory_reserved of this rank",
    "gpu_memory_peak_bytes": "torch.cuda.max_memory_allocated of this rank",
    "gpu_utilization_ratio": "GPU utilisation of this rank (NVML), 0..1",
    "cpu_rss_bytes": "resident memory of this process",
    "teacher_forced_char_accuracy": "share of Chinese characters predicted right under teacher forcing",
    "teacher_forced_term_accuracy": "share of glossary terms predicted right under teacher forcing",
    "token_accuracy": "share of answer tokens predicted right under teacher forcing",
    "oom_retries": "OOM retries so far",
    "attempt": "gang attempt",
    "up": "1 while training runs",
}
TRAIN_ANOMALIES = "anomalies"  # a Counter: thinktune_train_anomalies_total{kind=...}
METRIC_LABELS = ("job", "namespace", "rank")


def train_metric(name: str) -> str:
    """Full Prometheus name of a trainer gauge; an unknown name is a programming error."""
    if name not in TRAIN_GAUGES and name != TRAIN_ANOMALIES:
        raise KeyError(f"{name!r} is not a trainer metric (thinktune.contract.TRAIN_GAUGES)")
    return TRAIN_METRIC_PREFIX + name


ANOMALIES_TOTAL = train_metric(TRAIN_ANOMALIES) + "_total"
ANOMALY_KINDS = ("loss_spike", "nan", "divergence", "plateau", "memory_growth")

# FineTuneJobStatus.progress field -> the one gauge it is read from
PROGRESS_FROM_METRIC: dict[str, str] = {
    "step": train_metric("step"),
    "totalSteps": train_metric("total_steps"),
    "epoch": train_metric("epoch"),
    "loss": train_metric("loss"),
    "evalLoss": train_metric("eval_loss"),
    "learningRate": train_metric("learning_rate"),
    "tokensPerSecond": train_metric("tokens_per_second"),
    "etaSeconds": train_metric("eta_seconds"),
}

# The pod annotation carrying the same progress as JSON (the sandbox's kwok pods run no process, so tests write
# progress there): {"step": .., "totalSteps": .., ..., "anomalies": {kind: count}}.
PROGRESS_ANNOTATION = "thinktune.io/progress"
