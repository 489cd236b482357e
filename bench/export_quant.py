"""Benchmark of the export stage's quantization + verification: for each variant, time to quantize, size on disk,
perplexity increase vs the merged model, top-1 token agreement, and logit error.

Default: the tiny random Qwen3 + a LoRA adapter trained for a few steps (CPU, ~2 minutes) -- this measures the
machinery (cost, format, ordering int8 < int4), not model quality; a random model's perplexity is ~vocab size.
With ``--merged DIR --test FILE`` it measures a real merged model (use a GPU machine for 4B).

    uv run --no-sync python bench/export_quant.py --out bench/export_quant.json
    uv run --no-sync python bench/export_quant.py --merged out/export/merged --test out/dataset/test.json \
        --variants rtn-8-128,rtn-4-128,gptq-4-128 --samples 32 --out bench/export_quant_4b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _weights_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def _linear_bytes(path: Path) -> int | None:
    """Bytes of the quantized Linear weights (rtn: qweight + scales + zeros); None for other formats."""
    from safetensors import safe_open

    f = path / "model.safetensors"
    if not (path / "rtn_config.json").is_file() or not f.is_file():
        return None
    total = 0
    with safe_open(str(f), framework="pt") as st:
        for k in st.keys():
            if k.endswith((".qweight", ".scales", ".zeros")):
                t = st.get_slice(k)
                n = 1
                for d in t.get_shape():
                    n *= d
                total += n * {"U8": 1, "F16": 2, "BF16": 2, "F32": 4}[t.get_dtype()]
    return total


def _merged_linear_bytes(path: Path) -> int:
    """Bytes of the Linear weights rtn quantizes (every 2-D *_proj weight) in the merged model."""
    from safetensors import safe_open

    total = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                if k.endswith("_proj.weight"):
                    t = st.get_slice(k)
                    n = 1
                    for d in t.get_shape():
                        n *= d
                    total += n * {"U8": 1, "F16": 2, "BF16": 2, "F32": 4}[t.get_dtype()]
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--merged", help="merged model dir (default: build the tiny model + adapter and merge)")
    ap.add_argument("--test", help="test split (default: the tiny dataset)")
    ap.add_argument(
        "--variants",
        default="rtn-8-128,rtn-4-128,rtn-8-32,rtn-4-32,rtn-4--1",
        help="method-bits-group, comma separated (group -1 = per channel)",
    )
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--out", default="bench/export_quant.json")
    args = ap.parse_args()

    import torch
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import calibration_texts, quantize, variant_name
    from thinktune.export.verify import verify_variants
    from thinktune.spec import VerifySpec

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    t0 = time.monotonic()
    setup = {}
    if args.merged:
        merged, test = Path(args.merged), Path(args.test)
        train = test.with_name("train.json")
    else:
        from thinktune.export.merge import merge_adapter
        from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset
        from thinktune.tiny_model import make_tiny_model

        base = make_tiny_model(work / "base", hidden_size=128, intermediate=256, heads=4, kv_heads=2)
        adapter = make_tiny_adapter(base, work / "adapter")
        t = time.monotonic()
        merged = Path(merge_adapter(base, adapter, work / "merged", backend="peft")["path"])
        setup["merge_s"] = round(time.monotonic() - t, 2)
        ds = write_tiny_dataset(work / "ds", n_test=8)
        test, train = ds / "test.json", ds / "train.json"
        setup["model"] = "tiny random Qwen3 (hidden 128, 2 layers, intermediate 256, vocab 151936) + LoRA r8"
    setup["setup_s"] = round(time.monotonic() - t0, 2)
    samples = load_samples(test, limit=args.samples)
    calib = None
    rows, variants = [], []
    for spec in args.variants.split(","):
        method, bits, group = spec.split("-", 2)
        bits, group = int(bits), int(group)
        name = f"{variant_name(method, bits)}-g{group}"
        dst = work / name
        if method == "gptq" and calib is None:
            calib = calibration_texts(load_samples(train), 128)
        t = time.monotonic()
        try:
            quantize(method, merged, dst, bits=bits, group_size=group, calibration=calib)
        except Exception as e:  # noqa: BLE001 - record and go on
            rows.append({"variant": name, "error": str(e)})
            continue
        rows.append(
            {
                "variant": name,
                "method": method,
                "bits": bits,
                "group_size": group,
                "quantize_s": round(time.monotonic() - t, 2),
                "size_bytes": _size(dst),
                "weights_bytes": _weights_size(dst),
                "quantized_linear_bytes": _linear_bytes(dst),
            }
        )
        variants.append({"name": name, "path": str(dst)})
    t = time.monotonic()
    res = verify_variants(
        str(merged),
        variants,
        samples,
        spec=VerifySpec(samples=args.samples),
        max_new_tokens=args.max_new_tokens,
    )
    verify_s = round(time.monotonic() - t, 2)
    for r in rows:
        v = res["variants"].get(r["variant"])
        if v:
            r.update(
                {
                    k: v.get(k)
                    for k in (
                        "perplexity",
                        "perplexityIncrease",
                        "top1Agreement",
                        "charAccuracyVsMerged",
                        "verified",
                        "warnings",
                    )
                }
            )
    out = {
        "what": "export stage: quantize + verify against the merged model (thinktune.export)",
        "date": datetime.now(UTC).date().isoformat(),
        "command": "uv run --no-sync python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "setup": setup,
        "merged_weights_bytes": _weights_size(merged),
        "merged_linear_bytes": _merged_linear_bytes(merged),
        "verification": {
            "samples": res["samples"],
            "max_new_tokens": args.max_new_tokens,
            "seconds": verify_s,
            "merged_perplexity": res["merged"]["perplexity"],
        },
        "variants": rows,
        "note": (
            "tiny random model: numbers measure cost and relative degradation, not quality"
            if not args.merged
            else ""
        ),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
