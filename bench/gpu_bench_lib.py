"""Shared pieces of the GPU benchmarks (bench/gpu_train.py, bench/multigpu.py).

One record shape for every trainer measured, so one function turns any run into the same numbers: a JSON line per
optimizer step ``{"step", "time" (epoch s, after the step), "tokens_seen" (cumulative non-padding tokens),
"loss", "peak_bytes"}``. ``thinktune train`` writes its own ``metrics.jsonl`` (converted by
``records_from_metrics``); the LLaMA Factory and plain-PyTorch runs write this shape directly.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEAK_BF16_TFLOPS = 989.0  # H200 SXM datasheet dense bf16; MFU is quoted against it (the anchors' convention)

# Qwen3-4B's architecture (the shape, not the weights, sets speed and memory)
QWEN3_4B = dict(
    vocab_size=151_936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
)


def write_record(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def records_from_metrics(metrics_path: Path) -> list[dict[str, Any]]:
    """thinktune's metrics.jsonl ``train`` records -> the common step-record shape (rank 0's peak)."""
    out = []
    for r in read_records(metrics_path):
        if r.get("type") != "train":
            continue
        peaks = [m.get("peak_bytes", 0) or 0 for m in r.get("memory", [])]
        out.append(
            {
                "step": r["step"],
                "time": r["time"],
                "tokens_seen": r.get("tokens_seen") or 0,
                "loss": r.get("loss"),
                "peak_bytes": max(peaks) if peaks else 0,
                "peak_bytes_per_rank": peaks,
            }
        )
    return out


def model_flops_per_token(cfg: dict[str, Any], mean_seq: float, method: str = "lora") -> float:
    """Model FLOPs per trained token: LoRA 4N (forward + activation-gradient backward), full 6N, plus attention
    3x its causal forward (2·S·d_attn·L per token, halved for the mask). Checkpointing recompute is not counted
    (MFU, not HFU)."""
    h, L, inter, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    d_attn = cfg["num_attention_heads"] * cfg["head_dim"]
    d_kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    per_layer = h * d_attn + 2 * h * d_kv + d_attn * h + 3 * h * inter
    n_matmul = L * per_layer + h * v  # the (tied) LM head is a matmul too
    attn_fwd = 2 * 2 * mean_seq * d_attn * L / 2
    mult = 4 if method in ("lora", "qlora") else 6
    return mult * n_matmul + 3 * attn_fwd


def summarize(
    records: list[dict[str, Any]],
    *,
    t_start: float,
    t_end: float,
    model_cfg: dict[str, Any] | None,
    mean_seq: float,
    method: str = "lora",
    world: int = 1,
    warm: int | None = None,
) -> dict[str, Any]:
    """Steady-state numbers of one run: skip ``warm`` steps (default a third, at least 2 when there are 6+)."""
    if len(records) < 3:
        return {"error": f"only {len(records)} optimizer steps recorded (need 3+)"}
    n = len(records)
    w = warm if warm is not None else max(1, min(3, n // 3))
    w = min(w, n - 2)
    a, b = records[w], records[-1]
    dt = b["time"] - a["time"]
    dtok = b["tokens_seen"] - a["tokens_seen"]
    step_times = [records[i]["time"] - records[i - 1]["time"] for i in range(w + 1, n)]
    if dtok <= 0 or dtok > 1e12:
        # neat_packing puts segment ids in attention_mask: HF's non-padding count is then meaningless
        return {
            "error": f"token count invalid ({dtok:.3g} tokens over the steady steps)",
            "step_s_median": round(statistics.median(step_times), 4) if step_times else None,
        }
    tps = dtok / dt if dt > 0 else None
    out: dict[str, Any] = {
        "steps_recorded": n,
        "warm_steps_skipped": w,
        "tokens_per_s": round(tps, 1) if tps else None,
        "tokens_per_s_per_gpu": round(tps / world, 1) if tps else None,
        "step_s_median": round(statistics.median(step_times), 4),
        "tokens_per_step": round(dtok / (n - 1 - w), 1),
        "peak_gib": round(max(r.get("peak_bytes", 0) or 0 for r in records) / 2**30, 2),
        "time_to_first_step_s": round(records[0]["time"] - t_start, 1),
        "wall_s": round(t_end - t_start, 1),
        "losses": [None if r.get("loss") is None else round(float(r["loss"]), 5) for r in records],
    }
    per_rank = [r.get("peak_bytes_per_rank") for r in records if r.get("peak_bytes_per_rank")]
    if per_rank:
        out["peak_gib_per_rank"] = [round(max(col) / 2**30, 2) for col in zip(*per_rank, strict=False)]
    if tps and model_cfg:
        out["mfu_vs_989"] = round(
            model_flops_per_token(model_cfg, mean_seq, method) * tps / (world * PEAK_BF16_TFLOPS * 1e12), 4
        )
    return out


def run_logged(
    cmd: list[str], log_path: Path, env: dict[str, str], timeout: float
) -> tuple[int, float, float]:
    """Run ``cmd`` with stdout+stderr to ``log_path``; (exit code, start epoch, end epoch). A timeout is rc 124."""
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as lf:
        try:
            rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, t0, time.time()


# the resolved LLaMA Factory arguments each thinktune run records (the plan's speed-relevant choices)
PLAN_ARG_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "disable_gradient_checkpointing",
    "enable_liger_kernel",
    "lora_rank",
    "lora_dropout",
    "flash_attn",
    "optim",
    "packing",
    "neat_packing",
    "deepspeed",
    "fsdp",
    "bf16",
)


def run_thinktune(
    job: dict[str, Any], rdir: Path, dataset: Path, env: dict[str, str], timeout: float
) -> tuple[int, float, float, list[dict[str, Any]], dict[str, Any]]:
    """``thinktune train`` on ``job`` (written to rdir/job.json) with the dataset given: (exit code, start, end,
    per-step records from its metrics.jsonl, the ``PLAN_ARG_KEYS`` of the first attempt's resolved LLaMA Factory
    arguments, or {} when it wrote none)."""
    jf = rdir / "job.json"
    jf.write_text(json.dumps(job))
    cmd = [
        sys.executable,
        "-m",
        "thinktune.cli",
        "train",
        "-f",
        str(jf),
        "--dataset",
        str(dataset),
        "--no-progress",
    ]
    rc, t0, t1 = run_logged(cmd, rdir / "log.txt", env, timeout)
    recs = records_from_metrics(rdir / "out" / "metrics.jsonl")
    resolved = rdir / "out" / ".thinktune" / "attempt-0.json"
    if not resolved.is_file():
        return rc, t0, t1, recs, {}
    args = json.loads(resolved.read_text())["args"]
    return rc, t0, t1, recs, {k: args.get(k) for k in PLAN_ARG_KEYS}


def child_result(
    code: str, *argv: str, env: dict[str, str] | None = None, timeout: float | None = None
) -> dict:
    """Run ``code`` in a fresh Python process (``python -c code *argv``) and return the JSON object it printed on its
    ``RESULT `` line (the start-up benchmarks time imports, so each measurement needs its own process). Exits with
    the end of the child's stderr when it printed none."""
    p = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"child process failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(line.removeprefix("RESULT "))


