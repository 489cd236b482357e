"""Tell a failing GPU from a bug: classify the exception that ends training.

- ``gpu_failure``: the device or its link is broken (ECC/Xid errors, "GPU has fallen off the bus", device
  lost, "unspecified launch failure", NCCL "unhandled cuda error", CUDA "unknown error", ...). The process
  exits with ``contract.EXIT_GPU_FAILURE`` after writing a ``contract.FailureMessage`` (reason GPUFailure, the
  GPU index, $NODE_NAME) to the termination log. The operator counts it against ``infraFailureLimit``, avoids
  the node/GPU and restarts the gang from the last checkpoint.
- ``oom``: CUDA out of memory. Handled inside the trainer (``thinktune.train.oom``): exit ``contract.EXIT_OOM``
  with a marker file, and the launcher retries with a smaller micro-batch. If retries are exhausted the job
  exits ``contract.EXIT_APP_FAILURE``.
- ``application``: everything else (bad data, bugs, config errors): exit ``contract.EXIT_APP_FAILURE``,
  failure message with reason ApplicationError; counted against ``backoffLimit``.

The message format, its size limit and the rule that a GPU failure is never overwritten by a later, less severe
failure live in thinktune/contract.py; this module only decides what the failure was.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from thinktune import contract
from thinktune.contract import SEVERITY, FailureCategory

Category = FailureCategory

# Substrings (lower-cased) of errors that mean the hardware, its driver state or its interconnect is broken.
# Real messages: CUDA runtime (cudaErrorECCUncorrectable, cudaErrorLaunchFailure, cudaErrorDevicesUnavailable,
# cudaErrorUnknown), NVML, the kernel driver's Xid log lines, NCCL's wrapping of CUDA errors.
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    ("uncorrectable ecc error", "uncorrectable ECC error"),
    ("ecc error", "ECC error"),
    ("double bit error", "double-bit ECC error"),
    ("cudaerroreccuncorrectable", "uncorrectable ECC error"),
    ("fallen off the bus", "GPU has fallen off the bus"),
    ("gpu is lost", "GPU is lost"),
    ("device lost", "device lost"),
    ("unspecified launch failure", "unspecified launch failure"),
    ("cudaerrorlaunchfailure", "unspecified launch failure"),
    ("unhandled cuda error", "NCCL unhandled cuda error"),
    ("cuda error: unknown error", "CUDA unknown error"),
    ("cudaerrorunknown", "CUDA unknown error"),
    ("busy or unavailable", "CUDA device busy or unavailable"),
    ("cudaerrordevicesunavailable", "CUDA device busy or unavailable"),
    ("no cuda-capable device is detected", "no CUDA-capable device detected"),
    ("cuda driver initialization failed", "CUDA driver initialisation failed"),
    ("nvml_error_gpu_is_lost", "GPU is lost (NVML)"),
    ("gpu requires reset", "GPU requires reset"),
    ("row remapping failure", "row remapping failure"),
    ("uncontained ecc", "uncontained ECC error"),
    ("nvlink error", "NVLink error"),
    ("hardware stack error", "hardware stack error"),
    ("an illegal instruction was encountered", "illegal instruction (often a faulty GPU)"),
)
# "NVRM: Xid (PCI:0000:3b:00): 79, pid=..." (kernel log) or "Xid 79" / "Xid: 79"
_XID = re.compile(r"\bxid\s*(?:\([^)]*\))?\s*:?\s*(\d+)", re.IGNORECASE)
# Xids that mean hardware trouble (NVIDIA's Xid catalogue; 13/31/43/45 are usually application faults): 48 DBE ECC, 63/64 row remap, 74 NVLink, 79 fallen
# off the bus, 92 high single-bit ECC, 94/95 contained/uncontained ECC, 119/120 GSP errors, 140 ECC unrecovered.
GPU_XIDS = {48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 119, 120, 123, 140}
_OOM_PATTERNS = (
    "cuda out of memory",
    "outofmemoryerror",
    "cuda error: out of memory",
    "cudaerrormemoryallocation",
    "cublas_status_alloc_failed",
    "hip out of memory",
    "npu out of memory",
)
_GPU_INDEX = re.compile(r"(?:cuda:|device[ =:#]|gpu[ =:#])\s*(\d+)", re.IGNORECASE)


def _text(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        parts = [f"{type(error).__module__}.{type(error).__name__}: {error}"]
        cause = error.__cause__ or error.__context__
        depth = 0
        while cause is not None and depth < 5:
            parts.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
            depth += 1
        return "\n".join(parts)
    return str(error)


def classify(error: BaseException | str) -> tuple[Category, str]:
    """(category, short reason) of an exception or error text."""
    if isinstance(error, BaseException):
        try:
            import torch

            if isinstance(error, torch.OutOfMemoryError):
                return "oom", "CUDA out of memory"
        except Exception:  # pragma: no cover - torch missing
            pass
    text = _text(error)
    low = text.lower()
    for p in _OOM_PATTERNS:
        if p in low:
            return "oom", "CUDA out of memory"
    for p, reason in _GPU_PATTERNS:
        if p in low:
            return "gpu_failure", reason
    for mx in _XID.finditer(text):
        if int(mx.group(1)) in GPU_XIDS:
            return "gpu_failure", f"Xid {mx.group(1)}"
    return "application", (text.strip().splitlines() or ["error"])[-1][:200]


def is_gpu_failure(error: BaseException | str) -> bool:
    return classify(error)[0] == "gpu_failure"


def gpu_index(error: BaseException | str, env: dict[str, str] | None = None) -> str | None:
    """The GPU named in the error ('cuda:3', 'device 3'), else this process's LOCAL_RANK device."""
    m = _GPU_INDEX.search(_text(error))
    if m:
        return m.group(1)
    env = dict(os.environ) if env is None else env
    if "LOCAL_RANK" in env:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        lr = int(env["LOCAL_RANK"])
        if visible:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            if lr < len(ids):
                return ids[lr]
        return str(lr)
    return None


