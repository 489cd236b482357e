"""The export stage on one GPU at Qwen3-4B's shape: merge a LoRA adapter -> GPTQ W4A16 (AutoRound, calibrated on the
train split, GPTQ format) and INT8 (W8A16 round-to-nearest, compressed-tensors) -> verification against the merged
model. Records per phase: wall time, peak GPU memory (torch.cuda.max_memory_allocated), peak host RSS, size on
disk, and the verification figures. Goal: GPTQ 4-bit of a 4B model in < 10 minutes on one H200.

The base is a random-weight model with Qwen3-4B's exact architecture (bench/train_planner_h200.py's builder; no hub
download: shape, not weights, sets time and memory), the adapter a random LoRA r16 on every linear layer (so the
merge is not the identity), the calibration set ~2k-token Chinese rows, the verification set the tiny Chinese QA
set. A random model's perplexity is ~vocab size and quantizes worse than a trained one: the figures measure cost
and the machinery, the verification numbers are a floor.

    python bench/export_gpu.py /tmp/export-gpu --json bench/results/export_gpu_h200.json     # one H200
    python bench/export_gpu.py /tmp/export-tiny --tiny --iterations 5 --calibration-samples 8 --seq-len 128 \
        --json /tmp/export-tiny.json                                                         # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AR_LOG_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class Phase:
    """Wall time, peak GPU memory and peak host RSS (lifetime maximum, so monotone) of one step."""

    def __init__(self, name: str, record: dict, on_exit=None):
        self.name, self.record, self.on_exit = name, record, on_exit

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        import torch

        entry = {"seconds": round(time.monotonic() - self.t0, 2)}
        if exc and exc[0] is not None:
            entry["completed"] = False
            entry["error"] = f"{exc[0].__name__}: {exc[1]}"[:500]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            entry["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        entry["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        self.record[self.name] = entry
        print(f"[export_gpu] {self.name}: {entry}", flush=True)
        if self.on_exit:
            self.on_exit()
        return False


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def random_adapter(base: Path, out: Path, *, rank: int = 16) -> Path:
    """A LoRA adapter with random A and B (peft's init_lora_weights=False) on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").is_file():
        return out
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=rank,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, cfg)
    with torch.no_grad():  # peft's random B is large; keep the merged weights in the base's range
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.01)
    model.save_pretrained(str(out))
    return out


