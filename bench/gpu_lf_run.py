"""One LLaMA Factory run with a step recorder: ``python bench/gpu_lf_run.py CONFIG.json``.

CONFIG: ``{"args": {...LLaMA Factory arguments...}, "records": "steps.jsonl", "profile_last": 0, "profile_out":
"profile.json", "worker_callbacks": false, "labelled_logits": false,
"callbacks_left_out": []}``. Runs ``run_exp`` in this process (no thinktune metrics callback, no launcher; with
``worker_callbacks`` the worker's own callbacks and start-up shortcuts, as thinktune/train/worker.py adds them, less
those named in ``callbacks_left_out``; without, LLaMA Factory as it is): the same library thinktune drives, so the difference between this and
``thinktune train`` on the same arguments is what thinktune adds. The recorder synchronises the GPU once per
optimizer step (so the time stamp is the step's end) and writes bench/gpu_bench_lib.py's step-record shape.
With ``profile_last`` N, the last N optimizer steps run under ``gpu_bench_lib.ProfileWindow`` (written to
``profile_out``); their records say ``"profiled": true`` so the timing summary leaves them out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    records = Path(cfg["records"])
    from thinktune.train.worker import ensure_torchaudio_importable

    ensure_torchaudio_importable()
    import torch
    from gpu_bench_lib import ProfileWindow, write_record
    from llamafactory.train.tuner import run_exp
    from thinktune.train.worker_callbacks import worker_callbacks
    from thinktune.train.worker_startup import skip_redundant_startup_work
    from transformers import TrainerCallback

    last = int(cfg.get("profile_last") or 0)
    max_steps = int(cfg["args"].get("max_steps") or 0)
    window = ProfileWindow() if last and max_steps > last else None

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.pending: dict | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.pending = {
                "step": int(state.global_step),
                "time": time.time(),
                "tokens_seen": int(getattr(state, "num_input_tokens_seen", 0) or 0),
                "loss": None,
                "peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0,
            }
            step = self.pending["step"]
            if window is not None and step > max_steps - last:
                self.pending["profiled"] = True
                if step == max_steps:
                    Path(cfg["profile_out"]).write_text(json.dumps(window.stop(last)))
            elif window is not None and step == max_steps - last:
                window.start()

        def on_log(self, args, state, control, logs=None, **kwargs):
            # the Trainer logs after on_step_end of the same step: attach that step's loss (and the token count,
            # which thinktune's NonPaddingTokens updates at the log), then write it
            if self.pending is not None and logs and "loss" in logs:
                self.pending["loss"] = logs["loss"]
                self.pending["tokens_seen"] = int(getattr(state, "num_input_tokens_seen", 0) or 0)
                write_record(records, self.pending)
                self.pending = None

    extra: list = []
    if cfg.get("worker_callbacks"):  # (c)'s arguments: the worker's callbacks and start-up, as it adds them
        extra = worker_callbacks(cfg["args"], None, labelled_logits=bool(cfg.get("labelled_logits")))
        left_out = set(cfg.get("callbacks_left_out", ()))
        extra = [cb for cb in extra if type(cb).__name__ not in left_out]
        skip_redundant_startup_work(cfg["args"])
    run_exp(args=cfg["args"], callbacks=[*extra, Recorder()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
