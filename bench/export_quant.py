"""Benchmark of the export stage's quantization + verification (auto-round -> compressed-tensors / GPTQ format):
for each variant, time to quantize, size on disk, and the verification figures against the merged model
(perplexity increase, top-1 agreement, Chinese round-trip, term accuracy, warnings).

Default: the tiny random Qwen3 (hidden 128, so group 128 applies as on a real model) + a LoRA adapter trained
for a few steps (CPU) -- this measures the machinery (cost, format, int8 < int4 < 2-bit ordering), not model
quality; a random model's perplexity is ~vocab size. With ``--merged DIR --test FILE`` it measures a real merged
model (calibration from the ``train.json`` next to the test file; use a GPU for 4B, or bench/export_gpu.py).

    uv run --no-sync python bench/export_quant.py --out bench/export_quant.json
    uv run --no-sync python bench/export_quant.py --merged out/export/merged --test out/dataset/test.json \
        --variants int8,int4,gptq:iterations=200:calibration_samples=128 --samples 32 --out /tmp/q.json

A variant is ``method[:field=value...]`` with QuantizeSpec's field names (``gptq:bits=8:group_size=64``); ``bits=2``
(not allowed in a spec) makes the deliberately broken variant verification must catch.
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
os.environ.setdefault("AR_LOG_LEVEL", "WARNING")

DEFAULT_VARIANTS = (
    "int8,int4,int4:group_size=32,"
    "gptq:iterations=50:calibration_samples=32:calibration_seq_len=256,"
    "gptq:iterations=50:calibration_samples=32:calibration_seq_len=256:format=gptq,"
    "gptq:iterations=20:calibration_samples=16:calibration_seq_len=256:bits=2:name=gptq-int2-broken"
)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_variant(text: str):
    """(QuantizeSpec, bits override) from ``method[:k=v...]``."""
    from thinktune.spec import QuantizeSpec

    method, *pairs = text.split(":")
    fields = dict(p.split("=", 1) for p in pairs)
    bits = int(fields.pop("bits")) if "bits" in fields else None
    spec_bits = bits if bits in (4, 8) and method == "gptq" else None
    if bits == 2 and "name" not in fields:
        fields["name"] = f"{method}-int2"
    return QuantizeSpec(method=method, bits=spec_bits, **fields), bits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--merged", help="merged model dir (default: build the tiny model + adapter and merge)")
    ap.add_argument("--test", help="test split (default: the tiny dataset)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma separated, see the module docstring")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--out", default="bench/export_quant.json")
    args = ap.parse_args()

    import torch
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import calibration_batches, quantize
    from thinktune.export.verify import verify_variants
    from thinktune.spec import VerifySpec
    from transformers import AutoTokenizer

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
    tok = AutoTokenizer.from_pretrained(str(merged))
    rows, variants = [], []
    for text in args.variants.split(","):
        q, bits = parse_variant(text)
        name = q.variant_name()
        calib = stats = None
        if q.method == "gptq":
            calib, stats = calibration_batches(
                load_samples(train), tok, q.calibration_samples, q.calibration_seq_len
            )
        try:
            info = quantize(q, merged, work / name, calibration=calib, bits=bits)
        except Exception as e:  # noqa: BLE001 - record and go on
            rows.append({"variant": name, "spec": text, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(
            {
                "variant": name,
                "spec": text,
                "method": q.method,
                "format": q.format,
                "bits": info["bits"],
                "group_size": info["group_size"],
                "iterations": info["iterations"],
                "calibration": stats,
                "quantize_s": info["seconds"],
                "size_bytes": _size(work / name),
                "weights_bytes": sum(p.stat().st_size for p in (work / name).glob("*.safetensors")),
            }
        )
        variants.append({"name": name, "path": str(work / name), "info": info})
    t = time.monotonic()
    res = verify_variants(
        str(merged),
        variants,
        samples,
        spec=VerifySpec(samples=args.samples),
        max_new_tokens=args.max_new_tokens,
    )
    verify_s = round(time.monotonic() - t, 2)
    keys = (
        "perplexity",
        "perplexityIncrease",
        "top1Agreement",
        "roundTrip",
        "charAccuracyVsMerged",
        "termAccuracy",
        "verified",
        "warnings",
    )
    for r in rows:
        v = res["variants"].get(r["variant"])
        if v:
            r.update({k: v.get(k) for k in keys})
    from importlib.metadata import version

    out = {
        "what": "export stage: quantize (auto-round) + verify against the merged model (thinktune.export)",
        "date": datetime.now(UTC).date().isoformat(),
        "command": "uv run --no-sync python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "auto-round": version("auto-round"),
            "compressed-tensors": version("compressed-tensors"),
            "transformers": version("transformers"),
        },
        "setup": setup,
        "merged_weights_bytes": sum(p.stat().st_size for p in merged.glob("*.safetensors")),
        "verification": {
            "samples": res["samples"],
            "max_new_tokens": args.max_new_tokens,
            "seconds": verify_s,
            "merged_perplexity": res["merged"]["perplexity"],
            "merged_term_accuracy": res["merged"]["termAccuracy"],
            "vllm": res["vllm"],
        },
        "variants": rows,
        "note": (
            "tiny random model: numbers measure cost and relative degradation, not quality; its 151936 x 128 "
            "embedding (not quantized) is most of every checkpoint's size"
            if not args.merged
            else ""
        ),
    }
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
