"""RTN packing/round trip on plain tensors, and clear errors for methods that cannot run here."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

from thinktune.export import quantize as Q  # noqa: E402


@pytest.mark.parametrize(
    "bits,group,in_f", [(8, 32, 64), (4, 32, 64), (4, 128, 96), (8, -1, 70), (4, 32, 33)]
)
def test_rtn_round_trip(bits, group, in_f):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, in_f, generator=g) * 0.05
    q, s, z, padded, grp = Q.rtn_quantize_weight(w, bits, group)
    assert q.dtype == torch.uint8 and s.dtype == torch.float16 and z.dtype == torch.uint8
    assert padded % grp == 0 and padded >= in_f
    assert q.shape == (16, padded if bits == 8 else (padded + 1) // 2)
    back = Q.rtn_dequantize_weight(q, s, z, bits=bits, shape=(16, in_f), group=grp, padded_in=padded)
    assert back.shape == w.shape
    # error bounded by half a quantization step per group (plus fp16 scale rounding)
    step = s.float().repeat_interleave(grp, dim=1)[:, :in_f]
    assert ((back - w).abs() <= step * 0.5 + 1e-4).all()


def test_int4_worse_than_int8():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    errs = {}
    for bits in (8, 4):
        q, s, z, p, g = Q.rtn_quantize_weight(w, bits, 64)
        errs[bits] = (
            (Q.rtn_dequantize_weight(q, s, z, bits=bits, shape=w.shape, group=g, padded_in=p) - w)
            .abs()
            .mean()
        )
    assert errs[8] * 8 < errs[4]


def test_gptq_without_gptqmodel_is_a_clear_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("gptqmodel", "optimum") else real(name, *a),
    )
    with pytest.raises(Q.QuantizationUnavailable, match=r"uv sync --extra gptq") as e:
        Q.quantize("gptq", tmp_path / "merged", tmp_path / "out", bits=4, calibration=["x"])
    assert "gptqmodel" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_gpu_methods_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(Q, "_cuda_available", lambda: False)
    monkeypatch.setattr(Q, "_require_gptq_packages", lambda: None)
    with pytest.raises(Q.QuantizationUnavailable, match="CUDA GPU"):
        Q.check_available("gptq")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(Q.QuantizationUnavailable, match="bitsandbytes"):
            Q.check_available("bnb")
    else:
        with pytest.raises(Q.QuantizationUnavailable, match="CUDA GPU"):
            Q.check_available("bnb")
    Q.check_available("rtn")
    with pytest.raises(Q.QuantizationError, match="unknown"):
        Q.check_available("awq")


def test_calibration_texts_repeat_and_chunks():
    from thinktune.evaluate.metrics import Sample

    s = [Sample(messages=[{"role": "user", "content": "问"}], reference="<think>\n想\n</think>\n\n答")]
    texts = Q.calibration_texts(s, 3)
    assert (
        len(texts) == 3 and texts[0].startswith("<|im_start|>user\n问") and texts[0].endswith("<|im_end|>\n")
    )
    chunks = Q._chunks_longer_than(["a" * 10] * 7, 25)
    assert all(len(c) >= 25 for c in chunks) and sum(len(c) for c in chunks) == 70
