"""``train_job``: one FineTuneJob end to end on this machine (or this pod of a gang).

model (makes the tiny model when ``spec.model.makeTiny`` and the path is missing) -> dataset dir
(dataset_info.json with ``NAME_train`` / ``NAME_val``) -> hardware -> world (NNODES, NPROC_PER_NODE, ... from the
environment) -> plan (written to ``output_dir/plan/``) -> launcher with OOM retry -> report (``report.json``,
``report.md``, ``plots/``). Returns the report dict; ``report["status"]`` is ``FineTuneJobStatus``-shaped
(camelCase) and ``report["adapter_path"]`` the adapter directory. A failed run raises ``TrainingFailed`` (its
``exit_code`` is the worker's: 75 = GPU failure, 1 = application error) after writing the report.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from thinktune.spec import FineTuneJob, FineTuneJobStatus
from thinktune.train.failures import APP_FAILURE_EXIT_CODE, GPU_FAILURE_EXIT_CODE
from thinktune.train.planner import ModelInfo, Plan, WorldInfo, plan, write_plan_files

METRICS_PORT_ENV = "THINKTUNE_METRICS_PORT"  # override spec.monitoring.metricsPort; "off" disables


class TrainingFailed(RuntimeError):
    def __init__(self, message: str, *, exit_code: int, report: dict[str, Any]):
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


def _resolve(base_dir: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def resolve_model(spec_model: Any, base_dir: Path, log=print) -> str:
    name = spec_model.name_or_path
    local = _resolve(base_dir, name)
    if (local / "config.json").is_file():
        return str(local.resolve())
    if spec_model.make_tiny:
        from thinktune.tiny_model import make_tiny_model

        log(f"[job] making the tiny random Qwen3 (real tokenizer) at {local}")
        return str(Path(make_tiny_model(local)).resolve())
    if Path(name).is_absolute() or name.startswith("."):
        raise FileNotFoundError(
            f"model path {local} has no config.json (set model.makeTiny: true for a tiny model)"
        )
    return name  # hub id: needs the hub or a warm HF cache


def inspect_dataset(dataset_dir: Path) -> tuple[str, bool, int | None]:
    """(dataset name prefix, has a _val split, number of training samples) from dataset_info.json."""
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} not found: not a LLaMA Factory dataset directory (build it with a "
            "DatasetBuild / `thinktune dataset build`)"
        )
    info = json.loads(info_path.read_text())
    trains = sorted(k for k in info if k.endswith("_train"))
    if not trains:
        raise ValueError(f"{info_path} has no NAME_train entry (entries: {', '.join(info) or 'none'})")
    name = trains[0][: -len("_train")]
    has_val = f"{name}_val" in info
    size = None
    fn = info[trains[0]].get("file_name")
    if fn:
        f = dataset_dir / fn
        try:
            if f.suffix == ".jsonl":
                size = sum(1 for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
            elif f.suffix == ".json":
                size = len(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            size = None
    return name, has_val, size


def detect_hw() -> Any:
    try:
        from thinktune.hardware import detect_hardware

        return detect_hardware()
    except ImportError:
        import torch

        gpus = []
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append(
                    {
                        "name": p.name,
                        "memory_bytes": p.total_memory,
                        "capability": [p.major, p.minor],
                        "bf16": p.major >= 8,
                    }
                )
        try:
            import psutil

            ram = psutil.virtual_memory().total
        except Exception:
            ram = 0
        return {"gpus": gpus, "cpu_count": os.cpu_count() or 1, "ram_bytes": ram}


def detect_packages() -> dict[str, bool]:
    def has(mod: str) -> bool:
        try:
            return importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            return False

    return {
        "deepspeed": has("deepspeed"),
        "liger_kernel": has("liger_kernel"),
        "bitsandbytes": has("bitsandbytes"),
        "mcore_adapter": has("mcore_adapter"),
    }


def _hw_dict(hw: Any) -> dict[str, Any]:
    from thinktune.train.planner import _to_dict

    try:
        return hw if isinstance(hw, dict) else _to_dict(hw)
    except Exception:
        return {"repr": repr(hw)}


def train_job(
    resource: FineTuneJob,
    *,
    base_dir: Path,
    dataset_dir: Path | None = None,
    progress: bool = True,
    env: dict[str, str] | None = None,
    log=print,
) -> dict[str, Any]:
    from thinktune.train.callbacks import load_terms
    from thinktune.train.launcher import launch
    from thinktune.train.oom import run_with_oom_retry
    from thinktune.train.report import build_report

    spec = resource.spec
    base_dir = Path(base_dir)
    job_name = resource.metadata.name
    namespace = resource.metadata.namespace or "default"
    output_dir = _resolve(base_dir, spec.output.path).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    from thinktune.train.launcher import find_last_checkpoint

    if find_last_checkpoint(output_dir) is None and (output_dir / "adapter_model.safetensors").is_file():
        # LLaMA Factory refuses a non-empty output_dir without checkpoints ("Please set overwrite_output_dir"),
        # and overwriting would throw away a finished adapter: reuse its report, or say what to do.
        done = output_dir / "report.json"
        if done.is_file():
            prev = json.loads(done.read_text())
            if prev.get("outcome") == "Succeeded":
                log(f"[job] {output_dir} already holds a finished adapter (no checkpoints left); keeping it")
                return prev
        raise FileExistsError(
            f"{output_dir} holds an adapter but no checkpoint-N to resume from; choose a new "
            "output.path or remove the directory"
        )
    if dataset_dir is None:
        if spec.dataset is None:
            raise ValueError(
                f"FineTuneJob/{job_name} uses datasetRef {spec.dataset_ref.name!r}: pass dataset_dir "
                "(the DatasetBuild's output directory)"
            )
        dataset_dir = _resolve(base_dir, spec.dataset.path)
    dataset_dir = Path(dataset_dir).resolve()
    ds_name, has_val, ds_size = inspect_dataset(dataset_dir)
    model_path = resolve_model(spec.model, base_dir, log)
    model_info = ModelInfo.guess(model_path)
    hw = detect_hw()
    from thinktune.train.planner import HwView

    hv = HwView.from_any(hw)
    run_env = dict(os.environ)
    run_env.update(env or {})
    world = WorldInfo.from_env(spec, gpus_per_node=len(hv.gpus), env=run_env)
    p: Plan = plan(
        spec,
        hw,
        model_info=model_info,
        dataset_size=ds_size,
        world=world,
        model_path=model_path,
        dataset_dir=str(dataset_dir),
        dataset_name=ds_name,
        has_val=has_val,
        output_dir=str(output_dir),
        packages=detect_packages(),
    )
    write_plan_files(p, output_dir)
    log(
        f"[plan] {p.strategy} · {p.precision} · {p.method} · micro-batch {p.micro_batch_size} x accum "
        f"{p.gradient_accumulation_steps} x {p.world_size} = {p.global_batch_size} · gradient checkpointing "
        f"{'on' if p.gradient_checkpointing else 'off'} · Liger {'on' if p.liger_kernel else 'off'}"
    )
    for w in p.warnings:
        log(f"[plan] warning: {w}")

    port_env = run_env.get(METRICS_PORT_ENV)
    metrics_port: int | None = spec.monitoring.metrics_port
    if port_env is not None:
        metrics_port = None if port_env.lower() in ("off", "none", "") else int(port_env)
    terms = load_terms()
    retries_so_far: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []

    def run_attempt(args: dict[str, Any], attempt: int):
        cfg = {
            "args": args,
            "job": job_name,
            "namespace": namespace,
            "attempt": attempt,
            "oom_retries": len(retries_so_far),
            "env": p.env,
            "monitoring": {
                "metrics_port": metrics_port,
                "loss_spike_factor": spec.monitoring.loss_spike_factor,
                "plateau_evals": spec.monitoring.plateau_evals,
            },
            "terms": terms,
            "progress": progress,
            "total_steps": p.total_steps,
            # teacher-forced char/term scoring costs a forward pass per sample: fewer on CPU
            "max_eval_samples": int(
                run_env.get("THINKTUNE_QUALITY_SAMPLES", 32 if p.device == "cuda" else 8)
            ),
            "rank_fingerprint": run_env.get("THINKTUNE_RANK_FINGERPRINT", "") == "1",
            "termination_log": run_env.get("THINKTUNE_TERMINATION_LOG"),
        }
        res = launch(cfg, world=world, attempt=attempt, env=env, stream=progress, log=log)
        attempts.append({k: v for k, v in res.to_dict().items() if k != "tail"})
        return res

    outcome = run_with_oom_retry(
        p.args,
        run_attempt,
        max_retries=spec.max_oom_retries,
        output_dir=output_dir,
        log=log,
        on_retry=retries_so_far.append,
    )
    res = outcome.result
    ok = res.returncode == 0
    adapter = (
        output_dir
        if (output_dir / "adapter_config.json").is_file() or (output_dir / "model.safetensors").is_file()
        else None
    )
    plan_dict = p.model_dump()
    plan_dict["final_args"] = outcome.args
    plan_dict["hardware"] = _hw_dict(hw)
    extra = {
        "exit_code": res.returncode,
        "world": world.model_dump(),
        "dataset": {"dir": str(dataset_dir), "name": ds_name, "train_samples": ds_size, "has_val": has_val},
        "model": {"path": model_path, **model_info.model_dump()},
    }
    phase = "Succeeded" if ok else "Failed"
    report = build_report(
        output_dir,
        plan=plan_dict,
        attempts=attempts,
        oom_retries=outcome.retries,
        warnings=p.warnings,
        outcome=phase,
        job=job_name,
        namespace=namespace,
        adapter_path=str(adapter) if adapter and ok else None,
        extra=extra,
        write=world.node_rank == 0,
    )
    st = report["status"]
    st["plan"] = p.summary()
    if res.outcome == "gpu_failure":
        st["restarts"]["infrastructure"] = 1
        term = res.termination or {}
        rank_rec = res.failed_rank or {}
        st["failedNodes"] = [
            {
                "node": term.get("node") or rank_rec.get("node") or run_env.get("NODE_NAME"),
                "gpu": term.get("gpu") or rank_rec.get("gpu"),
                "reason": term.get("detail") or rank_rec.get("reason") or "GPU failure",
            }
        ]
    # the contract: must parse as FineTuneJobStatus
    report["status"] = FineTuneJobStatus.model_validate(st).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    if world.node_rank == 0:
        (output_dir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    log(f"[job] {phase}: report {output_dir / 'report.md'}")
    if not ok:
        code = res.returncode if res.returncode in (GPU_FAILURE_EXIT_CODE,) else APP_FAILURE_EXIT_CODE
        why = (
            "OOM retries exhausted" if outcome.exhausted else f"worker exit {res.returncode} ({res.outcome})"
        )
        raise TrainingFailed(
            f"FineTuneJob/{job_name} failed: {why}; log {res.log_path}", exit_code=code, report=report
        )
    return report
