"""The training ETA counts evaluation: the callback (thinktune/train/callbacks.py) measures each evaluation and
adds the evaluations still to come, so it no longer shows 0 s before minutes of evaluation. Driven as the HF
Trainer calls it, on a clock the test advances (1 s per step, 20 s per evaluation)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import thinktune.train.callbacks as callbacks
from thinktune.train.callbacks import ThinktuneCallback


class Clock:
    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def test_eta_includes_the_evaluations_left(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(callbacks, "time", clock)
    monkeypatch.delenv("THINKTUNE_INJECT_OOM_AT_STEP", raising=False)
    cb = ThinktuneCallback(
        output_dir=tmp_path, metrics_port=None, progress=False, terms=[], quality_metrics=False
    )
    args = SimpleNamespace(
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        gradient_checkpointing=False,
        output_dir=str(tmp_path),
        eval_steps=5,
        eval_strategy="steps",
    )

    def state(step):
        return SimpleNamespace(global_step=step, max_steps=20, epoch=0.1, num_input_tokens_seen=10 * step)

    cb.on_train_begin(args, state(0), None)
    cb.on_evaluate(args, state(0), None, metrics={"eval_loss": 3.0, "eval_runtime": 20.0})  # eval_on_start
    clock.now += 20
    for step in range(1, 8):
        clock.now += 1
        cb.on_log(
            args,
            state(step),
            None,
            logs={"loss": 2.0, "learning_rate": 1e-4, "num_input_tokens_seen": 10 * step},
        )
        if step == 5:
            cb.on_evaluate(args, state(5), None, metrics={"eval_loss": 2.5, "eval_runtime": 20.0})
            clock.now += 20
    train = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    eta = {r["step"]: r["eta_seconds"] for r in train}
    # step 4: 16 steps x 1 s + evaluations at 5, 10, 15, 20 x 20 s
    assert eta[4] == 16 + 4 * 20
    # step 7: 13 steps left (the evaluation's 20 s not counted as training time) + evaluations at 10, 15, 20
    assert eta[7] == 13 + 3 * 20
