"""One LLaMA Factory run with a step recorder: ``python bench/gpu_lf_run.py CONFIG.json``.

CONFIG: ``{"args": {...LLaMA Factory arguments...}, "records": "steps.jsonl"}``. Runs ``run_exp`` in this process
(no thinktune callback, no launcher): the same library thinktune drives, so the difference between this and
``thinktune train`` on the same arguments is what thinktune adds. The recorder synchronises the GPU once per
optimizer step (so the time stamp is the step's end) and writes bench/gpu_bench_lib.py's step-record shape.
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
    from gpu_bench_lib import write_record
    from llamafactory.train.tuner import run_exp
    from transformers import TrainerCallback

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

        def on_log(self, args, state, control, logs=None, **kwargs):
            # the Trainer logs after on_step_end of the same step: attach that step's loss, then write it
            if self.pending is not None and logs and "loss" in logs:
                self.pending["loss"] = logs["loss"]
                write_record(records, self.pending)
                self.pending = None

    run_exp(args=cfg["args"], callbacks=[Recorder()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
