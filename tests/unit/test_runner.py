"""The local runner: how CRs are resolved into one job, and exit codes the operator relies on.
(Its termination messages are round-tripped in tests/unit/test_contract.py.)"""

from __future__ import annotations

import json

from thinktune import contract, runner
from thinktune.errors import TrainingFailed


def _dataset(d):
    d.mkdir(parents=True)
    (d / "train.json").write_text(json.dumps([{"messages": []}] * 3))
    (d / "dataset_info.json").write_text(json.dumps({"x_train": {"file_name": "train.json"}}))
    return d


def test_stage_exit_code_reaches_the_process(tmp_path, monkeypatch):
    """A training failure with the GPU-failure code must become the command's exit status. The failure is
    simulated: a physical GPU cannot fail on this machine (the classifier itself is tested on real messages)."""
    import thinktune.train.job as job

    def fail(*a, **k):
        raise TrainingFailed("GPU lost", exit_code=contract.EXIT_GPU_FAILURE, report={})

    monkeypatch.setattr(job, "train_job", fail)
    ds = _dataset(tmp_path / "ds")
    f = tmp_path / "ftj.yaml"
    f.write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j}\n"
        f"spec:\n  dataset: {{path: {ds}}}\n  output: {{path: out}}\n"
    )
    assert (
        runner.run_path(f, only_kind="FineTuneJob", force=True, progress=False) == contract.EXIT_GPU_FAILURE
    )


def test_dataset_ref_resolves_among_the_crs_beside_the_file(tmp_path):
    _dataset(tmp_path / "out" / "ds")
    (tmp_path / "dsb.yaml").write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: DatasetBuild\nmetadata: {name: d1}\n"
        "spec: {source: {path: corpus}, output: {path: out/ds}}\n"
    )
    (tmp_path / "ftj.yaml").write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j1}\n"
        "spec: {datasetRef: {name: d1}, model: {nameOrPath: Org/model}, output: {path: out/lora}}\n"
    )
    loaded = runner.load_path(tmp_path / "ftj.yaml")
    job = runner._Pool(
        tmp_path / "ftj.yaml", loaded, only_kind="FineTuneJob", model_override=None, dataset_dir=None
    ).job("j1")
    assert job.dataset.dir == (tmp_path / "out" / "ds").resolve()
    assert (job.dataset.name, job.dataset.train_samples, job.dataset.has_val) == ("x", 3, False)
    assert job.model == "Org/model" and job.output_dir == (tmp_path / "out" / "lora").resolve()


def test_missing_dataset_ref_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "ftj.yaml").write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j1}\n"
        "spec: {datasetRef: {name: nope}, output: {path: out/lora}}\n"
    )
    assert (
        runner.run_path(tmp_path / "ftj.yaml", only_kind="FineTuneJob", progress=False) == contract.EXIT_USAGE
    )
    err = capsys.readouterr().err
    assert "datasetRef.name='nope'" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------------------
# Re-runs: the fingerprint of spec + data + base model decides skip / resume / fresh (thinktune/fingerprint.py).
# The trainer is a stand-in that writes what LLaMA Factory leaves in output_dir (checkpoint-N with
# trainer_state.json, the adapter) and records whether it found a checkpoint to resume; real training
# re-runs are in tests/e2e/test_train_e2e.py.


class FakeTrainer:
    def __init__(self, steps: int = 4):
        self.calls: list[dict] = []
        self.steps = steps
        self.fail_after: int | None = None

    def __call__(self, job, **kw):
        from thinktune.train.launcher import find_last_checkpoint

        out = job.output_dir
        last = find_last_checkpoint(out)
        start = int(last.name.split("-")[1]) if last else 0
        self.calls.append(
            {"resumed_from": last.name if last else None, "lr": job.resource.spec.training.learning_rate}
        )
        for step in range(start + 2, self.steps + 1, 2):
            (out / f"checkpoint-{step}").mkdir(parents=True)
            (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
            if self.fail_after is not None and step >= self.fail_after:
                self.fail_after = None
                raise TrainingFailed("worker exit 1 (failed): killed", exit_code=1, report={})
        (out / "adapter_config.json").write_text("{}")
        (out / "report.json").write_text(json.dumps({"outcome": "Succeeded", "adapter_path": str(out)}))
        plan = contract.PlanSummary(
            strategy="single",
            device="cpu",
            precision="fp32",
            method="lora",
            world_size=1,
            nnodes=1,
            nproc_per_node=1,
            micro_batch_size=1,
            gradient_accumulation_steps=1,
            global_batch_size=1,
            gradient_checkpointing=False,
            liger_kernel=False,
            cutoff_len=256,
        )
        return {
            "adapter_path": str(out),
            "status": {"phase": "Succeeded", "plan": plan.model_dump(by_alias=True)},
        }


def _rerun_setup(tmp_path, monkeypatch, lr="1e-4"):
    import thinktune.train.job as job

    fake = FakeTrainer()
    monkeypatch.setattr(job, "train_job", fake)
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    ds = tmp_path / "ds"
    if not ds.exists():
        _dataset(ds)
    f = tmp_path / "ftj.yaml"
    f.write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j}\n"
        f"spec:\n  dataset: {{path: {ds}}}\n  model: {{nameOrPath: Org/model}}\n  output: {{path: out}}\n"
        f"  training: {{learningRate: {lr}}}\n"
    )
    return fake, f


