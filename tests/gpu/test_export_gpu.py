"""Export on a CUDA GPU: GPTQ int4 (gptqmodel) and bitsandbytes on the tiny Qwen3, verified against the merged
model; the CPU-capable paths (rtn, evaluation) on CUDA too. Skipped without CUDA / the packages."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from thinktune.export.merge import merge_adapter
    from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset
    from thinktune.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("gpu-export")
    # hidden 128 / intermediate 256 so that group size 64 divides every input dim
    base = make_tiny_model(root / "base", hidden_size=128, heads=4, kv_heads=2, intermediate=256)
    adapter = make_tiny_adapter(base, root / "adapter")
    merged = merge_adapter(base, adapter, root / "merged", backend="peft")
    return {
        "root": root,
        "base": base,
        "adapter": adapter,
        "merged": merged["path"],
        "ds": write_tiny_dataset(root / "ds"),
    }


@pytest.mark.skipif(
    importlib.util.find_spec("gptqmodel") is None or importlib.util.find_spec("optimum") is None,
    reason="needs the gptq extra (uv sync --extra gptq)",
)
def test_gptq_int4(work):
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import calibration_texts, quantize_gptq
    from thinktune.export.verify import verify_variants
    from thinktune.spec import VerifySpec

    texts = calibration_texts(load_samples(work["ds"] / "train.json"), 16)
    info = quantize_gptq(work["merged"], work["root"] / "gptq-int4", bits=4, group_size=64, texts=texts)
    out = work["root"] / "gptq-int4"
    assert info["method"] == "gptq" and any(out.glob("*.safetensors"))
    assert (out / "tokenizer.json").is_file()
    res = verify_variants(
        work["merged"],
        [{"name": "gptq-int4", "path": str(out)}],
        load_samples(work["ds"] / "test.json"),
        spec=VerifySpec(samples=4),
        max_new_tokens=16,
    )
    v = res["variants"]["gptq-int4"]
    assert "could not load" not in " ".join(v["warnings"]), v["warnings"]
    assert v["perplexity"] > 1 and v["top1Agreement"] is not None and v["top1Agreement"] > 0.5


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
@pytest.mark.parametrize("bits", [8, 4])
def test_bnb(work, bits):
    from thinktune.export.quantize import load_quantized, quantize_bnb

    out = work["root"] / f"bnb-int{bits}"
    quantize_bnb(work["merged"], out, bits=bits)
    model = load_quantized(out)
    with torch.no_grad():
        logits = model(torch.tensor([[151644, 872, 198, 100]], device=model.device)).logits
    assert torch.isfinite(logits).all()


def test_rtn_and_evaluate_on_cuda(work):
    from thinktune.evaluate.metrics import load_samples
    from thinktune.evaluate.run import evaluate_model
    from thinktune.export.quantize import load_rtn_model, quantize_rtn
    from thinktune.export.verify import verify_variants
    from thinktune.spec import EvaluationSpec, VerifySpec

    quantize_rtn(work["merged"], work["root"] / "rtn-int4", bits=4, group_size=64)
    assert next(load_rtn_model(work["root"] / "rtn-int4", device="cuda").parameters()).is_cuda
    res = verify_variants(
        work["merged"],
        [{"name": "rtn-int4", "path": str(work["root"] / "rtn-int4")}],
        load_samples(work["ds"] / "test.json"),
        spec=VerifySpec(samples=4),
        max_new_tokens=16,
    )
    assert res["variants"]["rtn-int4"]["top1Agreement"] > 0.5
    rep = evaluate_model(
        str(work["base"]),
        adapter_path=str(work["adapter"]),
        test_file=work["ds"] / "test.json",
        spec=EvaluationSpec(max_samples=4, max_new_tokens=16),
        output_dir=work["root"] / "eval",
        progress=False,
    )
    assert rep["samples"] == 4 and rep["metrics"]["perplexity"]["full"] > 1
