"""Local runner pieces that the operator relies on: termination messages and exit codes."""

from __future__ import annotations

import json

from thinktune import runner


def test_termination_message_is_compact_json_under_4k(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv(runner.TERMINATION_LOG_ENV, str(log))
    runner.write_termination_message(
        {
            "adapterPath": "/out/lora",
            "metrics": {"evalLoss": 1.5},
            "plan": {"notes": "x" * 10_000},
            "oomRetries": 0,
            "skip": None,
        }
    )
    data = json.loads(log.read_text())
    assert data["adapterPath"] == "/out/lora" and data["metrics"] == {"evalLoss": 1.5}
    assert "plan" not in data, "the largest field is dropped to fit Kubernetes' 4 KiB"
    assert "skip" not in data and len(log.read_bytes()) <= 4096


def test_termination_message_without_env_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.TERMINATION_LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    runner.write_termination_message({"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_stage_exit_code_reaches_the_process(tmp_path, monkeypatch):
    """A training failure with exit code 75 (GPU) must become the command's exit status. The failure is
    simulated: a physical GPU cannot fail on this machine (the classifier itself is tested on real messages)."""
    import thinktune.train.job as job

    class Boom(RuntimeError):
        exit_code = 75

    def fail(*a, **k):
        raise Boom("GPU lost")

    monkeypatch.setattr(job, "train_job", fail)
    ds = tmp_path / "ds"
    ds.mkdir()
    f = tmp_path / "ftj.yaml"
    f.write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: j}\n"
        f"spec:\n  dataset: {{path: {ds}}}\n  output: {{path: out}}\n"
    )
    assert runner.run_path(f, only_kind="FineTuneJob", force=True, progress=False) == 75
