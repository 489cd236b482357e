"""Job resolution (thinktune/resolve.py) and train_job's steps (no training here; tests/e2e/test_train_e2e.py trains)."""

from __future__ import annotations

import json

import pytest
from thinktune.errors import InputError
from thinktune.resolve import ResolvedDataset, ResolvedJob, resolve_model
from thinktune.spec import FineTuneJob, ModelSource
from thinktune.train.job import train_job
from thinktune.train.launcher import build_command, find_last_checkpoint
from thinktune.train.planner import WorldInfo


def test_inspect_dataset(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([{"messages": []}] * 5))
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {"crypto_zh_train": {"file_name": "train.json"}, "crypto_zh_val": {"file_name": "val.json"}}
        )
    )
    ds = ResolvedDataset.inspect(tmp_path)
    assert (ds.name, ds.has_val, ds.train_samples, ds.dir) == ("crypto_zh", True, 5, tmp_path.resolve())
    assert ds.split("train") == tmp_path / "train.json" and ds.split("test") is None
    (tmp_path / "dataset_info.json").write_text(json.dumps({"x_test": {"file_name": "t.json"}}))
    with pytest.raises(InputError, match="NAME_train"):
        ResolvedDataset.inspect(tmp_path)
    with pytest.raises(InputError, match="DatasetBuild"):
        ResolvedDataset.inspect(tmp_path / "missing")


def test_resolve_model(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(ModelSource(name_or_path="m"), tmp_path) == str((tmp_path / "m").resolve())
    assert (
        resolve_model(ModelSource(name_or_path="Qwen/Qwen3-4B-Thinking-2507"), tmp_path)
        == "Qwen/Qwen3-4B-Thinking-2507"
    )
    with pytest.raises(InputError, match="makeTiny"):
        resolve_model(ModelSource(name_or_path=str(tmp_path / "nope")), tmp_path)
    # --model: a hub id stays one, an existing path becomes absolute
    assert resolve_model(ModelSource(), tmp_path, override="Org/x") == "Org/x"
    assert resolve_model(ModelSource(), tmp_path, override=str(tmp_path / "m")) == str(
        (tmp_path / "m").resolve()
    )


def test_launcher_command_and_checkpoints(tmp_path):
    cmd = build_command("/o/c.json", WorldInfo(), force_torchrun=False)
    assert cmd[1:] == ["-m", "thinktune.train.worker", "/o/c.json"]
    w = WorldInfo(nnodes=2, nproc_per_node=4, node_rank=1, master_addr="job-0.job", master_port=29500)
    cmd = build_command("/o/c.json", w)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    for flag in (
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=4",
        "--master_addr=job-0.job",
        "--master_port=29500",
    ):
        assert flag in cmd
    assert find_last_checkpoint(tmp_path) is None
    for n in (5, 10, 40):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-50").mkdir()  # incomplete: no trainer_state.json
    assert find_last_checkpoint(tmp_path).name == "checkpoint-40"


def test_train_job_refuses_to_resume_a_finished_run(tmp_path):
    """LLaMA Factory would "resume" a finished run from its last checkpoint and train nothing; train_job
    refuses (the runner skips or moves the run aside before it gets here: tests/unit/test_runner.py)."""
    out = tmp_path / "out"
    (out / "checkpoint-30").mkdir(parents=True)
    (out / "checkpoint-30" / "trainer_state.json").write_text("{}")
    (out / "report.json").write_text(json.dumps({"outcome": "Succeeded", "adapter_path": str(out)}))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_info.json").write_text(json.dumps({"x_train": {"file_name": "train.json"}}))
    resource = FineTuneJob.model_validate(
        {
            "apiVersion": "thinktune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "j"},
            "spec": {"dataset": {"path": "ds"}, "output": {"path": "out"}},
        }
    )
    job = ResolvedJob(
        resource=resource, model="m", dataset=ResolvedDataset.inspect(tmp_path / "ds"), output_dir=out
    )
    with pytest.raises(InputError, match="finished training run"):
        train_job(job, log=lambda s: None)


def test_sharded_strategies_always_use_torchrun():
    from thinktune.train.launcher import needs_torchrun

    assert needs_torchrun({"deepspeed": "/o/plan/ds_z3_config.json"})
    assert needs_torchrun({"fsdp": "full_shard auto_wrap"})
    assert not needs_torchrun({"per_device_train_batch_size": 2})
