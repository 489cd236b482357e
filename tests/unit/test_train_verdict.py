"""The training report's verdict, from metrics.jsonl as the real callback writes it: a loss that barely moves
is "not learning" (the embedded default once reported 11.89 -> 11.81, 0.7 %, as "converging")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from thinktune.train.callbacks import ThinktuneCallback
from thinktune.train.report import LEARNING_MIN_DROP, build_report


def _report_of(tmp_path, losses: list[float], eval_losses: list[float]) -> dict:
    out = tmp_path / "out"
    cb = ThinktuneCallback(output_dir=out, metrics_port=None, progress=False, quality_metrics=False)
    args = SimpleNamespace(per_device_train_batch_size=1, gradient_accumulation_steps=1, output_dir=str(out))

    def state(step):
        return SimpleNamespace(global_step=step, max_steps=len(losses), epoch=0.0, num_input_tokens_seen=0)

    cb.on_train_begin(args, state(0), None)
    for step, loss in enumerate(losses, 1):
        cb.on_log(args, state(step), None, logs={"loss": loss, "learning_rate": 1e-3, "grad_norm": 1.0})
    for i, ev in enumerate(eval_losses, 1):
        cb.on_evaluate(args, state(i * len(losses) // len(eval_losses)), None, metrics={"eval_loss": ev})
    cb.on_train_end(args, state(len(losses)), None)
    return build_report(out, write=False)["convergence"]


def test_a_loss_that_barely_moves_is_not_learning(tmp_path):
    c = _report_of(tmp_path, [11.89, 11.88, 11.86, 11.85, 11.83, 11.81], [11.84, 11.81])
    assert c["loss_decreased"] and 0 < c["loss_drop_ratio"] < LEARNING_MIN_DROP
    assert c["verdict"].startswith("not learning") and "learningRate" in c["verdict"]


def test_a_rising_loss_is_not_learning(tmp_path):
    c = _report_of(tmp_path, [2.0, 2.2, 2.5, 2.7, 3.0, 3.2], [2.1, 3.0])
    assert c["verdict"].startswith("not learning")


@pytest.mark.parametrize("last", [9.0, 4.0])
def test_a_clear_drop_is_converging(tmp_path, last):
    c = _report_of(tmp_path, [11.9, 11.0, 10.5, 10.0, last, last], [11.8, last])
    assert c["loss_drop_ratio"] >= LEARNING_MIN_DROP and c["verdict"] == "converging"
