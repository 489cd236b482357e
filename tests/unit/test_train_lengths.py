"""Token lengths against cutoffLen before training (thinktune/train/lengths.py), with the real Qwen3 tokenizer
(built offline): over-long samples fail the job with the numbers, or are dropped into a rejects file; the
planner takes the longest sample when cutoffLen is unset."""

from __future__ import annotations

import json

import pytest
from thinktune.errors import InputError
from thinktune.qwen_tokenizer import load_tokenizer
from thinktune.resolve import ResolvedDataset
from thinktune.spec import FineTuneJobSpec
from thinktune.train.lengths import REJECTS_FILE, count_lengths, enforce_cutoff


def _row(answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": "什么是 SM4？"},
            {"role": "assistant", "content": f"<think>\n想一想\n</think>\n\n{answer}"},
        ]
    }


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:qwen3")


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    short, long = _row("SM4 是分组密码。"), _row("SM4 是分组密码，" * 200)
    (d / "train.json").write_text(json.dumps([short, long, short, long, short], ensure_ascii=False))
    (d / "val.json").write_text(json.dumps([short, long], ensure_ascii=False))
    info = {"x_train": {"file_name": "train.json"}, "x_val": {"file_name": "val.json"}}
    (d / "dataset_info.json").write_text(json.dumps(info))
    return ResolvedDataset.inspect(d)


def test_overlong_samples_fail_with_the_numbers(dataset, tokenizer, tmp_path):
    lengths = count_lengths(dataset, tokenizer)
    assert [n > 512 for n in lengths.per_split["train"]] == [False, True, False, True, False]
    assert lengths.longest > 1000
    with pytest.raises(InputError) as e:
        enforce_cutoff(
            dataset, lengths, 512, policy="fail", output_dir=tmp_path / "out", what="FineTuneJob/j"
        )
    msg = str(e.value)
    assert "3 of 7 samples (2 of 5 train, 1 of 2 val) are longer than spec.training.cutoffLen 512" in msg
    assert f"longest {lengths.longest}" in msg and "overlongSamples: drop" in msg
    assert f"cutoffLen: {-(-lengths.longest // 256) * 256}" in msg
    # long enough: the dataset is used as it is
    assert enforce_cutoff(dataset, lengths, 4096, policy="fail", output_dir=tmp_path, what="j") is dataset


def test_drop_writes_the_rest_and_a_rejects_file(dataset, tokenizer, tmp_path):
    lengths = count_lengths(dataset, tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    kept = enforce_cutoff(dataset, lengths, 512, policy="drop", output_dir=out, what="FineTuneJob/j")
    assert kept.dir == (out / "dataset").resolve() and (kept.train_samples, kept.has_val) == (3, True)
    assert count_lengths(kept, tokenizer).longest <= 512  # LLaMA Factory reads this directory: nothing to cut
    rejects = [json.loads(x) for x in (out / REJECTS_FILE).read_text().splitlines()]
    assert [(r["split"], r["row"]) for r in rejects] == [("train", 1), ("train", 3), ("val", 1)]
    assert all(r["tokens"] > 512 and r["messages"] for r in rejects)


def test_the_parent_counts_with_the_model_dirs_tokenizer_json_and_gets_transformers_counts(
    tokenizer, tmp_path
):
    """The trainer's parent counts through ``tokenizers`` (load_counting_tokenizer) so it never imports
    transformers/torch; LLaMA Factory tokenizes with transformers: the counts must be the same, on the corpus,
    the gold documents (written by other hands, Traditional script, emoji, code) and the chat rendering."""
    import subprocess
    import sys
    from pathlib import Path

    from thinktune.data.validate import render_chat, token_lengths
    from thinktune.qwen_tokenizer import load_counting_tokenizer

    repo = Path(__file__).resolve().parents[2]
    model = tmp_path / "model"
    tokenizer.save_pretrained(model)
    fast = load_counting_tokenizer(model)
    assert type(fast).__module__.startswith("tokenizers")  # the fast path, not transformers
    docs = sorted((repo / "tests" / "data" / "gold").rglob("*.md")) + sorted(
        (repo / "examples" / "crypto" / "corpus").rglob("*.md")
    )
    texts = [d.read_bytes().decode("utf-8", errors="replace") for d in docs]
    assert len(texts) > 40
    chats = [
        render_chat([{"role": "user", "content": t[:200]}, {"role": "assistant", "content": t}])
        for t in texts
    ]
    mixed = ["e\u0301 café\u3000全角　空格 \U0001f510🔑", "\ufeff", "", "<think>\n\n</think>\n\n"]
    for batch in (texts, chats, mixed):
        assert token_lengths(batch, fast) == token_lengths(batch, tokenizer)
    code = (
        "import sys; from thinktune.qwen_tokenizer import load_counting_tokenizer as L; "
        "from thinktune.data.validate import token_lengths as T; "
        f"assert T(['密码学'], L({str(model)!r}))[0] > 0; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_planner_takes_the_longest_sample_when_cutoff_is_unset():
    from thinktune.hardware import HardwareInfo
    from thinktune.train.memory import ModelShape
    from thinktune.train.planner import DatasetFacts, WorldInfo, plan

    CPU = {"cuda_available": False, "gpus": [], "cpu_count": 2, "ram_total_gib": 23.0, "disk_free_gib": 50.0}

    def cutoff(training: dict, longest: int | None) -> int:
        spec = FineTuneJobSpec.model_validate(
            {"output": {"path": "o"}, "dataset": {"path": "d"}, "training": training}
        )
        p = plan(
            spec,
            HardwareInfo.from_dict(CPU),
            model=ModelShape.qwen3_4b(),
            world=WorldInfo(),
            dataset=DatasetFacts(size=100, longest_sample=longest),
        )
        return p.cutoff_len

    assert cutoff({}, 700) == 768  # unset: the longest sample, rounded up to 256
    assert cutoff({}, None) == 4096  # unknown lengths: the default
    assert cutoff({"cutoffLen": 2048}, 700) == 2048  # set: the user's value