def tail(path: Path, n: int = 30) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "DISABLE_VERSION_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "THINKTUNE_METRICS_PORT": "off",
            # NVLink multicast stays off on the lent machines (KINDS.md): every child inherits these
            "NCCL_NVLS_ENABLE": "0",
            "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1",
        }
    )
    env.update(extra or {})
    return env


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for d in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "trl",
        "datasets",
        "llamafactory",
        "liger-kernel",
    ):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    for d in ("deepspeed",):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["gpu_count"] = torch.cuda.device_count()
            out["cuda"] = torch.version.cuda
    except Exception as e:  # noqa: BLE001 - versions are informative, never fatal
        out["torch_error"] = repr(e)
    return out


def git_commit() -> str | None:
    c = os.environ.get("BENCH_COMMIT")
    if c:
        return c
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------------------------------------
# model and data


def make_model(out: Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """A random-weight model at ``out``: ``qwen3-4b`` (exact architecture, built on the GPU) or ``tiny``."""
    if kind == "tiny":
        from thinktune.tiny_model import make_tiny_model

        if not (out / "config.json").is_file():
            make_tiny_model(out)
    else:
        sys.path.insert(0, str(BENCH))
        from train_planner_h200 import make_qwen3_4b_random

        make_qwen3_4b_random(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    return out, cfg


FACTS = (
    "对称加密使用同一个密钥进行加密和解密，例如 AES。",
    "RSA 的安全性基于大整数分解的困难性。",
    "哈希函数把任意长度的输入映射为固定长度的摘要，例如 SHA-256。",
    "数字签名用于验证消息的完整性和发送者的身份。",
    "椭圆曲线密码学基于椭圆曲线离散对数问题，密钥更短。",
)

TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def fit_answer(tokenizer, answer: str, budget: int) -> str:
    """The longest prefix of ``answer`` whose tokens fit ``budget`` (thinktune refuses rows over cutoffLen
    instead of letting LLaMA Factory truncate them, so the fixed workload must fit, not be cut)."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:budget]
    text = tokenizer.decode(ids).rstrip("\ufffd")  # a cut byte-level token decodes as U+FFFD
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > budget:
        text = text[:-1]
    return text


def make_fixed_dataset(
    d: Path, *, n: int, chars: int, tokenizer_dir: Path | None = None, cutoff: int = 0
) -> Path:
    """``n`` rows of ``chars`` characters of answer. With ``tokenizer_dir`` each row is trimmed to at most
    ``cutoff`` tokens in the qwen3 chat format (a margin of 32 for what the chat template adds around the answer), so rows are all
    about cutoff long and none is over it. Only a train split (no evaluation in the timing)."""
    d.mkdir(parents=True, exist_ok=True)
    tok = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = []
    for i in range(n):
        body, k = [], 0
        while sum(map(len, body)) < chars:
            body.append(FACTS[(i * 7 + k) % len(FACTS)])
            k += 1
        question = f"请详细解释密码学概念 {i}。"
        answer = "<think>\n先分析定义，再给出例子。\n</think>\n\n" + "".join(body)
        if tok is not None:
            msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
            overhead = len(tok.apply_chat_template(msgs, tokenize=True)) + 32
            answer = fit_answer(tok, answer, cutoff - overhead)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    (d / "train.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = {
        "bench_train": {
            "file_name": "train.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
        }
    }
    info["bench_train"]["tags"] = TAGS
    (d / "dataset_info.json").write_text(json.dumps(info))
    return d


def train_only_copy(src: Path, dst: Path) -> Path:
    """A DatasetBuild's output reduced to its train split (named ``bench_train``): timing runs do no eval."""
    info = json.loads((src / "dataset_info.json").read_text())
    key = next(k for k in sorted(info) if k.endswith("_train"))
    dst.mkdir(parents=True, exist_ok=True)
    fn = info[key]["file_name"]
    (dst / fn).write_bytes((src / fn).read_bytes())
    (dst / "dataset_info.json").write_text(json.dumps({"bench_train": info[key]}))
    return dst


def token_lengths(dataset_dir: Path, tokenizer_dir: Path, cutoff: int) -> list[int]:
    """Tokens per row after the chat template, cut at ``cutoff`` (what every trainer here trains on)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    rows = json.loads((dataset_dir / info["bench_train"]["file_name"]).read_text())
    out = []
    for r in rows:
        ids = tok.apply_chat_template(r["messages"], tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        out.append(min(len(ids), cutoff))
    return out


class ProfileWindow:
    """Optimizer steps under ``torch.profiler`` (CPU + CUDA) and ``torch.cuda.set_sync_debug_mode("warn")``: kernel
    time against the window's wall time (how long the GPU waits on the host), the counts of the synchronizing ops
    and of kernel launches, the Python line of every synchronizing call (the warning carries the caller's line), and
    the top ops by host and by device time. ``start()`` after one step ends, ``stop(steps)`` after the last
    profiled one; the same shape for every trainer measured, so two runs' windows compare op by op."""

    COUNTED_OPS = (
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaEventSynchronize",
        "aten::_local_scalar_dense",
        "aten::item",
        "cudaMemcpyAsync",
        "aten::nonzero",
        "cudaLaunchKernel",
    )

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.prof: Any = None

    def start(self) -> None:
        import warnings

        from torch.profiler import ProfilerActivity, profile

        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.set_sync_debug_mode("warn")
        self.rec = warnings.catch_warnings(record=True)
        self.caught = self.rec.__enter__()
        warnings.simplefilter("always")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=acts)
        self.prof.__enter__()
        self.w0 = time.perf_counter()

    def stop(self, steps: int) -> dict[str, Any]:
        import collections

        if self.cuda:
            self.torch.cuda.synchronize()
        wall = time.perf_counter() - self.w0
        self.prof.__exit__(None, None, None)
        if self.cuda:
            self.torch.cuda.set_sync_debug_mode(0)
        self.rec.__exit__(None, None, None)
        ka = self.prof.key_averages()

        def dev(e: Any) -> float:
            return getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)

        from torch.autograd import DeviceType

        # the kernels' own rows: an op's row (aten::mm) repeats its kernels' time (counted twice before 2026-12-07b)
        kernels_s = sum(dev(e) for e in ka if e.device_type == DeviceType.CUDA) / 1e6
        lines = collections.Counter(
            f"{w.filename}:{w.lineno}" for w in self.caught if "synchroniz" in str(w.message)
        )
        return {
            "window_steps": steps,
            "window_wall_s": round(wall, 3),
            "device_kernel_s": round(kernels_s, 3),
            "device_busy": round(kernels_s / wall, 3) if self.cuda else None,
            "ops": {e.key: e.count for e in ka if e.key in self.COUNTED_OPS},
            "sync_warnings_by_line": dict(lines.most_common(25)),
            "top_self_cpu_ms": [
                [e.key, e.count, round(e.self_cpu_time_total / 1e3, 1)]
                for e in sorted(ka, key=lambda e: -e.self_cpu_time_total)[:25]
            ],
            "top_self_device_ms": [
                [e.key, e.count, round(dev(e) / 1e3, 1)] for e in sorted(ka, key=lambda e: -dev(e))[:40]
            ]
            if self.cuda
            else [],
        }