def _train(f, **kw):
    return runner.run_path(f, only_kind="FineTuneJob", progress=False, **kw)


def test_unchanged_finished_job_is_skipped_and_still_reports(tmp_path, monkeypatch, capsys):
    fake, f = _rerun_setup(tmp_path, monkeypatch)
    assert _train(f) == 0 and len(fake.calls) == 1
    (tmp_path / "termination-log").unlink()
    assert _train(f) == 0
    assert len(fake.calls) == 1  # not trained again, not "resumed" into a no-op
    assert "skipped — finished before with the same spec, data and base model" in capsys.readouterr().err
    # on a pod the operator still gets the result of the finished run
    msg = contract.read_termination_message((tmp_path / "termination-log").read_text())
    assert isinstance(msg, contract.TrainResult) and msg.adapter_path == str((tmp_path / "out").resolve())
    assert _train(f, force=True) == 0 and fake.calls[-1]["resumed_from"] is None
    assert [p.name for p in (tmp_path / "out" / "previous").iterdir()][0].startswith("1-")


def test_changed_data_starts_fresh_and_keeps_the_previous_run(tmp_path, monkeypatch, capsys):
    fake, f = _rerun_setup(tmp_path, monkeypatch)
    assert _train(f) == 0
    (tmp_path / "ds" / "train.json").write_text(json.dumps([{"messages": []}] * 4))
    assert _train(f) == 0
    assert len(fake.calls) == 2 and fake.calls[1]["resumed_from"] is None  # fresh, not from checkpoint-4
    err = capsys.readouterr().err
    assert "starting fresh — the data changed" in err
    (prev,) = (tmp_path / "out" / "previous").iterdir()
    assert (prev / "checkpoint-4" / "trainer_state.json").is_file() and (
        prev / "adapter_config.json"
    ).is_file()


def test_changed_hyperparameters_start_fresh(tmp_path, monkeypatch, capsys):
    fake, f = _rerun_setup(tmp_path, monkeypatch, lr="1e-4")
    assert _train(f) == 0
    fake, f = _rerun_setup(tmp_path, monkeypatch, lr="2e-4")
    assert _train(f) == 0
    assert fake.calls == [{"resumed_from": None, "lr": 2e-4}]
    assert "spec.training.learningRate: 0.0001 -> 0.0002" in capsys.readouterr().err


def test_interrupted_run_with_the_same_inputs_resumes(tmp_path, monkeypatch, capsys):
    """What a gang restarted by the operator does (same spec generation, same output dir): it resumes from the
    last checkpoint, whatever the attempt number."""
    fake, f = _rerun_setup(tmp_path, monkeypatch)
    fake.fail_after = 2
    assert _train(f) == 1
    assert json.loads((tmp_path / "out" / "status.local.json").read_text())["phase"] == "Failed"
    assert _train(f) == 0
    assert fake.calls[1]["resumed_from"] == "checkpoint-2"
    assert "resuming — an unfinished run with the same spec, data and base model" in capsys.readouterr().err
    assert not (tmp_path / "out" / "previous").exists()


def test_stopped_after_training_finishes_the_stage_without_training_again(tmp_path, monkeypatch):
    """A pod killed after training but before the stage finished (during evaluation) restarts: the finished
    training is not "resumed" (LLaMA Factory would train 0 steps) nor refused; the stage completes."""
    fake, f = _rerun_setup(tmp_path, monkeypatch)
    assert _train(f) == 0
    (tmp_path / "out" / ".thinktune-state.json").unlink()  # killed before the finished state was written
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    report["status"] = json.loads((tmp_path / "out" / "status.local.json").read_text())
    (tmp_path / "out" / "report.json").write_text(json.dumps(report))  # what train_job writes
    assert _train(f) == 0
    assert len(fake.calls) == 1 and (tmp_path / "out" / ".thinktune-state.json").is_file()
