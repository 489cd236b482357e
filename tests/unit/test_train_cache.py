"""What an attempt leaves for the next one (thinktune/train/cache.py, worker_callbacks.py) and the planner's part:
the tokenized-dataset path keyed by what shapes the rows, the kernel-cache environment, the staging + publish of a
freshly saved dataset, and the non-padding token count under packing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from thinktune.hardware import HardwareInfo
from thinktune.spec import FineTuneJobSpec
from thinktune.train import cache
from thinktune.train.memory import ModelShape
from thinktune.train.planner import DatasetFacts, WorldInfo, plan
from thinktune.train.worker_callbacks import (
    CausalRightPadding,
    LoraCastUnderAutocast,
    LoraScaledAddmm,
    NonPaddingTokens,
    PublishTokenized,
    worker_callbacks,
)

FORWARD_SHORTCUTS = [CausalRightPadding, LoraCastUnderAutocast, LoraScaledAddmm]

H200 = {
    "cuda_available": True,
    "gpus": [{"index": 0, "name": "NVIDIA H200", "total_gib": 139.8, "compute_capability": "9.0"}],
    "topology": {"interconnect": "single"},
    "cpu_count": 16,
    "ram_total_gib": 128.0,
    "disk_free_gib": 500.0,
}
PKGS = {"deepspeed": True, "liger_kernel": True, "bitsandbytes": True, "mcore_adapter": False}


def planned(training: dict | None = None, fingerprint: str | None = "fp-1", extra: dict | None = None):
    t = {"cutoffLen": 2048, "globalBatchSize": 16, **(training or {})}
    if extra:
        t["extraArgs"] = extra
    spec = FineTuneJobSpec.model_validate(
        {"output": {"path": "/out/job"}, "dataset": {"path": "/data/ds"}, "training": t}
    )
    return plan(
        spec,
        HardwareInfo.from_dict(H200),
        model=ModelShape.qwen3_4b(),
        world=WorldInfo(),
        dataset=DatasetFacts(size=1000, fingerprint=fingerprint),
        packages=PKGS,
    )


def test_tokenized_path_keyed_by_what_shapes_the_rows():
    base = planned().args["tokenized_path"]
    assert base.startswith("/out/job/.thinktune/tokenized/") and len(base.rsplit("/", 1)[1]) == 16
    assert planned().args["tokenized_path"] == base  # deterministic
    # an OOM retry changes the micro-batch only: the same cache
    assert planned({"microBatchSize": 2}).args["tokenized_path"] == base
    changed = {
        "cutoff": planned({"cutoffLen": 1024}),
        "packing": planned({"packing": True}),
        "mask_history": planned({"maskHistory": False}),
        "data or tokenizer": planned(fingerprint="fp-2"),
        "extraArgs train_on_prompt": planned(extra={"train_on_prompt": True}),
    }
    for what, p in changed.items():
        assert p.args["tokenized_path"] != base, what
    assert "tokenized_path" not in planned(fingerprint=None).args
    assert planned(extra={"tokenized_path": "/mine"}).args["tokenized_path"] == "/mine"


def test_input_fingerprint_follows_dataset_and_tokenizer_content(tmp_path):
    ds, model = tmp_path / "ds", tmp_path / "model"
    ds.mkdir()
    model.mkdir()
    (ds / "train.json").write_text("[1]")
    (model / "tokenizer.json").write_text("{}")
    (model / "model.safetensors").write_text("weights")
    a = cache.input_fingerprint(ds, str(model))
    (model / "model.safetensors").write_text("other weights")  # weights do not shape the tokens
    assert cache.input_fingerprint(ds, str(model)) == a
    (ds / "train.json").write_text("[2]")
    b = cache.input_fingerprint(ds, str(model))
    (model / "tokenizer.json").write_text('{"x": 1}')
    c = cache.input_fingerprint(ds, str(model))
    assert len({a, b, c}) == 3
    assert "hub:Qwen/Qwen3-4B" in cache.input_fingerprint(ds, "Qwen/Qwen3-4B")


def test_the_worker_counts_tokens_and_packing_warns_about_sdpa():
    p = planned({"packing": True})
    assert p.args["neat_packing"] is True and p.args["include_num_input_tokens_seen"] == "no"
    assert any("3x slower" in w and "flash-attn" in w for w in p.warnings), p.warnings
    # unpacked too: the Trainer's count syncs the host with the GPU on every micro-batch
    assert planned().args["include_num_input_tokens_seen"] == "no"
    # the worker then counts (the worker puts these before ThinktuneCallback), after the two forward shortcuts
    assert [type(cb) for cb in worker_callbacks(p.args, None)] == [*FORWARD_SHORTCUTS, NonPaddingTokens]
    assert [type(cb) for cb in worker_callbacks(planned().args, None)] == [
        *FORWARD_SHORTCUTS,
        NonPaddingTokens,
    ]


def test_kernel_cache_env_defaults_to_the_output_volume(tmp_path):
    env = cache.kernel_cache_env(tmp_path, {})
    assert env["TRITON_CACHE_DIR"] == str(tmp_path / ".thinktune" / "kernel-cache" / "triton")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / ".thinktune" / "kernel-cache" / "inductor")
    kept = cache.kernel_cache_env(tmp_path, {"TRITON_CACHE_DIR": "/fast/triton"})
    assert "TRITON_CACHE_DIR" not in kept and "TORCHINDUCTOR_CACHE_DIR" in kept
    assert env[cache.ENV_LAUNCH_ID] != kept[cache.ENV_LAUNCH_ID]  # a fresh staging name per launch


def test_staging_then_publish_never_exposes_a_partial_dataset(tmp_path):
    final = str(tmp_path / "tokenized" / "abc")
    args = {"tokenized_path": final}
    stale = Path(f"{final}{cache.PARTIAL}old")
    stale.mkdir(parents=True)  # a launch killed while saving
    (stale / cache.COMPLETE_FILE).write_text("{}")
    assert cache.prepare_tokenized(args, {cache.ENV_LAUNCH_ID: "L1"}) == final
    assert args["tokenized_path"] == f"{final}{cache.PARTIAL}L1"
    other = {"tokenized_path": final}  # another rank of the launch never reads what rank 0 is writing
    cache.prepare_tokenized(other, {cache.ENV_LAUNCH_ID: "L1", "RANK": "1"})
    assert other["tokenized_path"] != args["tokenized_path"]
    # LLaMA Factory's save (DatasetDict.save_to_disk on global rank 0), then the Trainer starts
    DatasetDict({"train": Dataset.from_dict({"input_ids": [[1, 2, 3]]})}).save_to_disk(args["tokenized_path"])
    (cb,) = [c for c in worker_callbacks(args, final) if isinstance(c, PublishTokenized)]
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True), None)
    assert load_from_disk(final)["train"][0]["input_ids"] == [1, 2, 3]
    assert not stale.exists() and not Path(args["tokenized_path"]).exists()
    # the next attempt loads the published dataset as it is
    again = {"tokenized_path": final}
    assert cache.prepare_tokenized(again, {cache.ENV_LAUNCH_ID: "L2"}) == final
    assert again["tokenized_path"] == final
    assert not any(isinstance(c, PublishTokenized) for c in worker_callbacks(again, final))


class Echo(torch.nn.Module):
    def forward(self, input_ids=None, attention_mask=None):
        return input_ids


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),  # plain padding mask
        torch.tensor([[1, 1, 2, 0], [1, 2, 0, 0]]),  # neat packing: segment ids (FlashAttention-2 path)
        None,  # sdpa neat packing: LF replaced it by a 4D float mask (below)
    ],
)
def test_non_padding_tokens_counts_real_tokens(mask):
    pad = 0
    ids = torch.tensor([[5, 6, 7, pad], [8, 9, pad, pad]])
    model, counter = Echo(), NonPaddingTokens()
    state = SimpleNamespace(num_input_tokens_seen=100)  # resumed: the count goes on
    counter.on_train_begin(
        SimpleNamespace(), state, None, model=model, processing_class=SimpleNamespace(pad_token_id=pad)
    )
    four_d = torch.zeros(2, 1, 4, 4).fill_(torch.finfo(torch.float32).min)
    for _ in range(3):  # 3 micro-batches per logging step
        model(input_ids=ids, attention_mask=mask if mask is not None else four_d)
    model.eval()
    model(input_ids=ids, attention_mask=mask)  # evaluation is not training throughput
    logs = {"loss": 1.0}
    counter.on_log(SimpleNamespace(device=torch.device("cpu")), state, None, logs=logs)
    assert state.num_input_tokens_seen == logs["num_input_tokens_seen"] == 100 + 3 * 5
    counter.on_log(SimpleNamespace(device=torch.device("cpu")), state, None, logs={"eval_loss": 1.0})
    assert state.num_input_tokens_seen == 115


def test_token_lengths_counted_once_per_input_fingerprint(tmp_path):
    from thinktune.train.lengths import Lengths

    calls = []

    def count():
        calls.append(1)
        return Lengths(per_split={"train": [5, 9], "val": [3]})

    first = cache.cached_lengths(tmp_path, "fp-1", count)
    (saved,) = (tmp_path / ".thinktune" / "lengths").iterdir()
    again = cache.cached_lengths(tmp_path, "fp-1", count)  # a restarted pod
    assert calls == [1] and again.per_split == first.per_split and again.longest == 9
    cache.cached_lengths(tmp_path, "fp-2", count)  # other data or tokenizer: counted again
    assert len(calls) == 2
    saved.write_text("{not json")  # a damaged file is counted again, never trusted
    assert cache.cached_lengths(tmp_path, "fp-1", count).per_split == first.per_split and len(calls) == 3
