"""PyTorch SDPA kernels on this GPU for Qwen3-4B's attention layout (32 query heads, 8 key/value heads, head size
128, bf16, causal, grouped heads passed as transformers passes them in training without a mask): forward and
forward+backward time per call for the flash, cuDNN and memory-efficient kernels and for PyTorch's own choice
(``default``: no backend named, as transformers calls it; the kernel it ran is read from the profiler), at the batch
shapes the benchmarks train (micro-batch x row length), what that is per micro-batch of the 4B model (36 layers),
and the first call at a length not seen before (cuDNN builds an execution plan per shape).

    python bench/sdpa_kernels.py OUT.json [--shapes 8x2048,16x512,2x8192] [--layers 36] [--repeat 20]

Which kernel thinktune's training attention runs on this card and what the others would cost (bench/NOTES-gpu.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shapes", default="8x2048,4x2048,16x512,2x8192")
    ap.add_argument("--layout", default="32,8,128")
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        print("sdpa_kernels: needs a CUDA GPU", file=sys.stderr)
        return 2
    heads, kv, dim = (int(x) for x in a.layout.split(","))
    # every backend enabled, PyTorch's own priority among them: what transformers' call gets
    everything = [
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
        SDPBackend.CUDNN_ATTENTION,
    ]
    backends = {
        "default": None,  # PyTorch's own order (transformers names no backend)
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }

    def default_kernels() -> list[str]:
        from torch.profiler import ProfilerActivity, profile

        q = torch.randn(1, heads, 256, dim, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(1, kv, 256, dim, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            with sdpa_kernel(everything):
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            torch.cuda.synchronize()
        return sorted({e.name for e in prof.events() if e.device_type.name == "CUDA"})[:4]

    result: dict = {
        "what": "SDPA forward and forward+backward per call, Qwen3-4B attention layout, bf16, causal, enable_gqa",
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "layout": {"heads": heads, "kv_heads": kv, "head_dim": dim},
        "shapes": {},
    }
    # PyTorch settles its order at the first CUDA SDPA call (cuDNN first on sm90/sm100 with a recent enough cuDNN)
    result["default_kernels"] = default_kernels()
    result["default_priority"] = [SDPBackend(i).name for i in torch._C._get_sdp_priority_order()]
    print("default:", result["default_priority"], result["default_kernels"], flush=True)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(a.repeat):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times)

    for shape in a.shapes.split(","):
        b, s = (int(x) for x in shape.split("x"))
        q = torch.randn(b, heads, s, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, kv, s, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, kv, s, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn_like(q)
        flops_fwd = 4 * b * heads * s * s * dim / 2  # causal: half the score matrix
        row: dict = {}
        for name, be in backends.items():

            def fwd(be=be, qkv=(q, k, v)):
                with sdpa_kernel([be] if be is not None else everything), torch.no_grad():
                    F.scaled_dot_product_attention(*qkv, is_causal=True, enable_gqa=True)

            def fwd_bwd(be=be, qkv=(q, k, v), grad=g):
                with sdpa_kernel([be] if be is not None else everything):
                    out = F.scaled_dot_product_attention(*qkv, is_causal=True, enable_gqa=True)
                out.backward(grad)

            try:
                f_ms, fb_ms = timed(fwd), timed(fwd_bwd)
            except RuntimeError as e:
                row[name] = {"error": str(e).splitlines()[0][:200]}
                continue
            row[name] = {
                "fwd_ms": round(f_ms, 3),
                "fwd_bwd_ms": round(fb_ms, 3),
                "fwd_tflops": round(flops_fwd / f_ms / 1e9, 1),
                "fwd_bwd_tflops": round(3.5 * flops_fwd / fb_ms / 1e9, 1),  # backward ~2.5x forward
                "per_micro_batch_ms": round(fb_ms * a.layers, 1),
            }
        if "ms" in str(row.get("flash")) and "fwd_bwd_ms" in row.get("cudnn", {}):
            row["cudnn_speedup_fwd_bwd"] = round(row["flash"]["fwd_bwd_ms"] / row["cudnn"]["fwd_bwd_ms"], 3)
            row["saved_per_micro_batch_ms"] = round(
                (row["flash"]["fwd_bwd_ms"] - row["cudnn"]["fwd_bwd_ms"]) * a.layers, 1
            )
        result["shapes"][shape] = row
        print(shape, json.dumps(row), flush=True)
        q = k = v = g = None  # free this shape's tensors before the next
        torch.cuda.empty_cache()
    # a batch padded to a length not seen before: cuDNN builds (and caches) an execution plan per shape, the
    # flash kernel has nothing to build; the real-length workload pads each batch to its longest row
    first: dict = {}
    for name, be in backends.items():
        times = []
        for s in range(1000, 1000 + 8 * 6, 8):  # six lengths no call above used
            q = torch.randn(4, heads, s, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            k, v = (torch.randn(4, kv, s, dim, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                with sdpa_kernel([be] if be is not None else everything):
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                out.sum().backward()
                torch.cuda.synchronize()
            except RuntimeError as e:
                times = [str(e).splitlines()[0][:200]]
                break
            times.append(round((time.perf_counter() - t0) * 1000, 2))
        first[name] = times
    result["first_call_at_a_new_length_ms"] = first
    print("first call at a new length (ms):", json.dumps(first), flush=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
