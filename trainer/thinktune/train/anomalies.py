"""Anomaly detection over the training and validation losses (pure: no torch, unit-tested).

Kinds (``thinktune.contract.ANOMALY_KINDS``; the operator turns each into a Kubernetes Event):

- ``nan``: the loss, the gradient norm or the validation loss is NaN/Inf;
- ``loss_spike``: a logged loss above ``spike_factor`` x the mean of the last ``window`` losses;
- ``divergence``: the smoothed loss (EMA) above ``divergence_factor`` x its best for 3 logs in a row;
- ``plateau``: no validation-loss improvement (by 0.1%) for ``plateau_evals`` evaluations;
- ``memory_growth``: allocated memory (RSS on CPU) rising on every one of ``leak_window`` logs by more than
  ``leak_ratio`` and ``leak_min_bytes`` (a leak).

A kind is reported again only after a cooldown of optimizer steps, so one bad stretch is one warning.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from thinktune.contract import ANOMALY_KINDS


@dataclass(frozen=True)
class Anomaly:
    kind: str  # one of contract.ANOMALY_KINDS
    step: int
    message: str  # what happened and what to try

    def record(self) -> dict[str, Any]:
        """The fields of a metrics.jsonl ``warning`` record and of the console's warning event."""
        return asdict(self)


class AnomalyDetector:
    def __init__(
        self,
        *,
        spike_factor: float = 3.0,
        plateau_evals: int = 5,
        window: int = 10,
        divergence_factor: float = 1.5,
        leak_window: int = 10,
        leak_ratio: float = 0.10,
        leak_min_bytes: int = 64 * 1024**2,
    ):
        self.spike_factor = spike_factor
        self.plateau_evals = plateau_evals
        self.losses: deque[float] = deque(maxlen=window)
        self.ema: float | None = None
        self.best_ema: float | None = None
        self.div_count = 0
        self.divergence_factor = divergence_factor
        self.best_eval: float | None = None
        self.evals_since_best = 0
        self.mem: deque[int] = deque(maxlen=leak_window)
        self.leak_ratio = leak_ratio
        self.leak_min_bytes = leak_min_bytes
        self.warned: dict[str, int] = {}  # kind -> step it was last reported at

    def _report(self, out: list[Anomaly], kind: str, step: int, message: str, cooldown: int = 20) -> None:
        if kind not in ANOMALY_KINDS:
            raise KeyError(f"{kind!r} is not an anomaly kind (thinktune.contract.ANOMALY_KINDS)")
        last = self.warned.get(kind)
        if last is not None and step - last < cooldown:
            return
        self.warned[kind] = step
        out.append(Anomaly(kind, step, message))

    def on_train_log(
        self, step: int, loss: float | None, grad_norm: float | None = None, memory_bytes: int | None = None
    ) -> list[Anomaly]:
        out: list[Anomaly] = []
        self._check_finite(out, step, loss, grad_norm)
        if loss is not None and math.isfinite(loss):
            self._check_spike(out, step, loss)
            self._check_divergence(out, step, loss)
        if memory_bytes is not None and memory_bytes > 0:
            self._check_memory(out, step, int(memory_bytes))
        return out

    def _check_finite(
        self, out: list[Anomaly], step: int, loss: float | None, grad_norm: float | None
    ) -> None:
        for name, v in (("loss", loss), ("grad_norm", grad_norm)):
            if v is not None and not math.isfinite(v):
                self._report(
                    out,
                    "nan",
                    step,
                    f"{name} is {v} at step {step}: training is numerically broken. "
                    "Suggestion: lower learningRate, check the data, use bf16 instead of fp16.",
                    cooldown=1,
                )

    def _check_spike(self, out: list[Anomaly], step: int, loss: float) -> None:
        if len(self.losses) >= 3:
            mean = sum(self.losses) / len(self.losses)
            if mean > 0 and loss > self.spike_factor * mean:
                self._report(
                    out,
                    "loss_spike",
                    step,
                    f"loss spike at step {step}: {loss:.4g} > {self.spike_factor:g} x recent mean {mean:.4g}. "
                    "Suggestion: lower learningRate or maxGradNorm; look for a bad batch.",
                )
        self.losses.append(loss)

    def _check_divergence(self, out: list[Anomaly], step: int, loss: float) -> None:
        self.ema = loss if self.ema is None else 0.7 * self.ema + 0.3 * loss
        if self.best_ema is None or self.ema < self.best_ema:
            self.best_ema = self.ema
            self.div_count = 0
        elif self.best_ema > 0 and self.ema > self.divergence_factor * self.best_ema:
            self.div_count += 1
            if self.div_count >= 3:
                self._report(
                    out,
                    "divergence",
                    step,
                    f"loss is diverging at step {step}: smoothed {self.ema:.4g} vs best {self.best_ema:.4g}. "
                    "Suggestion: lower learningRate, more warm-up.",
                )
        else:
            self.div_count = 0

    def _check_memory(self, out: list[Anomaly], step: int, memory_bytes: int) -> None:
        self.mem.append(memory_bytes)
        if len(self.mem) < (self.mem.maxlen or 0):
            return
        seq = list(self.mem)
        rising = all(b >= a for a, b in zip(seq, seq[1:], strict=False))
        grow = seq[-1] - seq[0]
        if rising and grow > self.leak_min_bytes and grow > self.leak_ratio * seq[0]:
            self._report(
                out,
                "memory_growth",
                step,
                f"memory grew on every one of the last {len(seq)} logs "
                f"({seq[0] / 2**20:.0f} -> {seq[-1] / 2**20:.0f} MiB): possible leak.",
                cooldown=50,
            )

    def on_eval(self, step: int, eval_loss: float | None) -> list[Anomaly]:
        out: list[Anomaly] = []
        if eval_loss is None:
            return out
        if not math.isfinite(eval_loss):
            self._report(out, "nan", step, f"validation loss is {eval_loss} at step {step}.", cooldown=1)
            return out
        if self.best_eval is None or eval_loss < self.best_eval * (1 - 1e-3):
            self.best_eval = eval_loss
            self.evals_since_best = 0
            return out
        self.evals_since_best += 1
        if self.evals_since_best >= self.plateau_evals:
            self._report(
                out,
                "plateau",
                step,
                f"validation loss has not improved for {self.evals_since_best} evaluations "
                f"(best {self.best_eval:.4g}). Suggestion: stop early (the best checkpoint is kept) or lower "
                "learningRate.",
                cooldown=1,
            )
            self.evals_since_best = 0
        return out
