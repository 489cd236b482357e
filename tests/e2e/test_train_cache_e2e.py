"""A gang restart on CPU (tiny Qwen3, 2 processes under torchrun + gloo, neat packing): the first attempt fails at
step 2 with an INJECTED GPU failure, the second starts again in the same output dir and must load the tokenized
dataset rank 0 saved (LLaMA Factory's "Loading dataset from disk"), not tokenize again (no checkpoint is saved
before the failure: resuming a 2-rank CPU checkpoint fails in torch.load on storage tagged "cpu:0", unrelated to
the cache); tokens/s under packing comes from thinktune's non-padding count (thinktune/train/worker_callbacks.py),
checked against the saved rows."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk
from test_train_e2e import make_job, write_dataset
from thinktune import contract
from thinktune.resolve import resolve_resource
from thinktune.spec import FineTuneJob

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("THINKTUNE_METRICS_PORT", "off")
    for k in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)


@pytest.mark.timeout(2400)  # two torchrun launches of 2 ranks each, plus making the tiny model
def test_restart_loads_the_tokenized_dataset_and_counts_packed_tokens(tmp_path, monkeypatch):
    from thinktune.train.job import TrainingFailed, train_job

    write_dataset(tmp_path / "ds")
    raw = make_job(tmp_path, "gang", max_steps=4, save_steps=100, eval_steps=100).model_dump(
        by_alias=True, exclude_none=True
    )
    raw["spec"]["training"]["packing"] = True
    job = FineTuneJob.model_validate(raw)
    out = tmp_path / "gang"
    monkeypatch.setenv("THINKTUNE_INJECT_FAILURE", "2:CUDA error: unspecified launch failure (INJECTED)")
    with pytest.raises(TrainingFailed) as ei:
        train_job(resolve_resource(job, tmp_path), progress=False, env={"NPROC_PER_NODE": "2"})
    assert ei.value.exit_code == contract.EXIT_GPU_FAILURE
    first_log = (out / "logs" / "attempt-0.log").read_text(errors="replace")
    assert "Running tokenizer on dataset" in first_log and "Loading dataset from disk" not in first_log
    (cached,) = (out / ".thinktune" / "tokenized").iterdir()  # published once, no staging left
    assert ".partial-" not in cached.name and (cached / "dataset_dict.json").is_file()

    monkeypatch.delenv("THINKTUNE_INJECT_FAILURE")
    report = train_job(resolve_resource(job, tmp_path), progress=False, env={"NPROC_PER_NODE": "2"})
    assert report["outcome"] == "Succeeded"
    second_log = (out / "logs" / "attempt-0.log").read_text(errors="replace")
    assert "Loading dataset from disk" in second_log, second_log[-3000:]
    assert "Running tokenizer on dataset" not in second_log
    assert [p.name for p in (out / ".thinktune" / "tokenized").iterdir()] == [cached.name]

    # tokens per step: 4 packed rows (micro-batch 2 x 2 ranks), each counted without its padding
    plan = report["plan"]
    assert plan["args"]["include_num_input_tokens_seen"] == "no" and plan["args"]["neat_packing"] is True
    pad = 151643  # Qwen3's <|endoftext|>: LF pads packed rows with the tokenizer's pad token
    rows = sorted(sum(t != pad for t in r) for r in load_from_disk(str(cached))["train"]["input_ids"])
    rows_per_step = plan["global_batch_size"]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    assert train and all(r["tokens_per_second"] is None or r["tokens_per_second"] > 0 for r in train)
    steps = {r["step"]: r["tokens_seen"] for r in train}
    deltas = [steps[s] - steps[s - 1] for s in sorted(steps) if s - 1 in steps]
    assert deltas, steps
    for d in deltas:
        assert sum(rows[:rows_per_step]) <= d <= sum(rows[-rows_per_step:]), (d, rows)
