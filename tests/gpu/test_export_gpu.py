"""Export on a CUDA GPU: auto-round quantizes on the GPU (calibrated gptq 4-bit in GPTQ format, int8 in
compressed-tensors) and verification loads the variants there; bench/export_gpu.py's own path on the tiny model.
Skipped without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from thinktune.export.merge import merge_adapter
    from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset
    from thinktune.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("gpu-export")
    # hidden 128 / intermediate 256: group 128 divides every input dim, as on Qwen3-4B
    base = make_tiny_model(root / "base", hidden_size=128, heads=4, kv_heads=2, intermediate=256)
    adapter = make_tiny_adapter(base, root / "adapter")
    merged = merge_adapter(base, adapter, root / "merged", backend="peft")
    return {"root": root, "merged": merged["path"], "ds": write_tiny_dataset(root / "ds")}


def test_quantize_and_verify_on_cuda(work):
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import calibration_batches, quantize
    from thinktune.export.verify import verify_variants
    from thinktune.spec import QuantizeSpec, VerifySpec
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work["merged"])
    calib, _ = calibration_batches(load_samples(work["ds"] / "train.json"), tok, 16, 128)
    variants = []
    for q in (QuantizeSpec(method="gptq", iterations=20, format="gptq"), QuantizeSpec(method="int8")):
        info = quantize(q, work["merged"], work["root"] / q.variant_name(), calibration=calib)
        assert info["device"] == "cuda" and info["group_size"] == 128 and not info["notes"]
        variants.append({"name": q.variant_name(), "path": info["path"], "info": info})
    res = verify_variants(
        work["merged"], variants, load_samples(work["ds"] / "test.json"), spec=VerifySpec(samples=4)
    )
    v8 = res["variants"]["int8"]
    assert v8["verified"] and v8["top1Agreement"] > 0.97, v8
    g = res["variants"]["gptq-int4-gptq-format"]
    assert g["quantization"]["quant_method"] == "gptq" and g["top1Agreement"] > 0.5, g
    assert all(v["roundTrip"]["exact"] == 4 for v in res["variants"].values())


def test_bench_export_gpu_tiny(tmp_path):
    """bench/export_gpu.py end to end on the tiny model (the H200 run uses the same code at the 4B shape)."""
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(ROOT / "bench" / "export_gpu.py"), str(tmp_path / "w"), "--tiny"]
    cmd += ["--iterations", "10", "--calibration-samples", "8", "--seq-len", "128", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (
        report["device"] != "cpu" and report["phases"]["quantize gptq-int4-gptq-format"]["peak_gpu_gib"] > 0
    )
    assert set(report["variants"]) == {"gptq-int4-gptq-format", "int8"}
