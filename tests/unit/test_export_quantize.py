"""QuantizeSpec decisions (names, bits, groups), calibration rows from the real tiny dataset writer, the advice a
degraded variant gets, and the missing-package message. Quantizing real models is in tests/e2e/test_export_tiny.py."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import ValidationError
from thinktune.export import quantize as Q
from thinktune.export.verify import alternatives
from thinktune.spec import ModelExportSpec, QuantizeSpec


def test_variant_names_and_bits():
    assert [QuantizeSpec(method=m).variant_name() for m in ("int8", "int4", "gptq")] == [
        "int8",
        "int4",
        "gptq-int4",
    ]
    assert QuantizeSpec(method="gptq", bits=8, group_size=32).variant_name() == "gptq-int8-g32"
    assert (
        QuantizeSpec(method="int4", group_size=-1, format="gptq").variant_name() == "int4-channel-gptq-format"
    )
    assert [Q.variant_bits(QuantizeSpec(method=m)) for m in ("int8", "int4", "gptq")] == [8, 4, 4]
    with pytest.raises(ValidationError, match="bits is only for method gptq"):
        QuantizeSpec(method="int8", bits=4)
    with pytest.raises(ValidationError, match="'int8', 'int4' or 'gptq'"):
        QuantizeSpec.model_validate({"method": "rtn", "bits": 8})


def test_duplicate_variant_names_are_refused():
    base = {"adapter": {"path": "a"}, "baseModel": {"nameOrPath": "b"}, "output": {"path": "o"}}
    with pytest.raises(ValidationError, match="two variants named int4; give one a name"):
        ModelExportSpec.model_validate({**base, "quantize": [{"method": "int4"}, {"method": "int4"}]})
    ok = ModelExportSpec.model_validate(
        {**base, "quantize": [{"method": "int4"}, {"method": "int4", "name": "int4-b"}]}
    )
    assert [q.variant_name() for q in ok.quantize] == ["int4", "int4-b"]


@pytest.mark.parametrize(
    "dims,req,want",
    [([2560, 9728], 128, 128), ([64, 128], 128, 64), ([96, 160], 128, 32), ([64], -1, -1), ([48], 32, 16)],
)
def test_effective_group_size(dims, req, want):
    g, note = Q.effective_group_size(dims, req)
    assert g == want and all(d % g == 0 for d in dims if g > 0)
    assert (note is None) == (g == req)
    if note:
        assert f"group size {req} requested, {g} used" in note


def test_calibration_rows_cover_chinese_training_text(tmp_path):
    """Rows from the tiny dataset writer's train split: exactly seq_len tokens each (auto-round drops shorter
    rows), wrapping when the split is short, and the Chinese text is in them."""
    pytest.importorskip("tiktoken")
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.testing import write_tiny_dataset
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer

    tok = load_qwen3_tokenizer()  # the real Qwen3 BPE, built offline
    samples = load_samples(write_tiny_dataset(tmp_path / "ds") / "train.json")
    rows, stats = Q.calibration_batches(samples, tok, 50, 64)
    assert len(rows) == 50 and all(tuple(r.shape) == (1, 64) for r in rows)
    assert stats["distinctTokens"] < 50 * 64 == stats["tokens"]  # the 8 samples are shorter: the stream wraps
    assert stats["chineseChars"] > 300 and stats["samples"] == 8
    decoded = tok.decode(rows[0][0].tolist())
    assert "SM2" in decoded and "椭圆曲线" in decoded
    with pytest.raises(Q.QuantizationError, match="train split is empty"):
        Q.calibration_batches([], tok, 4, 16)


def test_alternatives_name_the_way_out():
    assert alternatives({"method": "int4", "bits": 4, "group_size": 128}) == (
        "try 8-bit (method int8) instead of 4-bit, or calibrated 4-bit (method gptq) instead of "
        "round-to-nearest, or a smaller group (groupSize 64)"
    )
    gptq = alternatives({"method": "gptq", "bits": 4, "group_size": 64, "calibration_rows": 16})
    assert "calibrationSamples 16 -> 128" in gptq and "8-bit" in gptq and "groupSize 32" in gptq
    assert alternatives({"method": "int8", "bits": 8, "group_size": 32}) == "keep the merged model"


def test_missing_library_is_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "auto_round" else real(name, *a)
    )
    with pytest.raises(
        Q.QuantizationUnavailable, match=r"needs auto_round, which are not installed.*uv sync"
    ):
        Q.check_available()
