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
