"""Evaluation plumbing without a model: thresholds -> recommendations, adapter/split/dataset lookup, card."""

from __future__ import annotations

import json

from thinktune.evaluate.run import recommendations
from thinktune.resolve import ResolvedDataset, find_adapter


def _metrics(rouge=0.1, term=0.3, compliance=0.5):
    return {
        "answer": {"rougeL": rouge, "termAccuracy": term, "bleu": 5.0},
        "thinking": {"rougeL": 0.4},
        "full": {},
        "thinkingCompliance": compliance,
        "perplexity": {"full": 12.0},
    }


def test_recommendations_are_concrete():
    per_term = [
        {"term": "SM9", "references": 4, "hits": 0, "accuracy": 0.0},
        {"term": "SM2", "references": 3, "hits": 3, "accuracy": 1.0},
    ]
    failed, recs = recommendations(
        _metrics(),
        {"rougeL": 0.2, "termAccuracy": 0.5, "thinking.rougeL": 0.3, "maxPerplexity": 10, "bogus": 1},
        per_term=per_term,
        generation={"hitLimit": 2, "missingClose": 3, "samples": 4, "maxNewTokens": 64},
        job={"epochs": 2.0, "loraRank": 8, "learningRate": 5e-5},
    )
    assert {f["metric"] for f in failed} == {"rougeL", "termAccuracy", "maxPerplexity"}
    text = "\n".join(recs)
    assert "numTrainEpochs 2 -> 3" in text and "lora.rank 8 -> 16" in text
    assert "SM9 (0/4)" in text and "SM2" not in text.split("weakest terms")[1].split(".")[0]
    assert "2/4 generations hit maxNewTokens (64)" in text
    assert "1/4 generations stopped without '</think>'" in text
    assert "learning rate 5e-05 is low" in text
    assert "Unknown threshold keys ignored: bogus" in text


def test_all_good_no_recommendations():
    failed, recs = recommendations(
        _metrics(0.5, 0.9, 1.0),
        {"rougeL": 0.2, "termAccuracy": 0.5},
        per_term=[],
        generation={"hitLimit": 0, "missingClose": 0, "samples": 4},
    )
    assert failed == [] and recs == []


def test_find_adapter_and_split(tmp_path):
    assert find_adapter(tmp_path) is None
    for step in (5, 20, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    assert find_adapter(tmp_path).name == "checkpoint-20"
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert find_adapter(tmp_path) == tmp_path / "adapter"
    (tmp_path / "adapter_config.json").write_text("{}")
    assert find_adapter(tmp_path) == tmp_path
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "crypto_test.json").write_text("[]")
    (ds / "crypto_train.json").write_text("[]")
    (ds / "dataset_info.json").write_text(
        json.dumps(
            {
                "crypto_train": {"file_name": "crypto_train.json"},
                "crypto_test": {"file_name": "crypto_test.json"},
            }
        )
    )
    d = ResolvedDataset.inspect(ds)
    assert d.split("test").name == "crypto_test.json"
    (ds / "test.json").write_text("[]")
    assert d.split("test").name == "test.json"
    assert d.split("val") is None


def test_modules_import_without_torch():
    """The operator image imports thinktune without torch: evaluate/export keep heavy imports in functions."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import thinktune.evaluate.run, thinktune.evaluate.review, thinktune.evaluate.metrics\n"
        "import thinktune.export.pipeline, thinktune.export.quantize, thinktune.export.verify\n"
        "import thinktune.export.merge, thinktune.export.card\n"
        "bad = [m for m in ('torch', 'transformers', 'peft', 'jieba') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