def exit_code_for(category: Category) -> int:
    return {"gpu_failure": contract.EXIT_GPU_FAILURE, "oom": contract.EXIT_OOM}.get(
        category, contract.EXIT_APP_FAILURE
    )


def failure_message(
    error: BaseException | str, *, env: dict[str, str] | None = None
) -> contract.FailureMessage:
    """The termination message of a failure (the text keeps its end: that says what broke)."""
    env = dict(os.environ) if env is None else env
    category, reason = classify(error)
    return contract.FailureMessage(
        reason=contract.FAILURE_REASON[category],
        category=category,
        detail=reason,
        gpu=gpu_index(error, env) if category != "application" else None,
        node=env.get(contract.ENV_NODE_NAME),
        pod=env.get(contract.ENV_POD_NAME) or env.get("HOSTNAME"),
        rank=int(env["RANK"]) if env.get("RANK", "").isdigit() else None,  # torchrun's global rank
        exit_code=exit_code_for(category),
        message=_text(error),
    )


def handle_fatal(error: BaseException, *, termination_log: str | os.PathLike[str] | None = None) -> int:
    """Classify, write the termination message (not for OOM: the launcher retries) and return the exit code."""
    msg = failure_message(error)
    if msg.category != "oom":
        contract.write_termination_message(msg, termination_log)
    return msg.exit_code


# ---------------------------------------------------------------------------------------------------------
# Per-rank exit records: torchrun exits 1 whatever its children's codes were, so each rank leaves its verdict in
# output_dir/.thinktune/exit-rank<R>.json and the launcher takes the most severe one *of its own node's ranks*:
# the pods of a multi-node gang share output_dir, and a healthy node whose rank only lost its peer must not
# report the peer's GPU failure as its own (the operator would then blame, and avoid, the healthy node).


def exit_record_dir(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / ".thinktune"


def write_exit_record(
    output_dir: str | os.PathLike[str], *, rank: int, code: int, category: Category, reason: str
) -> Path:
    d = exit_record_dir(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"exit-rank{rank}.json"
    p.write_text(
        json.dumps(
            {
                "rank": rank,
                "code": code,
                "category": category,
                "reason": reason,
                "node": os.environ.get("NODE_NAME"),
                "gpu": gpu_index(reason) if category != "application" else None,
            }
        )
    )
    return p


_RECORD = re.compile(r"^exit-rank(\d+)\.json$")


def _record_files(output_dir: str | os.PathLike[str], ranks: range | None) -> list[Path]:
    """The exit-record files in output_dir, only those of global ranks in ``ranks`` when given."""
    out = []
    for f in sorted(exit_record_dir(output_dir).glob("exit-rank*.json")):
        m = _RECORD.match(f.name)
        if m and (ranks is None or int(m.group(1)) in ranks):
            out.append(f)
    return out


def read_exit_records(output_dir: str | os.PathLike[str], ranks: range | None = None) -> list[dict[str, Any]]:
    out = []
    for f in _record_files(output_dir, ranks):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return out


def clear_exit_records(output_dir: str | os.PathLike[str], ranks: range | None = None) -> None:
    for f in _record_files(output_dir, ranks):
        f.unlink(missing_ok=True)


def most_severe(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(
        records, key=lambda r: (SEVERITY.get(r.get("category", ""), 0), -int(r.get("rank", 0))), default=None
    )
