"""Subprocess entry of one training attempt: ``python -m thinktune.train.worker RESOLVED.json``.

Run directly for one process, or under ``torchrun`` (one per rank). ``RESOLVED.json`` (written by the launcher):

    {"args": {...LLaMA Factory arguments...},
     "job": "name", "namespace": "ns", "attempt": 0, "oom_retries": 0,
     "monitoring": {"metrics_port": 9400 | null, "loss_spike_factor": 3.0, "plateau_evals": 5},
     "terms": [...glossary surface forms...], "progress": true, "total_steps": 120,
     "rank_fingerprint": false, "termination_log": null, "labelled_logits": false, "memory_budget_gib": null}

Exit codes (thinktune/contract.py): EXIT_OK done; EXIT_OOM CUDA OOM (marker in output_dir/.thinktune/);
EXIT_GPU_FAILURE failing GPU (termination message written); EXIT_APP_FAILURE anything else.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import traceback
import types
from pathlib import Path


def allow_indexed_cpu_locations() -> None:
    """Resuming a multi-process CPU (gloo) run: transformers' Trainer loads the checkpoint's optimizer.pt with
    ``map_location=args.device``, which is ``cpu:<local rank>`` there, and torch has no deserializer for an
    indexed CPU location ("don't know how to restore data location ... (tagged with cpu:0)"). Register one that
    keeps such storages on the CPU. Only this worker process is affected; CUDA locations are untouched."""
    import torch

    def tag(obj):  # never tags: saving keeps torch's own "cpu" location
        return None

    def restore(obj, location: str):
        return obj if location.startswith("cpu:") else None

    torch.serialization.register_package(11, tag, restore)


def ensure_torchaudio_importable() -> None:
    """LLaMA Factory's mm_plugin imports torchaudio at module top. A torchaudio build that does not match the
    installed torch (e.g. torchaudio 2.11.1 against torch 2.11.0: undefined symbol in libtorchaudio.so) makes
    ``import llamafactory.train.tuner`` fail although text SFT never touches audio. Replace such a broken
    torchaudio with an empty stub module (audio datasets would then fail loudly)."""
    try:
        import torchaudio  # noqa: F401
    except Exception as e:  # OSError / ImportError from the C extension
        for k in [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]:
            del sys.modules[k]
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        stub.__version__ = "0.0.0+thinktune-stub"
        stub.__doc__ = f"stub: the installed torchaudio failed to import ({type(e).__name__})"
        sys.modules["torchaudio"] = stub


def cap_gpu_memory(budget_gib: float | None) -> float | None:
    """spec.training.memoryBudgetGiB as PyTorch's per-process cap on this rank's GPU: going over it is a CUDA OOM,
    which the trainer turns into a retry with a smaller micro-batch. Returns the fraction set (None: no cap)."""
    if not budget_gib:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    dev = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
    total = torch.cuda.get_device_properties(dev).total_memory / 2**30
    fraction = min(1.0, budget_gib / total)
    torch.cuda.set_per_process_memory_fraction(fraction, dev)
    return fraction


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m thinktune.train.worker RESOLVED.json", file=sys.stderr)
        return 2
    cfg = json.loads(Path(argv[0]).read_text())
    args = dict(cfg["args"])
    output_dir = Path(args["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", 0))

    from thinktune.contract import EXIT_APP_FAILURE
    from thinktune.train.failures import classify, handle_fatal, write_exit_record
    from thinktune.train.oom import write_marker

    callback = None
    try:
        cap_gpu_memory(cfg.get("memory_budget_gib"))
        allow_indexed_cpu_locations()
        ensure_torchaudio_importable()
        from thinktune.train.worker_startup import skip_redundant_startup_work

        # before LLaMA Factory's tuner is imported: its optional imports are decided then (worker_startup says why)
        skip_redundant_startup_work(args)
        from llamafactory.train.tuner import run_exp

        from thinktune.train.cache import prepare_tokenized
        from thinktune.train.callbacks import ThinktuneCallback
        from thinktune.train.worker_callbacks import worker_callbacks

        mon = cfg.get("monitoring", {})
        callback = ThinktuneCallback(
            output_dir=output_dir,
            job=cfg.get("job", "local"),
            namespace=cfg.get("namespace", "default"),
            metrics_port=mon.get("metrics_port"),
            loss_spike_factor=float(mon.get("loss_spike_factor", 3.0)),
            plateau_evals=int(mon.get("plateau_evals", 5)),
            terms=cfg.get("terms"),
            total_steps_hint=cfg.get("total_steps"),
            progress=bool(cfg.get("progress", True)),
            attempt=int(cfg.get("attempt", 0)),
            oom_retries=int(cfg.get("oom_retries", 0)),
            max_eval_samples=int(cfg.get("max_eval_samples", 32)),
            rank_fingerprint=bool(cfg.get("rank_fingerprint", False)),
            quality_metrics=bool(cfg.get("quality_metrics", True)),
        )
        tokenized = prepare_tokenized(args)
        run_exp(
            args=args,
            callbacks=[
                *worker_callbacks(args, tokenized, labelled_logits=bool(cfg.get("labelled_logits"))),
                callback,
            ],
        )
        return 0
    except BaseException as e:  # noqa: BLE001 - the exit code is the contract
        if isinstance(e, SystemExit) and (e.code in (0, None)):
            return 0
        if isinstance(e, KeyboardInterrupt):
            raise
        category, reason = classify(e)
        traceback.print_exc()
        if category == "oom":
            step = getattr(callback, "current_step", None)
            write_marker(
                output_dir,
                {
                    "rank": rank,
                    "step": step,
                    "message": str(e)[:500],
                    "micro_batch": args.get("per_device_train_batch_size"),
                },
            )
            print(
                f"[thinktune] rank {rank}: CUDA out of memory -> exit for OOM retry",
                file=sys.stderr,
                flush=True,
            )
        code = handle_fatal(e, termination_log=cfg.get("termination_log"))
        try:
            write_exit_record(output_dir, rank=rank, code=code, category=category, reason=f"{reason}")
        except OSError:
            pass
        if category == "gpu_failure":
            print(
                f"[thinktune] rank {rank}: GPU failure ({reason}) -> exit {code}", file=sys.stderr, flush=True
            )
        return code if code else EXIT_APP_FAILURE


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: skip interpreter teardown, where lingering NCCL/gloo threads can hang or turn a clean exit
    # code into a crash.
    os._exit(rc)