def datasets(d: Path) -> Path:
    """train.json: long Chinese rows (calibration); test.json: the tiny Chinese QA set (verification)."""
    from thinktune.export.testing import QA, sample_record
    from train_planner_h200 import make_dataset

    make_dataset(d)
    (d / "test.json").write_text(
        json.dumps([sample_record(*qa) for qa in QA], ensure_ascii=False), encoding="utf-8"
    )
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--tiny", action="store_true", help="tiny Qwen3 instead of the 4B shape (CPU smoke run)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--calibration-samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=8, help="verification samples")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--merge-backend", default="peft", choices=["peft", "llamafactory", "auto"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--variants", default="gptq,int8", help="which of gptq,int8 to quantize (in that order)")
    ap.add_argument(
        "--reuse-merged",
        action="store_true",
        help="use OUT/base, OUT/adapter, OUT/merged as they are (built by another run of this script, which may "
        "still be quantizing): no build, no merge",
    )
    ap.add_argument(
        "--verify-each",
        action="store_true",
        help="verify each variant right after its quantization (the merged model is measured again per "
        "variant), so a run stopped at a time limit keeps the first variant's figures",
    )
    args = ap.parse_args()

    import torch
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.merge import merge_adapter
    from thinktune.export.quantize import calibration_batches, quantize
    from thinktune.export.verify import verify_variants
    from thinktune.spec import QuantizeSpec, VerifySpec
    from transformers import AutoTokenizer

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    phases: dict = {}
    rows: dict = {}
    report: dict = {
        "what": "export on one GPU: merge -> GPTQ W4A16 (AutoRound, GPTQ format) + INT8 (compressed-tensors) -> "
        "verify (bench/export_gpu.py)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": "tiny Qwen3 (hidden 128)" if args.tiny else "random-weight Qwen3-4B architecture (bf16)",
        "versions": {p: version(p) for p in ("auto-round", "compressed-tensors", "transformers", "torch")},
        "status": "running",
        "phases": phases,
        "variants": rows,
    }

    def save(status: str | None = None) -> None:
        """The JSON after every phase, so a run stopped at its time limit still leaves what it measured."""
        if status:
            report["status"] = status
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(
                json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
            )
            tmp.replace(args.json)

    if args.reuse_merged:  # another process of this script built base/adapter/merged in OUT (and times them)
        base, adapter, merged = out / "base", out / "adapter", out / "merged"
        if not (merged / "config.json").is_file():
            print(f"export_gpu: --reuse-merged but {merged} has no model", file=sys.stderr)
            return 2
        report["reused"] = (
            "base, adapter and merged model built by another run of this script in the same OUT"
        )
    with Phase("build_base", phases, save) if not args.reuse_merged else _noop():
        if args.reuse_merged:
            pass
        elif args.tiny:
            from thinktune.tiny_model import make_tiny_model

            base = out / "base"
            if not (base / "config.json").is_file():
                make_tiny_model(base, hidden_size=128, intermediate=256, heads=4, kv_heads=2)
        else:
            if not torch.cuda.is_available():
                print("export_gpu: the 4B shape needs a CUDA GPU (use --tiny on CPU)", file=sys.stderr)
                return 2
            from train_planner_h200 import make_qwen3_4b_random

            base = make_qwen3_4b_random(out / "base")
    ds = datasets(out / "dataset")
    if not args.reuse_merged:
        with Phase("adapter", phases, save):
            adapter = random_adapter(base, out / "adapter")
        with Phase("merge", phases, save):
            merged = Path(merge_adapter(base, adapter, out / "merged", backend=args.merge_backend)["path"])
    report["merged_size_bytes"] = _size(merged)
    tok = AutoTokenizer.from_pretrained(str(merged))
    variants = []
    specs = [
        QuantizeSpec(
            method="gptq",
            bits=4,
            format="gptq",
            iterations=args.iterations,
            calibration_samples=args.calibration_samples,
            calibration_seq_len=args.seq_len,
        ),
        QuantizeSpec(method="int8"),
    ]
    specs = [q for q in specs if q.method in args.variants.split(",")]

    def verify(vs: list, phase: str) -> None:
        with Phase(phase, phases, save):
            res = verify_variants(
                str(merged),
                vs,
                load_samples(ds / "test.json"),
                spec=VerifySpec(samples=args.samples),
                max_new_tokens=args.max_new_tokens,
                log=lambda m: print(f"[export_gpu] {m}", flush=True),
            )
        for name, v in res["variants"].items():
            rows[name]["verification"] = {k: v.get(k) for k in (
                "perplexity", "perplexityIncrease", "top1Agreement", "roundTrip", "charAccuracyVsMerged",
                "termAccuracy", "termAccuracyDrop", "verified", "warnings", "vllm",
            )}  # fmt: skip
        report["verification"] = {k: res.get(k) for k in ("samples", "maxNewTokens", "thresholds")}
        report.setdefault(
            "merged", res["merged"]
        )  # measured again per call with --verify-each: keep the first
        report.setdefault("merged_per_verify", []).append(res["merged"])
        report["vllm"] = res["vllm"]
        save()

    for q in specs:
        name = q.variant_name()
        calib = stats = None
        if q.method == "gptq":
            calib, stats = calibration_batches(
                load_samples(ds / "train.json"), tok, q.calibration_samples, q.calibration_seq_len
            )
        rows[name] = {"spec": q.model_dump(by_alias=True, exclude_none=True), "calibration": stats}
        try:
            with Phase(f"quantize {name}", phases):
                info = quantize(q, merged, out / name, calibration=calib)
        except Exception as e:  # noqa: BLE001 - record it, still quantize and verify the others
            rows[name].update(phases[f"quantize {name}"], error=f"{type(e).__name__}: {e}"[:1000])
            save()
            continue
        rows[name].update(
            group_size=info["group_size"],
            device=info["device"],
            size_bytes=_size(out / name),
            **phases[f"quantize {name}"],
        )
        variants.append({"name": name, "path": str(out / name), "info": info})
        save()
        if args.verify_each:  # this variant's figures land before the next quantization starts
            verify([variants[-1]], f"verify {name}")
    if variants and not args.verify_each:
        verify(variants, "verify")
    g = next((rows[q.variant_name()] for q in specs if q.method == "gptq"), {})
    gptq_s = g.get("seconds")
    gptq_ok = bool(g) and "error" not in g
    report["goal"] = {
        "gptq_4bit_under_s": 600,
        "gptq_4bit_s": gptq_s,
        "met": bool(gptq_ok and gptq_s is not None and gptq_s < 600),
    }
    save("complete")
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
