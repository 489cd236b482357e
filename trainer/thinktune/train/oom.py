"""CUDA out-of-memory recovery.

When a worker hits CUDA OOM it writes ``oom.json`` (``{"rank", "step", "message", "micro_batch"}``) into
``output_dir/.thinktune/`` and exits with ``contract.EXIT_OOM``. ``run_with_oom_retry`` then

1. halves the micro-batch and multiplies gradient accumulation so the global batch stays the same
   (micro-batch 3 -> 1 with accumulation x3; the product micro x accum is preserved exactly),
2. turns gradient checkpointing on if it was off (first retry: both at once, since checkpointing is the
   bigger lever),
3. relaunches; LLaMA Factory resumes from the last checkpoint in ``output_dir`` (never overwrite_output_dir),

up to ``spec.maxOomRetries`` times. Every retry is a record ``{"attempt", "at_step", "from": {...}, "to": {...},
"resumed_from", "message"}`` kept in the report and in ``FineTuneJobStatus.restarts.oom``.

Testing without a GPU: ``THINKTUNE_INJECT_OOM_AT_STEP=N`` makes the monitoring callback raise
``torch.OutOfMemoryError`` at optimizer step N while the micro-batch is above
``THINKTUNE_INJECT_OOM_ABOVE_MICRO_BATCH`` (default 1), which simulates a memory ceiling: the retry with a
smaller micro-batch then passes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinktune.contract import EXIT_OOM

INJECT_STEP_ENV = "THINKTUNE_INJECT_OOM_AT_STEP"
INJECT_ABOVE_ENV = "THINKTUNE_INJECT_OOM_ABOVE_MICRO_BATCH"
MARKER_NAME = "oom.json"


def marker_path(output_dir: str | os.PathLike[str]) -> Path:
    return Path(output_dir) / ".thinktune" / MARKER_NAME


def write_marker(output_dir: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    p = marker_path(output_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    rank = info.get("rank", 0)
    # several ranks may OOM at once: one file per rank, the launcher reads them all
    target = p.with_name(f"oom-rank{rank}.json")
    target.write_text(json.dumps(info))
    return target


def read_markers(output_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    d = marker_path(output_dir).parent
    out = []
    for f in sorted(d.glob("oom-rank*.json")) if d.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def clear_markers(output_dir: str | os.PathLike[str]) -> None:
    d = marker_path(output_dir).parent
    for f in d.glob("oom-rank*.json") if d.is_dir() else []:
        f.unlink(missing_ok=True)


def injection_step(env: dict[str, str] | None = None) -> int | None:
    env = dict(os.environ) if env is None else env
    v = env.get(INJECT_STEP_ENV)
    return int(v) if v else None


def should_inject(step: int, micro_batch: int, env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    at = injection_step(env)
    if at is None:
        return False
    above = int(env.get(INJECT_ABOVE_ENV, "1"))
    return step >= at and micro_batch > above


def shrink(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Next (args, change) after an OOM, or None when nothing is left to shrink (micro-batch 1 with
    gradient checkpointing already on)."""
    mb = int(args.get("per_device_train_batch_size", 1))
    accum = int(args.get("gradient_accumulation_steps", 1))
    gc_on = not bool(args.get("disable_gradient_checkpointing", False))
    if mb <= 1 and gc_on:
        return None
    new = dict(args)
    if mb > 1:
        new_mb = mb // 2
        # keep micro x accum exact: if mb is odd, fall back to the largest divisor of mb below it
        while new_mb > 1 and (mb * accum) % new_mb:
            new_mb -= 1
        new["per_device_train_batch_size"] = new_mb
        new["gradient_accumulation_steps"] = mb * accum // new_mb
        if "per_device_eval_batch_size" in new:
            new["per_device_eval_batch_size"] = max(1, min(int(new["per_device_eval_batch_size"]), new_mb))
    if not gc_on:
        new["disable_gradient_checkpointing"] = False
    change = {
        "from": {"micro_batch": mb, "grad_accum": accum, "gradient_checkpointing": gc_on},
        "to": {
            "micro_batch": int(new["per_device_train_batch_size"]),
            "grad_accum": int(new["gradient_accumulation_steps"]),
            "gradient_checkpointing": not bool(new.get("disable_gradient_checkpointing", False)),
        },
    }
    return new, change


@dataclass
class OomOutcome:
    result: Any  # the last LaunchResult
    args: dict[str, Any]  # the arguments of the last attempt
    retries: list[dict[str, Any]] = field(default_factory=list)
    exhausted: bool = False


def run_with_oom_retry(
    args: dict[str, Any],
    launch: Callable[[dict[str, Any], int], Any],
    *,
    max_retries: int,
    output_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    on_retry: Callable[[dict[str, Any]], None] | None = None,
) -> OomOutcome:
    """Run ``launch(args, attempt)`` (returns an object with ``returncode`` and ``resumed_from``) and retry
    after OOM. The result's ``returncode == EXIT_OOM`` or an OOM marker means out of memory."""
    retries: list[dict[str, Any]] = []
    attempt = 0
    current = dict(args)
    while True:
        clear_markers(output_dir)
        result = launch(current, attempt)
        markers = read_markers(output_dir)
        oom = result.returncode == EXIT_OOM or (result.returncode != 0 and bool(markers))
        if not oom:
            return OomOutcome(result=result, args=current, retries=retries)
        at_step = min((m.get("step", 0) for m in markers), default=None)
        message = markers[0].get("message", "CUDA out of memory") if markers else "CUDA out of memory"
        nxt = shrink(current)
        if len(retries) >= max_retries or nxt is None:
            why = (
                "maxOomRetries reached"
                if len(retries) >= max_retries
                else "micro-batch is 1 and gradient checkpointing is on: nothing left to shrink"
            )
            log(
                f"[oom] out of memory at step {at_step}; giving up ({why}). Suggestion: shorter cutoffLen, "
                "method qlora, strategy zero3_offload, or bigger GPUs."
            )
            retries_out = OomOutcome(result=result, args=current, retries=retries, exhausted=True)
            return retries_out
        current, change = nxt
        attempt += 1
        record = {
            "attempt": attempt,
            "at_step": at_step,
            **change,
            "message": str(message)[:300],
            "ranks": sorted({m.get("rank", 0) for m in markers}),
        }
        retries.append(record)
        log(
            f"[oom] CUDA out of memory at step {at_step} (attempt {attempt - 1}); retry {attempt}/{max_retries}: "
            f"micro-batch {change['from']['micro_batch']} -> {change['to']['micro_batch']}, accumulation "
            f"{change['from']['grad_accum']} -> {change['to']['grad_accum']}, gradient checkpointing "
            f"{'on' if change['to']['gradient_checkpointing'] else 'off'}; resuming from the last checkpoint."
        )
        if on_retry:
            on_retry(record)
