"""Live monitoring of a LLaMA Factory run: the transformers ``TrainerCallback`` that wires the pieces together.

Per logging step it records loss, learning rate, grad norm, tokens/s (all ranks), ETA and memory per rank
(CUDA: allocated / reserved / peak of this rank's device; CPU: process RSS); per evaluation the validation
loss and the teacher-forced quality of ``thinktune.train.scoring``. Both go through the anomaly detector
(``thinktune.train.anomalies``). Where they go:

- ``output_dir/metrics.jsonl`` (rank 0): one JSON object per event, ``{"type", "time", "step", ...}``; types
  ``begin``, ``train`` (``loss, learning_rate, grad_norm, tokens_per_second, tokens_seen, eta_seconds, epoch,
  memory: [{rank, allocated_bytes, reserved_bytes, peak_bytes, rss_bytes}]``), ``eval`` (``eval_loss`` plus
  ``scoring.summarize_counts``), ``warning`` (an ``Anomaly``), ``checkpoint``, ``train_summary``, ``end``.
  ``thinktune.train.report`` reads it.
- Prometheus (every rank, ``thinktune.train.exporter``): the gauges of ``thinktune.contract.TRAIN_GAUGES``.
- the console (rank 0): ``@@thinktune`` events (``thinktune.train.console``), rendered by the launcher.

Test hooks: ``THINKTUNE_INJECT_OOM_AT_STEP`` (``thinktune.train.oom``) and ``THINKTUNE_INJECT_FAILURE``
("STEP:MESSAGE": raise ``RuntimeError(MESSAGE)`` at optimizer step STEP, on global rank
``THINKTUNE_INJECT_FAILURE_RANK`` only when set) exercise the OOM-retry and GPU-failure exit paths on CPU.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from thinktune.data.glossary import surface_forms_longest_first
from thinktune.train import oom as oom_mod
from thinktune.train.anomalies import Anomaly, AnomalyDetector
from thinktune.train.console import encode_event
from thinktune.train.exporter import PromMetrics
from thinktune.train.scoring import TokenBytes, merge_counts, new_counts, score_model, summarize_counts

INJECT_FAILURE_ENV = "THINKTUNE_INJECT_FAILURE"
INJECT_FAILURE_RANK_ENV = "THINKTUNE_INJECT_FAILURE_RANK"  # only this global rank fails (one GPU of a gang)

# metrics.jsonl field of a train/eval record -> the gauge it sets
_TRAIN_GAUGES = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "tokens_per_second": "tokens_per_second",
    "tokens_seen": "tokens_total",
    "eta_seconds": "eta_seconds",
    "epoch": "epoch",
    "step": "step",
}
_MEMORY_GAUGES = {
    "allocated_bytes": "gpu_memory_allocated_bytes",
    "reserved_bytes": "gpu_memory_reserved_bytes",
    "peak_bytes": "gpu_memory_peak_bytes",
    "utilization": "gpu_utilization_ratio",
    "rss_bytes": "cpu_rss_bytes",
}
_EVAL_GAUGES = ("eval_loss", "teacher_forced_char_accuracy", "teacher_forced_term_accuracy", "token_accuracy")


def memory_snapshot(rank: int) -> dict[str, Any]:
    snap: dict[str, Any] = {"rank": rank}
    try:
        import psutil

        snap["rss_bytes"] = psutil.Process().memory_info().rss
    except Exception:  # noqa: BLE001 - memory is best effort; a missing number is shown as n/a
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            dev = torch.cuda.current_device()
            snap.update(
                {
                    "device": dev,
                    "allocated_bytes": torch.cuda.memory_allocated(dev),
                    "reserved_bytes": torch.cuda.memory_reserved(dev),
                    "peak_bytes": torch.cuda.max_memory_allocated(dev),
                }
            )
            try:
                snap["utilization"] = torch.cuda.utilization(dev) / 100.0
            except Exception:  # noqa: BLE001 - pynvml not installed
                pass
    except Exception:  # noqa: BLE001 - see above
        pass
    return snap


def _dist() -> tuple[int, int, bool]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), True
    except Exception:  # noqa: BLE001 - no torch.distributed: a single process
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), False


def _all_gather(obj: Any) -> list[Any]:
    rank, world, init = _dist()
    if not init or world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


class ThinktuneCallback(TrainerCallback):
    def __init__(
        self,
        *,
        output_dir: str | os.PathLike[str],
        job: str = "local",
        namespace: str = "default",
        metrics_port: int | None = None,
        loss_spike_factor: float = 3.0,
        plateau_evals: int = 5,
        terms: list[str] | None = None,
        total_steps_hint: int | None = None,
        progress: bool = True,
        attempt: int = 0,
        oom_retries: int = 0,
        max_eval_samples: int = 32,
        rank_fingerprint: bool = False,
        quality_metrics: bool = True,
    ):
        self.output_dir = Path(output_dir)
        self.job = job
        self.namespace = namespace
        self.metrics_port = metrics_port
        self.detector = AnomalyDetector(spike_factor=loss_spike_factor, plateau_evals=plateau_evals)
        self.terms = (
            sorted(terms, key=lambda s: (-len(s), s)) if terms is not None else surface_forms_longest_first()
        )
        self.total_steps = total_steps_hint
        self.progress_enabled = progress
        self.attempt = attempt
        self.oom_retries = oom_retries
        self.max_eval_samples = max_eval_samples
        self.rank_fingerprint = rank_fingerprint
        self.quality_metrics = quality_metrics
        self.rank, self.world, _ = _dist()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.prom: PromMetrics | None = None
        self.t0 = time.time()
        self.step0 = 0
        self.eval_count, self.eval_seconds = 0, 0.0  # evaluations so far and their time (for the ETA)
        self.last_log: tuple[float, float] | None = None  # (time, tokens_seen)
        self._lock = threading.Lock()
        self._token_bytes: TokenBytes | None = None
        self.current_step: int | None = None  # the step an OOM hit (read by the worker for the OOM marker)

    # -- plumbing -------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _write(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (rank 0 only: one file per job)."""
        if not self.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with self._lock, open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _emit(self, kind: str, record: dict[str, Any]) -> None:
        """One console event for the launcher's display (thinktune.train.console)."""
        if self.is_main and self.progress_enabled:
            print(encode_event(kind, record), flush=True)

    def _gauges(self, values: dict[str, Any], names: dict[str, str]) -> None:
        if self.prom:
            for field, gauge in names.items():
                self.prom.set(gauge, values.get(field))

    def _anomalies(self, found: list[Anomaly]) -> None:
        for a in found:
            if self.prom:
                self.prom.anomaly(a.kind)
            self._write({"type": "warning", **a.record()})
            self._emit("warning", a.record())

    # -- events ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.step0 = int(state.global_step)
        self.total_steps = int(state.max_steps) if state.max_steps else self.total_steps
        self.last_log = (self.t0, float(getattr(state, "num_input_tokens_seen", 0) or 0))
        if self.metrics_port is not None:
            port = self.metrics_port + self.local_rank if self.metrics_port else 0
            self.prom = PromMetrics(job=self.job, namespace=self.namespace, rank=self.rank, port=port)
            self.prom.set("total_steps", self.total_steps)
            self.prom.set("attempt", self.attempt)
            self.prom.set("oom_retries", self.oom_retries)
            self.prom.set("up", 1)
        rec = {
            "type": "begin",
            "step": self.step0,
            "total_steps": self.total_steps,
            "attempt": self.attempt,
            "world_size": self.world,
            "resumed": self.step0 > 0,
            "micro_batch": args.per_device_train_batch_size,
            "grad_accum": args.gradient_accumulation_steps,
            # LLaMA Factory turns checkpointing on in the model (disable_gradient_checkpointing), not
            # through TrainingArguments.gradient_checkpointing
            "gradient_checkpointing": bool(
                getattr(kwargs.get("model"), "is_gradient_checkpointing", False)
                or getattr(args, "gradient_checkpointing", False)
            ),
        }
        self._write(rec)
        self._emit("begin", rec)

    def on_step_begin(self, args, state, control, **kwargs):
        self.current_step = int(state.global_step) + 1  # the step an OOM would hit

    def on_step_end(self, args, state, control, **kwargs):
        step = int(state.global_step)
        self.current_step = step
        self._inject_failures(step, int(args.per_device_train_batch_size))
        if self.prom:
            self.prom.set("step", step)

    def _inject_failures(self, step: int, micro_batch: int) -> None:
        if oom_mod.should_inject(step, micro_batch):
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (INJECTED by {oom_mod.INJECT_STEP_ENV}={step}: "
                f"simulated for testing; micro-batch {micro_batch})"
            )
        fail = os.environ.get(INJECT_FAILURE_ENV)
        only_rank = os.environ.get(INJECT_FAILURE_RANK_ENV)
        if fail and (only_rank is None or only_rank == os.environ.get("RANK", "0")):
            at, _, message = fail.partition(":")
            if step >= int(at):
                # testing without a GPU: raise the error text a failing GPU produces (INJECTED)
                raise RuntimeError(message or "CUDA error: unspecified launch failure (INJECTED)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        step = int(state.global_step)
        if any(k.startswith("eval_") for k in logs):
            return  # handled in on_evaluate
        if "loss" not in logs:
            if "train_loss" in logs:  # the end-of-training summary: average loss, runtime
                numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                self._write({"type": "train_summary", "step": step, **numbers})
            return
        now = time.time()
        tokens = float(logs.get("num_input_tokens_seen", getattr(state, "num_input_tokens_seen", 0)) or 0)
        tps = None
        if self.last_log and now > self.last_log[0] and tokens > self.last_log[1]:
            tps = (tokens - self.last_log[1]) / (now - self.last_log[0])
        self.last_log = (now, tokens)
        done = step - self.step0
        total = self.total_steps
        eta = self._eta(args, now, step, done, total)
        mem = memory_snapshot(self.rank)
        try:
            mems = _all_gather(mem)
        except Exception:  # noqa: BLE001 - a broken collective shows up in training itself
            mems = [mem]
        rec = {
            "type": "train",
            "step": step,
            "total_steps": total,
            "epoch": logs.get("epoch"),
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_seen": tokens,
            "tokens_per_second": round(tps, 2) if tps else None,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "memory": mems,
        }
        self._write(rec)
        self._gauges(rec, _TRAIN_GAUGES)
        self._gauges(mem, _MEMORY_GAUGES)
        if self.prom and total:
            self.prom.set("progress_ratio", step / total)
        loss, gn = rec["loss"], rec["grad_norm"]
        self._anomalies(
            self.detector.on_train_log(
                step,
                None if loss is None else float(loss),
                None if gn is None else float(gn),
                mem.get("allocated_bytes", mem.get("rss_bytes")),
            )
        )
        self._emit("train", rec)

    def _eta(self, args, now: float, step: int, done: int, total: int | None) -> float | None:
        """Seconds left: the remaining steps at the measured time per step (evaluation excluded), plus the
        evaluations still to come at the measured time per evaluation (an ETA of 0 followed by minutes of
        evaluation is what this avoids)."""
        if not total or done <= 0:
            return None
        per_step = max(0.0, now - self.t0 - self.eval_seconds) / done
        every = getattr(args, "eval_steps", None)
        evals_left = 0
        if (
            self.eval_count
            and every
            and str(getattr(args, "eval_strategy", "no")) not in ("no", "IntervalStrategy.NO")
        ):
            every = int(every if every >= 1 else max(1, round(every * total)))
            evals_left = total // every - step // every
        return per_step * (total - step) + evals_left * self.eval_seconds / max(1, self.eval_count)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        t_quality = time.time()
        metrics = dict(metrics or {})
        step = int(state.global_step)
        eval_loss = metrics.get("eval_loss")
        quality: dict[str, Any] = {}
        if self.quality_metrics:
            try:
                quality = self._quality(
                    kwargs.get("model"), kwargs.get("eval_dataloader"), kwargs.get("processing_class")
                )
            except Exception as e:  # noqa: BLE001 - never let a metric kill training; the error is recorded
                quality = {"quality_error": f"{type(e).__name__}: {e}"[:300]}
        # HF's eval_runtime (the loss pass) + the quality pass above: what the ETA needs per evaluation
        self.eval_count += 1
        self.eval_seconds += float(metrics.get("eval_runtime") or 0.0) + (time.time() - t_quality)
        rec = {
            "type": "eval",
            "step": step,
            "epoch": metrics.get("epoch", state.epoch),
            "eval_loss": eval_loss,
            **quality,
        }
        self._write(rec)
        self._gauges(rec, {name: name for name in _EVAL_GAUGES})
        self._anomalies(self.detector.on_eval(step, None if eval_loss is None else float(eval_loss)))
        self._emit("eval", rec)

    def _quality(self, model, dataloader, tokenizer) -> dict[str, Any]:
        """Teacher-forced quality over every rank's share of the validation set (thinktune.train.scoring)."""
        if model is None or dataloader is None or tokenizer is None:
            return {}
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(tokenizer, "tokenizer", tokenizer))
        counts, seen = score_model(model, dataloader, self._token_bytes, self.terms, self.max_eval_samples)
        merged = new_counts()
        for c in _all_gather(counts):
            merged = merge_counts(merged, c)
        out = summarize_counts(merged)
        out["eval_samples_scored"] = sum(_all_gather(seen))
        return out

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self._write({"type": "checkpoint", "step": int(state.global_step), "path": str(path)})

    def on_train_end(self, args, state, control, **kwargs):
        if self.rank_fingerprint:
            try:
                self._fingerprint(kwargs.get("model"))
            except Exception as e:  # pragma: no cover - a diagnostic; training itself succeeded
                print(f"[thinktune] rank fingerprint failed: {e}")
        rec = {"type": "end", "step": int(state.global_step), "elapsed_s": round(time.time() - self.t0, 2)}
        self._write(rec)
        self._emit("end", rec)
        if self.prom:
            self.prom.set("up", 0)

    def _fingerprint(self, model) -> None:
        """Each rank writes a hash of its trainable weights (and a copy): equal hashes prove the gradients
        were synchronised (DDP). Meaningless under ZeRO-3/FSDP, where each rank holds a shard."""
        import hashlib

        import torch
        from safetensors.torch import save_file

        if model is None:
            return
        h = hashlib.sha256()
        tensors = {}
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if not p.requires_grad:
                continue
            t = p.detach().to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(t.numpy().tobytes())
            tensors[name] = t
        d = self.output_dir / "rank_weights"
        d.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(d / f"rank{self.rank}.safetensors"))
        summary = {
            "rank": self.rank,
            "world_size": self.world,
            "sha256": h.hexdigest(),
            "tensors": len(tensors),
        }
        (d / f"rank{self.rank}.json").write_text(json.dumps(summary))
