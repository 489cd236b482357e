"""OOM recovery logic (pure parts; the real subprocess retry is in tests/e2e/test_train_e2e.py)."""

from __future__ import annotations

from dataclasses import dataclass

from thinktune.contract import EXIT_OOM
from thinktune.train import oom


def test_shrink_keeps_global_batch_and_turns_on_checkpointing():
    args = {
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "disable_gradient_checkpointing": True,
        "per_device_eval_batch_size": 8,
    }
    new, change = oom.shrink(args)
    assert new["per_device_train_batch_size"] == 4 and new["gradient_accumulation_steps"] == 4
    assert new["disable_gradient_checkpointing"] is False
    assert new["per_device_eval_batch_size"] == 4
    assert change["from"] == {"micro_batch": 8, "grad_accum": 2, "gradient_checkpointing": False}
    assert change["to"] == {"micro_batch": 4, "grad_accum": 4, "gradient_checkpointing": True}
    assert args["per_device_train_batch_size"] == 8  # input untouched


def test_shrink_odd_micro_batch_stays_exact():
    new, _ = oom.shrink({"per_device_train_batch_size": 3, "gradient_accumulation_steps": 1})
    assert new["per_device_train_batch_size"] * new["gradient_accumulation_steps"] == 3
    new, _ = oom.shrink({"per_device_train_batch_size": 6, "gradient_accumulation_steps": 1})
    assert (new["per_device_train_batch_size"], new["gradient_accumulation_steps"]) == (3, 2)


def test_shrink_micro_batch_one():
    new, change = oom.shrink(
        {
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 4,
            "disable_gradient_checkpointing": True,
        }
    )
    assert new["per_device_train_batch_size"] == 1 and new["disable_gradient_checkpointing"] is False
    assert oom.shrink(new) is None  # nothing left


def test_injection_condition():
    env = {oom.INJECT_STEP_ENV: "3"}
    assert not oom.should_inject(2, 4, env)
    assert oom.should_inject(3, 4, env)
    assert not oom.should_inject(3, 1, env)  # default ceiling: micro-batch 1 fits
    assert not oom.should_inject(5, 2, {**env, oom.INJECT_ABOVE_ENV: "2"})
    assert not oom.should_inject(3, 4, {})


def test_markers(tmp_path):
    oom.write_marker(tmp_path, {"rank": 1, "step": 4, "message": "CUDA out of memory"})
    oom.write_marker(tmp_path, {"rank": 0, "step": 5, "message": "CUDA out of memory"})
    assert [m["rank"] for m in oom.read_markers(tmp_path)] == [0, 1]
    oom.clear_markers(tmp_path)
    assert oom.read_markers(tmp_path) == []


@dataclass
class FakeResult:
    returncode: int
    resumed_from: str | None = None


def test_run_with_oom_retry_recovers(tmp_path):
    seen = []

    def launch(args, attempt):
        seen.append((attempt, args["per_device_train_batch_size"], args["gradient_accumulation_steps"]))
        if args["per_device_train_batch_size"] > 2:
            oom.write_marker(tmp_path, {"rank": 0, "step": 7, "message": "CUDA out of memory"})
            return FakeResult(EXIT_OOM)
        return FakeResult(0)

    logs: list[str] = []
    recorded: list[dict] = []
    out = oom.run_with_oom_retry(
        {
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "disable_gradient_checkpointing": True,
        },
        launch,
        max_retries=3,
        output_dir=tmp_path,
        log=logs.append,
        on_retry=recorded.append,
    )
    assert out.result.returncode == 0 and not out.exhausted
    assert seen == [(0, 8, 1), (1, 4, 2), (2, 2, 4)]
    assert len(out.retries) == 2 and out.retries == recorded
    assert out.retries[0]["at_step"] == 7 and out.retries[0]["to"]["gradient_checkpointing"] is True
    assert out.args["per_device_train_batch_size"] == 2
    assert any("retry 1/3" in line for line in logs)


def test_run_with_oom_retry_gives_up(tmp_path):
    def launch(args, attempt):
        return FakeResult(EXIT_OOM)

    out = oom.run_with_oom_retry(
        {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
        launch,
        max_retries=2,
        output_dir=tmp_path,
        log=lambda s: None,
    )
    assert out.exhausted and len(out.retries) == 2 and out.result.returncode == EXIT_OOM


def test_non_oom_failure_is_not_retried(tmp_path):
    calls = []

    def launch(args, attempt):
        calls.append(attempt)
        return FakeResult(1)

    out = oom.run_with_oom_retry(
        {"per_device_train_batch_size": 8}, launch, max_retries=3, output_dir=tmp_path, log=lambda s: None
    )
    assert calls == [0] and out.retries == [] and out.result.returncode == 1
