"""Live monitoring of a LLaMA Factory run: a transformers ``TrainerCallback``.

Per logging step: loss, learning rate, grad norm, tokens/s (all ranks), ETA, and memory per rank (CUDA:
allocated / reserved / peak of this rank's device; CPU: process RSS). Per evaluation: validation loss,
teacher-forced **character accuracy on Chinese text** (a CJK character counts as right when every token
overlapping its bytes is predicted right) and **term accuracy** (the same for glossary-term occurrences in the
supervised part of the validation samples: exact-term and token-level). Anomalies become warnings:
NaN/Inf loss or grad norm, loss spikes (> ``lossSpikeFactor`` x recent mean), divergence (smoothed loss 50%
above its best for 3 logs), plateau (no val-loss improvement for ``plateauEvals`` evals) and memory growth
(allocated/RSS rising over 10 logs by > 10%, a leak).

Outputs (rank 0 writes the files; every rank serves its own metrics):

- ``output_dir/metrics.jsonl``: one JSON object per event: ``{"type": "train"|"eval"|"warning"|"begin"|"end",
  "time", "step", ...}``. Train records carry ``loss, learning_rate, grad_norm, tokens_per_second,
  tokens_seen, eta_seconds, epoch, memory: [{rank, allocated_bytes, reserved_bytes, peak_bytes, rss_bytes}]``;
  eval records ``eval_loss, char_accuracy, term_accuracy, term_token_accuracy, token_accuracy, terms``.
- ``output_dir/status.json``: a ``TrainingProgress``-shaped dict (camelCase) plus ``warnings`` and
  ``phase``; the operator copies it to ``FineTuneJob.status.progress``.
- Prometheus (``prometheus_client``), port ``spec.monitoring.metricsPort + LOCAL_RANK`` on each pod, labels
  ``job``, ``namespace``, ``rank`` on every series:

  ==========================================  =======  =============================================
  metric                                      type     meaning
  ==========================================  =======  =============================================
  thinktune_train_step                        gauge    optimizer steps done
  thinktune_train_total_steps                 gauge    planned optimizer steps
  thinktune_train_progress_ratio              gauge    step / total_steps (0..1)
  thinktune_train_epoch                       gauge    current (fractional) epoch
  thinktune_train_loss                        gauge    latest training loss
  thinktune_train_eval_loss                   gauge    latest validation loss
  thinktune_train_learning_rate               gauge    current learning rate
  thinktune_train_grad_norm                   gauge    latest gradient norm (before clipping)
  thinktune_train_tokens_per_second           gauge    input tokens/s over all ranks (non-padding)
  thinktune_train_tokens_total                gauge    input tokens seen so far (all ranks)
  thinktune_train_eta_seconds                 gauge    estimated seconds to finish
  thinktune_train_gpu_memory_allocated_bytes  gauge    torch.cuda.memory_allocated of this rank
  thinktune_train_gpu_memory_reserved_bytes   gauge    torch.cuda.memory_reserved of this rank
  thinktune_train_gpu_memory_peak_bytes       gauge    torch.cuda.max_memory_allocated of this rank
  thinktune_train_gpu_utilization_ratio       gauge    NVML utilisation 0..1 (when pynvml is present)
  thinktune_train_cpu_rss_bytes               gauge    resident memory of this rank's process
  thinktune_train_char_accuracy               gauge    Chinese character accuracy on validation (0..1)
  thinktune_train_term_accuracy               gauge    glossary-term accuracy on validation (0..1)
  thinktune_train_token_accuracy              gauge    next-token accuracy on validation (0..1)
  thinktune_train_anomalies_total             counter  anomalies seen; extra label ``kind``
                                                       (nan, loss_spike, divergence, plateau, memory_growth)
  thinktune_train_oom_retries                 gauge    OOM retries before this attempt
  thinktune_train_attempt                     gauge    launcher attempt number of this process
  thinktune_train_up                          gauge    1 while training, 0 after the end
  ==========================================  =======  =============================================

- the console: rank 0 prints ``@@thinktune {json}`` events on stdout; the launcher (parent process, which owns
  the terminal) renders them as a rich progress bar with eval/warning lines (``thinktune.train.console``).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from thinktune.train import oom as oom_mod

CONSOLE_PREFIX = (
    "@@thinktune "  # console events on stdout, rendered by the launcher (thinktune.train.console)
)
# "STEP:MESSAGE": raise RuntimeError(MESSAGE) at optimizer step STEP (tests of the GPU-failure exit path)
INJECT_FAILURE_ENV = "THINKTUNE_INJECT_FAILURE"
INJECT_FAILURE_RANK_ENV = "THINKTUNE_INJECT_FAILURE_RANK"  # only this global rank fails (one GPU of a gang)

CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2EBEF))

# Used when thinktune.data.glossary is not importable (the shipped glossary is much larger).
BUILTIN_TERMS = (
    "对称加密",
    "非对称加密",
    "公钥",
    "私钥",
    "密钥",
    "哈希函数",
    "哈希",
    "数字签名",
    "椭圆曲线",
    "分组密码",
    "流密码",
    "消息认证码",
    "密钥交换",
    "证书",
    "随机数",
    "零知识证明",
    "同态加密",
    "离散对数",
    "大整数分解",
    "公钥基础设施",
    "证书颁发机构",
    "AES",
    "RSA",
    "SHA-256",
    "HMAC",
    "Diffie-Hellman",
    "SM2",
    "SM3",
    "SM4",
    "ECDSA",
)


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return any(a <= o <= b for a, b in CJK_RANGES)


def load_terms(extra: str | None = None) -> list[str]:
    """Glossary surface forms (terms and aliases) from thinktune.data.glossary, else the built-in list."""
    try:
        from thinktune.data.glossary import load_glossary

        g = load_glossary(extra)
        forms = set(getattr(g, "surface_forms", set())) or set(getattr(g, "terms", {}))
        if forms:
            return sorted(forms, key=lambda s: (-len(s), s))
    except Exception:
        pass
    return sorted(BUILTIN_TERMS, key=lambda s: (-len(s), s))


# ----------------------------------------------------------------------------------------------------------
# Character / term accuracy (pure; unit-tested)


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode (byte-level BPE token strings -> bytes)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = _byte_decoder()


class TokenBytes:
    """id -> raw bytes for a byte-level BPE tokenizer (Qwen), cached."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.cache: dict[int, bytes] = {}
        self.added = {
            int(k): v.content if hasattr(v, "content") else str(v)
            for k, v in getattr(tokenizer, "added_tokens_decoder", {}).items()
        }

    def __call__(self, i: int) -> bytes:
        b = self.cache.get(i)
        if b is None:
            if i in self.added:
                b = self.added[i].encode()
            else:
                s = self.tok.convert_ids_to_tokens(int(i))
                if s is None:
                    b = b""
                elif all(c in _BYTE_DECODER for c in s):
                    b = bytes(_BYTE_DECODER[c] for c in s)
                else:
                    b = s.encode()
            self.cache[i] = b
        return b


