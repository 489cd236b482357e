"""``train_job``: one FineTuneJob end to end on this machine (or this pod of a gang).

A ``ResolvedJob`` (model, dataset, output dir: thinktune/resolve.py) -> hardware -> world (NNODES,
NPROC_PER_NODE, ... from the environment) -> plan (written to ``output_dir/plan/``) -> launcher with OOM retry ->
report (``report.json``, ``report.md``, ``plots/``, written by node rank 0 only: the pods of a gang share the
output dir). Returns the report dict; ``report["status"]`` is ``FineTuneJobStatus``-shaped (camelCase, its
``plan`` a ``contract.PlanSummary``) and ``report["adapter_path"]`` the adapter directory. A failed run raises
``TrainingFailed`` (its ``exit_code`` is the worker's: contract.EXIT_GPU_FAILURE or EXIT_APP_FAILURE) after
writing the report.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from thinktune import contract
from thinktune.errors import InputError, TrainingFailed
from thinktune.hardware import detect_hardware, installed_packages
from thinktune.progress import step
from thinktune.qwen_tokenizer import load_counting_tokenizer
from thinktune.resolve import ResolvedDataset, ResolvedJob, check_model_available
from thinktune.spec import FineTuneJobStatus
from thinktune.train.cache import cached_lengths, input_fingerprint
from thinktune.train.lengths import REJECTS_FILE, count_lengths, enforce_cutoff
from thinktune.train.memory import ModelShape
from thinktune.train.planner import DatasetFacts, Plan, WorldInfo, plan, write_plan_files

__all__ = ["TrainingFailed", "train_job"]


def train_job(
    job: ResolvedJob,
    *,
    progress: bool = True,
    env: dict[str, str] | None = None,
    log=print,
) -> dict[str, Any]:
    from thinktune.data.glossary import surface_forms_longest_first
    from thinktune.train.launcher import launch
    from thinktune.train.oom import run_with_oom_retry
    from thinktune.train.report import build_report

    spec = job.resource.spec
    job_name, namespace = job.name, job.namespace
    output_dir = job.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)

    done = output_dir / "report.json"
    if done.is_file() and json.loads(done.read_text()).get("outcome") == "Succeeded":
        # LLaMA Factory would "resume" from the last checkpoint and train nothing. The runner
        # (thinktune/runner.py) never gets here: it skips a finished job or moves it aside first.
        raise InputError(
            f"{output_dir} holds a finished training run; `thinktune train` skips it when its inputs are "
            "unchanged and moves it to previous/ when they changed (or with --force); to keep both, choose a "
            "new output.path"
        )
    what = f"FineTuneJob/{job_name}"
    check_model_available(job.model, where=f"{what} spec.model.nameOrPath")
    model_path = job.model
    model_info = ModelShape.guess(model_path)
    hw = detect_hardware(output_dir)
    run_env = dict(os.environ)
    run_env.update(env or {})
    world = WorldInfo.from_env(spec, gpus_per_node=hw.gpu_count, env=run_env)
    with step(f"counting the dataset's tokens with the tokenizer of {model_path}"):
        lengths = cached_lengths(  # a restarted pod skips the tokenizer and the count (train/cache.py)
            output_dir,
            input_fingerprint(job.dataset.dir, model_path),
            lambda: count_lengths(job.dataset, load_counting_tokenizer(model_path)),
        )

    def make_plan(ds: ResolvedDataset, kept: list[int]) -> Plan:
        facts = DatasetFacts(
            dir=str(ds.dir),
            name=ds.name,
            size=ds.train_samples,
            has_val=ds.has_val,
            longest_sample=max(kept, default=0),
            total_tokens=sum(kept),
            fingerprint=input_fingerprint(ds.dir, model_path),  # keys the tokenized-dataset cache
        )
        return plan(
            spec,
            hw,
            model=model_info,
            world=world,
            dataset=facts,
            model_path=model_path,
            output_dir=str(output_dir),
            packages=installed_packages(),
        )

    p: Plan = make_plan(job.dataset, lengths.counts())
    ds = enforce_cutoff(
        job.dataset,
        lengths,
        p.cutoff_len,
        policy=spec.training.overlong_samples,
        output_dir=output_dir,
        what=what,
    )
    length_report = lengths.summary(p.cutoff_len)
    if ds is not job.dataset:
        dropped = length_report["over_cutoff"]
        log(
            f"[job] overlongSamples: drop: {sum(dropped.values())} samples over cutoffLen {p.cutoff_len} dropped "
            f"({dropped}); listed in {output_dir / REJECTS_FILE}; training reads {ds.dir}"
        )
        length_report.update(dropped_to=str(output_dir / REJECTS_FILE), dataset_dir=str(ds.dir))
        p = make_plan(ds, lengths.counts(up_to=p.cutoff_len))
    dataset_dir, ds_name, has_val, ds_size = job.dataset.dir, ds.name, ds.has_val, ds.train_samples
    write_plan_files(p, output_dir)
    log(
        f"[plan] {p.strategy} · {p.precision} · {p.method} · micro-batch {p.micro_batch_size} x accum "
        f"{p.gradient_accumulation_steps} x {p.world_size} = {p.global_batch_size} · gradient checkpointing "
        f"{'on' if p.gradient_checkpointing else 'off'} · Liger {'on' if p.liger_kernel else 'off'}"
    )
    for w in p.warnings:
        log(f"[plan] warning: {w}")

    port_env = run_env.get(contract.ENV_METRICS_PORT)
    metrics_port: int | None = spec.monitoring.metrics_port
    if port_env is not None:
        metrics_port = None if port_env.lower() in ("off", "none", "") else int(port_env)
    terms = surface_forms_longest_first()
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
            "termination_log": run_env.get(contract.ENV_TERMINATION_LOG),
            # spec.training.memoryBudgetGiB: a hard cap on the allocator, so the plan's budget really holds
            "memory_budget_gib": spec.training.memory_budget_gib,
            "labelled_logits": p.labelled_logits,
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
    plan_dict["hardware"] = hw.to_dict()
    extra = {
        "exit_code": res.returncode,
        "world": world.model_dump(),
        "dataset": {"dir": str(dataset_dir), "name": ds_name, "train_samples": ds_size, "has_val": has_val},
        "token_lengths": length_report,
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
    st["plan"] = contract.PlanSummary.model_validate(p.summary()).model_dump(by_alias=True, exclude_none=True)
    if res.outcome == "gpu_failure":
        st["restarts"]["infrastructure"] = 1
        term = res.termination if isinstance(res.termination, contract.FailureMessage) else None
        rank_rec = res.failed_rank or {}
        st["failedNodes"] = [
            {
                "node": (term and term.node) or rank_rec.get("node") or run_env.get(contract.ENV_NODE_NAME),
                "gpu": (term and term.gpu) or rank_rec.get("gpu"),
                "reason": (term and term.detail) or rank_rec.get("reason") or "GPU failure",
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
        code = res.returncode if res.returncode == contract.EXIT_GPU_FAILURE else contract.EXIT_APP_FAILURE
        why = (
            "OOM retries exhausted" if outcome.exhausted else f"worker exit {res.returncode} ({res.outcome})"
        )
        cause = worker_error(res)
        if cause:
            why += f": {cause}"
        raise TrainingFailed(
            f"FineTuneJob/{job_name} failed: {why}; log {res.log_path}", exit_code=code, report=report
        )
    return report


_ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b.*:\s*\S")


def worker_error(res) -> str | None:
    """The worker's own words for its failure: its termination message, else the last error line of its
    log (what the user would otherwise dig out of logs/attempt-N.log)."""
    term = res.termination
    if isinstance(term, contract.FailureMessage) and (term.message or term.detail):
        lines = [ln.strip() for ln in (term.message or term.detail).splitlines() if ln.strip()]
        if lines:
            return lines[-1][:300]
    for line in reversed(res.tail):
        if _ERROR_LINE.search(line) and "@@thinktune" not in line:
            return line.strip()[:300]
    return None