def _chars_with_spans(data: bytes) -> list[tuple[str, int, int]]:
    """UTF-8 characters of ``data`` with their byte spans (invalid bytes become U+FFFD of length 1)."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        ln = (
            1
            if b < 0x80
            else 2
            if b >> 5 == 0b110
            else 3
            if b >> 4 == 0b1110
            else 4
            if b >> 3 == 0b11110
            else 1
        )
        chunk = data[i : i + ln]
        try:
            ch = chunk.decode("utf-8")
        except UnicodeDecodeError:
            ch, ln = "\ufffd", 1
        out.append((ch, i, i + ln))
        i += ln
    return out


def new_counts() -> dict[str, Any]:
    return {
        "tokens": 0,
        "tokens_correct": 0,
        "cjk_chars": 0,
        "cjk_correct": 0,
        "term_occurrences": 0,
        "term_correct": 0,
        "term_tokens": 0,
        "term_tokens_correct": 0,
        "terms": {},
    }


def merge_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = new_counts()
    for k in out:
        if k == "terms":
            terms: dict[str, list[int]] = {}
            for src in (a.get("terms", {}), b.get("terms", {})):
                for t, (n, c) in src.items():
                    cur = terms.setdefault(t, [0, 0])
                    cur[0] += n
                    cur[1] += c
            out["terms"] = terms
        else:
            out[k] = a.get(k, 0) + b.get(k, 0)
    return out


def score_segment(
    label_ids: list[int],
    correct: list[bool],
    token_bytes: TokenBytes,
    terms: list[str],
    counts: dict[str, Any],
) -> None:
    """Add one contiguous supervised segment (label tokens + per-token correctness) to ``counts``."""
    spans = []
    pos = 0
    parts = []
    for t in label_ids:
        b = token_bytes(t)
        spans.append((pos, pos + len(b)))
        parts.append(b)
        pos += len(b)
    data = b"".join(parts)
    chars = _chars_with_spans(data)
    counts["tokens"] += len(label_ids)
    counts["tokens_correct"] += sum(correct)
    # token index for every byte
    owner = [0] * len(data)
    for ti, (s, e) in enumerate(spans):
        for k in range(s, e):
            owner[k] = ti

    def char_ok(ci: int) -> bool:
        _, s, e = chars[ci]
        return all(correct[owner[k]] for k in range(s, e)) if e > s else True

    for ci, (ch, _, _) in enumerate(chars):
        if is_cjk(ch):
            counts["cjk_chars"] += 1
            counts["cjk_correct"] += char_ok(ci)
    text = "".join(c for c, _, _ in chars)
    low = text.lower()
    taken = [False] * len(text)  # longest terms first; a shorter term inside a longer match is not re-counted
    for term in terms:
        tl = term.lower()
        if not tl:
            continue
        start = low.find(tl)
        while start != -1:
            end = start + len(tl)
            if not any(taken[start:end]):
                for k in range(start, end):
                    taken[k] = True
                toks = sorted(
                    {owner[k] for ci in range(start, end) for k in range(chars[ci][1], chars[ci][2])}
                )
                ok = all(correct[t] for t in toks)
                counts["term_occurrences"] += 1
                counts["term_correct"] += ok
                counts["term_tokens"] += len(toks)
                counts["term_tokens_correct"] += sum(correct[t] for t in toks)
                rec = counts["terms"].setdefault(term, [0, 0])
                rec[0] += 1
                rec[1] += ok
            start = low.find(tl, end)


def score_batch(
    pred_next: list[list[int]],
    labels: list[list[int]],
    token_bytes: TokenBytes,
    terms: list[str],
    counts: dict[str, Any],
    ignore_index: int = -100,
) -> None:
    """``pred_next[i][j]`` is the model's argmax at position j (it predicts token j+1); ``labels`` unshifted."""
    for preds, labs in zip(pred_next, labels, strict=True):
        seg_ids: list[int] = []
        seg_ok: list[bool] = []
        for j in range(1, len(labs)):
            lab = labs[j]
            if lab == ignore_index:
                if seg_ids:
                    score_segment(seg_ids, seg_ok, token_bytes, terms, counts)
                    seg_ids, seg_ok = [], []
                continue
            seg_ids.append(int(lab))
            seg_ok.append(int(preds[j - 1]) == int(lab))
        if seg_ids:
            score_segment(seg_ids, seg_ok, token_bytes, terms, counts)


def summarize_counts(c: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: str, b: str) -> float | None:
        return round(c[a] / c[b], 6) if c.get(b) else None

    per_term = {
        t: {"occurrences": n, "accuracy": round(k / n, 4)}
        for t, (n, k) in sorted(c.get("terms", {}).items(), key=lambda kv: -kv[1][0])[:50]
    }
    return {
        "token_accuracy": ratio("tokens_correct", "tokens"),
        "char_accuracy": ratio("cjk_correct", "cjk_chars"),
        "term_accuracy": ratio("term_correct", "term_occurrences"),
        "term_token_accuracy": ratio("term_tokens_correct", "term_tokens"),
        "cjk_chars": c.get("cjk_chars", 0),
        "term_occurrences": c.get("term_occurrences", 0),
        "terms": per_term,
    }


# ----------------------------------------------------------------------------------------------------------
# Anomalies (pure; unit-tested)


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
        self.warned: dict[str, int] = {}

    def _emit(
        self, out: list[dict[str, Any]], kind: str, step: int, message: str, cooldown: int = 20
    ) -> None:
        last = self.warned.get(kind)
        if last is not None and step - last < cooldown:
            return
        self.warned[kind] = step
        out.append({"kind": kind, "step": step, "message": message})

    def on_train_log(
        self, step: int, loss: float | None, grad_norm: float | None = None, memory_bytes: int | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, v in (("loss", loss), ("grad_norm", grad_norm)):
            if v is not None and not math.isfinite(v):
                self._emit(
                    out,
                    "nan",
                    step,
                    f"{name} is {v} at step {step}: training is numerically broken. "
                    "Suggestion: lower learningRate, check the data, use bf16 instead of fp16.",
                    cooldown=1,
                )
        if loss is not None and math.isfinite(loss):
            if len(self.losses) >= 3:
                mean = sum(self.losses) / len(self.losses)
                if mean > 0 and loss > self.spike_factor * mean:
                    self._emit(
                        out,
                        "loss_spike",
                        step,
                        f"loss spike at step {step}: {loss:.4g} > "
                        f"{self.spike_factor:g} x recent mean {mean:.4g}. Suggestion: lower learningRate or "
                        "maxGradNorm; look for a bad batch.",
                    )
            self.losses.append(loss)
            self.ema = loss if self.ema is None else 0.7 * self.ema + 0.3 * loss
            if self.best_ema is None or self.ema < self.best_ema:
                self.best_ema = self.ema
                self.div_count = 0
            elif self.best_ema > 0 and self.ema > self.divergence_factor * self.best_ema:
                self.div_count += 1
                if self.div_count >= 3:
                    self._emit(
                        out,
                        "divergence",
                        step,
                        f"loss is diverging at step {step}: smoothed "
                        f"{self.ema:.4g} vs best {self.best_ema:.4g}. Suggestion: lower learningRate, "
                        "more warm-up.",
                    )
            else:
                self.div_count = 0
        if memory_bytes is not None and memory_bytes > 0:
            self.mem.append(int(memory_bytes))
            if len(self.mem) == self.mem.maxlen:
                seq = list(self.mem)
                rising = all(b >= a for a, b in zip(seq, seq[1:], strict=False))
                grow = seq[-1] - seq[0]
                if rising and grow > self.leak_min_bytes and grow > self.leak_ratio * seq[0]:
                    self._emit(
                        out,
                        "memory_growth",
                        step,
                        f"memory grew on every one of the last {len(seq)} logs "
                        f"({seq[0] / 2**20:.0f} -> {seq[-1] / 2**20:.0f} MiB): possible leak.",
                        cooldown=50,
                    )
        return out

    def on_eval(self, step: int, eval_loss: float | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if eval_loss is None:
            return out
        if not math.isfinite(eval_loss):
            self._emit(out, "nan", step, f"validation loss is {eval_loss} at step {step}.", cooldown=1)
            return out
        if self.best_eval is None or eval_loss < self.best_eval * (1 - 1e-3):
            self.best_eval = eval_loss
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1
            if self.evals_since_best >= self.plateau_evals:
                self._emit(
                    out,
                    "plateau",
                    step,
                    f"validation loss has not improved for {self.evals_since_best} "
                    f"evaluations (best {self.best_eval:.4g}). Suggestion: stop early (the best checkpoint "
                    "is kept) or lower learningRate.",
                    cooldown=1,
                )
                self.evals_since_best = 0
        return out


# ----------------------------------------------------------------------------------------------------------
# Prometheus


class PromMetrics:
    NAMES = (
        "step",
        "total_steps",
        "progress_ratio",
        "epoch",
        "loss",
        "eval_loss",
        "learning_rate",
        "grad_norm",
        "tokens_per_second",
        "tokens_total",
        "eta_seconds",
        "gpu_memory_allocated_bytes",
        "gpu_memory_reserved_bytes",
        "gpu_memory_peak_bytes",
        "gpu_utilization_ratio",
        "cpu_rss_bytes",
        "char_accuracy",
        "term_accuracy",
        "token_accuracy",
        "oom_retries",
        "attempt",
        "up",
    )

    def __init__(self, *, job: str, namespace: str, rank: int, port: int | None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.labels = {"job": job, "namespace": namespace, "rank": str(rank)}
        self.gauges = {
            n: Gauge(f"thinktune_train_{n}", n.replace("_", " "), list(self.labels), registry=self.registry)
            for n in self.NAMES
        }
        self.anomalies = Counter(
            "thinktune_train_anomalies", "anomalies seen", [*self.labels, "kind"], registry=self.registry
        )
        self.port: int | None = None
        self.server = None
        if port is not None:
            from prometheus_client import start_http_server

            try:
                res = start_http_server(port, registry=self.registry)
                self.server = res
                self.port = port if port else (res[0].server_port if isinstance(res, tuple) else None)
            except OSError as e:
                print(f"[thinktune] metrics port {port} unavailable ({e}); Prometheus endpoint disabled")

    def set(self, name: str, value: float | None) -> None:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return
        self.gauges[name].labels(**self.labels).set(float(value))

    def anomaly(self, kind: str) -> None:
        self.anomalies.labels(**self.labels, kind=kind).inc()

    def close(self) -> None:
        if isinstance(self.server, tuple):
            try:
                self.server[0].shutdown()
            except Exception:
                pass


# ----------------------------------------------------------------------------------------------------------
# Helpers


def memory_snapshot(rank: int) -> dict[str, Any]:
    snap: dict[str, Any] = {"rank": rank}
    try:
        import psutil

        snap["rss_bytes"] = psutil.Process().memory_info().rss
    except Exception:
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
            except Exception:
                pass
    except Exception:
        pass
    return snap


def _dist() -> tuple[int, int, bool]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size(), True
    except Exception:
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


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def _fmt_secs(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ----------------------------------------------------------------------------------------------------------
# The callback


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
        self.terms = list(terms) if terms is not None else load_terms()
        self.terms.sort(key=lambda s: (-len(s), s))
        self.total_steps_hint = total_steps_hint
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
        self.last_log: tuple[float, float] | None = None  # (time, tokens_seen)
        self.progress_state: dict[str, Any] = {}
        self.warnings: list[dict[str, Any]] = []
        self.last_eval: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._token_bytes: TokenBytes | None = None
        self.current_step: int | None = None
        self.ended = False

    # -- plumbing -------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _write(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with self._lock, open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _status(self, state: Any, phase: str = "Running") -> None:
        if not self.is_main:
            return
        if self.ended:
            phase = "Finished"
        ps = self.progress_state
        total = ps.get("total_steps")
        step = int(state.global_step)
        pct = round(100.0 * step / total, 2) if total else None
        status = {
            "phase": phase,
            "step": step,
            "totalSteps": total,
            "percent": pct,
            "epoch": round(float(state.epoch), 4) if state.epoch is not None else None,
            "loss": ps.get("loss"),
            "evalLoss": ps.get("eval_loss"),
            "learningRate": ps.get("learning_rate"),
            "tokensPerSecond": ps.get("tokens_per_second"),
            "etaSeconds": ps.get("eta_seconds"),
            "summary": f"{step}/{total} ({pct:.0f}%)" if total else f"{step}",
            "charAccuracy": self.last_eval.get("char_accuracy"),
            "termAccuracy": self.last_eval.get("term_accuracy"),
            "attempt": self.attempt,
            "oomRetries": self.oom_retries,
            "warnings": [w["message"] for w in self.warnings[-20:]],
            "updated": time.time(),
        }
        try:
            write_json_atomic(self.output_dir / "status.json", status)
        except OSError:
            pass

    def _anomalies(self, found: list[dict[str, Any]]) -> None:
        for a in found:
            self.warnings.append(a)
            if self.prom:
                self.prom.anomaly(a["kind"])
            self._write({"type": "warning", **a})
            self._emit({"type": "warning", "kind": a["kind"], "step": a["step"], "message": a["message"]})

    def _emit(self, event: dict[str, Any]) -> None:
        """One console event for the launcher's display (``CONSOLE_PREFIX`` + JSON; thinktune.train.console)."""
        if self.is_main and self.progress_enabled:
            print(CONSOLE_PREFIX + json.dumps(event, ensure_ascii=False, default=str), flush=True)

    # -- events ---------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.step0 = int(state.global_step)
        self.progress_state["total_steps"] = (
            int(state.max_steps) if state.max_steps else self.total_steps_hint
        )
        self.last_log = (self.t0, float(getattr(state, "num_input_tokens_seen", 0) or 0))
        if self.metrics_port is not None:
            port = self.metrics_port + self.local_rank if self.metrics_port else 0
            self.prom = PromMetrics(job=self.job, namespace=self.namespace, rank=self.rank, port=port)
            self.prom.set("total_steps", self.progress_state["total_steps"])
            self.prom.set("attempt", self.attempt)
            self.prom.set("oom_retries", self.oom_retries)
            self.prom.set("up", 1)
        self._write(
            {
                "type": "begin",
                "step": self.step0,
                "total_steps": self.progress_state["total_steps"],
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
        )
        self._emit(
            {
                "type": "begin",
                "step": self.step0,
                "total_steps": self.progress_state["total_steps"],
                "attempt": self.attempt,
                "world_size": self.world,
            }
        )
        self._status(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self.current_step = int(state.global_step) + 1  # the step an OOM would hit

    def on_step_end(self, args, state, control, **kwargs):
        step = int(state.global_step)
        self.current_step = step
        if oom_mod.should_inject(step, int(args.per_device_train_batch_size)):
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (INJECTED by {oom_mod.INJECT_STEP_ENV}={step}: "
                f"simulated for testing; micro-batch {args.per_device_train_batch_size})"
            )
        fail = os.environ.get(INJECT_FAILURE_ENV)
        only_rank = os.environ.get(INJECT_FAILURE_RANK_ENV)
        if fail and (only_rank is None or only_rank == os.environ.get("RANK", "0")):
            at, _, message = fail.partition(":")
            if step >= int(at):
                # testing without a GPU: raise the error text a failing GPU produces (INJECTED)
                raise RuntimeError(message or "CUDA error: unspecified launch failure (INJECTED)")
        if self.prom:
            self.prom.set("step", step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        step = int(state.global_step)
        if "eval_loss" in logs or any(k.startswith("eval_") for k in logs):
            return  # handled in on_evaluate
        if "loss" not in logs:
            if "train_loss" in logs:  # the end-of-training summary: average loss, runtime
                self._write(
                    {
                        "type": "train_summary",
                        "step": step,
                        **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                    }
                )
            return
        now = time.time()
        tokens = float(logs.get("num_input_tokens_seen", getattr(state, "num_input_tokens_seen", 0)) or 0)
        tps = None
        if self.last_log and now > self.last_log[0] and tokens > self.last_log[1]:
            tps = (tokens - self.last_log[1]) / (now - self.last_log[0])
        self.last_log = (now, tokens)
        total = self.progress_state.get("total_steps")
        done = step - self.step0
        eta = (now - self.t0) / done * (total - step) if total and done > 0 else None
        mem = memory_snapshot(self.rank)
        try:
            mems = _all_gather(mem)
        except Exception:
            mems = [mem]
        loss = logs.get("loss")
        rec = {
            "type": "train",
            "step": step,
            "epoch": logs.get("epoch"),
            "loss": loss,
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_seen": tokens,
            "tokens_per_second": round(tps, 2) if tps else None,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "memory": mems,
        }
        self.progress_state.update(
            {
                "loss": loss,
                "learning_rate": logs.get("learning_rate"),
                "tokens_per_second": rec["tokens_per_second"],
                "eta_seconds": rec["eta_seconds"],
            }
        )
        self._write(rec)
        if self.prom:
            p = self.prom
            p.set("loss", loss)
            p.set("learning_rate", logs.get("learning_rate"))
            p.set("grad_norm", logs.get("grad_norm"))
            p.set("tokens_per_second", tps)
            p.set("tokens_total", tokens)
            p.set("eta_seconds", eta)
            p.set("epoch", logs.get("epoch"))
            p.set("step", step)
            if total:
                p.set("progress_ratio", step / total)
            p.set("gpu_memory_allocated_bytes", mem.get("allocated_bytes"))
            p.set("gpu_memory_reserved_bytes", mem.get("reserved_bytes"))
            p.set("gpu_memory_peak_bytes", mem.get("peak_bytes"))
            p.set("gpu_utilization_ratio", mem.get("utilization"))
            p.set("cpu_rss_bytes", mem.get("rss_bytes"))
        gn = logs.get("grad_norm")
        self._anomalies(
            self.detector.on_train_log(
                step,
                None if loss is None else float(loss),
                None if gn is None else float(gn),
                mem.get("allocated_bytes", mem.get("rss_bytes")),
            )
        )
        self._emit(
            {
                "type": "train",
                "step": step,
                "total_steps": total,
                "loss": loss,
                "learning_rate": logs.get("learning_rate"),
                "tokens_per_second": rec["tokens_per_second"],
                "eta_seconds": rec["eta_seconds"],
            }
        )
        self._status(state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = dict(metrics or {})
        step = int(state.global_step)
        eval_loss = metrics.get("eval_loss")
        quality: dict[str, Any] = {}
        if self.quality_metrics:
            try:
                quality = self._quality(
                    kwargs.get("model"), kwargs.get("eval_dataloader"), kwargs.get("processing_class")
                )
            except Exception as e:  # never let a metric kill training
                quality = {"quality_error": f"{type(e).__name__}: {e}"[:300]}
        rec = {
            "type": "eval",
            "step": step,
            "epoch": metrics.get("epoch", state.epoch),
            "eval_loss": eval_loss,
            **quality,
        }
        self.last_eval = rec
        self.progress_state["eval_loss"] = eval_loss
        self._write(rec)
        if self.prom:
            self.prom.set("eval_loss", eval_loss)
            self.prom.set("char_accuracy", quality.get("char_accuracy"))
            self.prom.set("term_accuracy", quality.get("term_accuracy"))
            self.prom.set("token_accuracy", quality.get("token_accuracy"))
        self._anomalies(self.detector.on_eval(step, None if eval_loss is None else float(eval_loss)))
        self._emit(
            {
                "type": "eval",
                "step": step,
                "eval_loss": eval_loss,
                "char_accuracy": quality.get("char_accuracy"),
                "term_accuracy": quality.get("term_accuracy"),
            }
        )
        self._status(state)

    def _quality(self, model, dataloader, tokenizer) -> dict[str, Any]:
        if model is None or dataloader is None or tokenizer is None:
            return {}
        import torch

        if self._token_bytes is None:
            self._token_bytes = TokenBytes(getattr(tokenizer, "tokenizer", tokenizer))
        counts = new_counts()
        was_training = model.training
        model.eval()
        seen = 0
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover
            device = torch.device("cpu")
        with torch.no_grad():
            for batch in dataloader:
                ids = batch["input_ids"]
                labels = batch["labels"]
                mask = batch.get("attention_mask")
                for i in range(ids.shape[0]):  # one row at a time: logits of 151,936 x seq stay small
                    if seen >= self.max_eval_samples:
                        break
                    row_ids = ids[i : i + 1].to(device)
                    row_mask = mask[i : i + 1].to(device) if mask is not None and mask.dim() == 2 else None
                    out = model(input_ids=row_ids, attention_mask=row_mask)
                    pred = out.logits.argmax(-1)[0].tolist()
                    score_batch([pred], [labels[i].tolist()], self._token_bytes, self.terms, counts)
                    seen += 1
                if seen >= self.max_eval_samples:
                    break
        if was_training:
            model.train()
        merged = new_counts()
        for c in _all_gather(counts):
            merged = merge_counts(merged, c)
        out = summarize_counts(merged)
        out["eval_samples_scored"] = sum(_all_gather(seen))
        return out

    def on_save(self, args, state, control, **kwargs):
        self._write(
            {
                "type": "checkpoint",
                "step": int(state.global_step),
                "path": str(Path(args.output_dir) / f"checkpoint-{state.global_step}"),
            }
        )

    def on_train_end(self, args, state, control, **kwargs):
        if self.rank_fingerprint:
            try:
                self._fingerprint(kwargs.get("model"))
            except Exception as e:  # pragma: no cover
                print(f"[thinktune] rank fingerprint failed: {e}")
        self._write(
            {"type": "end", "step": int(state.global_step), "elapsed_s": round(time.time() - self.t0, 2)}
        )
        self.ended = True
        self._status(state, phase="Finished")
        self._emit({"type": "end", "step": int(state.global_step)})
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
        (d / f"rank{self.rank}.json").write_text(
            json.dumps(
                {
                    "rank": self.rank,
                    "world_size": self.world,
                    "sha256": h.hexdigest(),
                    "tensors": len(tensors),
                }
            )
        )
