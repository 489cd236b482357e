"""The embedded (local) runtime: run CRs in-process, in dependency order, the way the operator would on a cluster.

`thinktune run -f examples/crypto/` resolves references between the CRs (a FineTuneJob's datasetRef names a
DatasetBuild in the same set; a ModelExport's fineTuneJobRef names a FineTuneJob) into a ``ResolvedJob`` /
``ResolvedExport`` (thinktune/resolve.py) that the stage gets, skips stages whose inputs have not changed since
their last successful run (a fingerprint of spec + inputs is stored next to the outputs), writes each stage's
result to the termination log through thinktune/contract.py (what the operator reads on a cluster, where every
pod runs this same code) and, for the user, each stage's status — the shape the operator writes to `.status` —
to `<output>/status.local.json` (nothing of ours reads it back).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from thinktune import contract
from thinktune import fingerprint as fp
from thinktune.errors import InputError, StageError, check_output_dir, debug_enabled, explain
from thinktune.progress import step
from thinktune.resolve import ResolvedExport, ResolvedJob, resolve_export, resolve_job
from thinktune.resources import LoadedResource, ResourceError, load_path
from thinktune.spec import DatasetBuildSpec, DatasetBuildStatus, DatasetCounts

console = Console(stderr=True, soft_wrap=True)


def _reason(e: BaseException) -> str:
    return (
        "ApplicationError" if isinstance(e, StageError) and not isinstance(e, InputError) else "InvalidInput"
    )


def _failed(output: Path, e: BaseException) -> None:
    """A stage failed: its status file says why (the reason the pod's termination message gives, too)."""
    fp.record_failed(output, str(e), _reason(e))


def _located(e: OSError, where: Path) -> OSError:
    """A write that failed without naming its file (a full disk mid-write) is named after the output it was
    writing, so the one line says where."""
    if not e.filename:
        e.filename = f"writing into {where}"
    return e


def _error(e: BaseException) -> int:
    """One line for an expected failure (``--debug``: with the traceback) and, on a pod, a FailureMessage. A
    message the worker already left (a GPU failure, an OOM, an application error with its traceback tail) is
    more precise than ours and stays."""
    message, code = explain(e) or (f"{type(e).__name__}: {e}", contract.EXIT_APP_FAILURE)
    if debug_enabled():
        console.print_exception()
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    target = contract.termination_log_path()
    previous = target.read_text(errors="replace") if target is not None and target.is_file() else None
    if not isinstance(contract.read_termination_message(previous), contract.FailureMessage):
        reason = _reason(e)
        contract.write_termination_message(
            contract.FailureMessage(
                reason=reason, category="application", exit_code=code, detail=reason, message=message
            )
        )
    return code


# ------------------------------------------------------------------------------------------------------------
# DatasetBuild


def dataset_status_from_report(report: dict[str, Any], output: Path) -> DatasetBuildStatus:
    counts = DatasetCounts.model_validate(report.get("counts", {}))
    return DatasetBuildStatus(
        phase="Succeeded",
        counts=counts,
        output_path=str(output),
        report_path=str(output / "report.json"),
        completion_time=datetime.now(UTC),
        message=f"{counts.samples} samples ({counts.train}/{counts.val}/{counts.test}), {counts.rejects} rejected",
    )


def build_dataset_stage(spec: DatasetBuildSpec, src: Path, dst: Path, *, progress: bool = True) -> dict:
    """Build the dataset (thinktune/data/build.py) and report it; bad input raises InputError, a failed build
    StageError."""
    from thinktune.data.build import DatasetBuildError, build_dataset

    if not src.is_dir():
        raise InputError(f"source directory {src} does not exist (DatasetBuild spec.source.path, or --input)")
    check_output_dir(dst, "DatasetBuild spec.output.path")
    try:
        report = build_dataset(spec, src, dst, progress=progress)
    except DatasetBuildError as e:
        raise StageError(str(e)) from None
    except OSError as e:
        raise _located(e, dst) from None
    _dataset_result(report, dst)
    return report


def run_dataset_build(spec: DatasetBuildSpec, src: Path, dst: Path, *, progress: bool = True) -> int:
    """``thinktune dataset build``: the build without fingerprints (it always builds), as an exit code."""
    try:
        build_dataset_stage(spec, src, dst, progress=progress)
    except (StageError, OSError) as e:
        return _error(e)
    return contract.EXIT_OK


def _dataset_result(report: dict[str, Any], dst: Path) -> None:
    status = dataset_status_from_report(report, dst)
    c = status.counts
    contract.write_termination_message(
        contract.DatasetResult(counts=c, output_path=status.output_path, report_path=status.report_path)
    )
    console.print(
        f"[green]dataset[/] {dst}: {c.samples} samples — train {c.train} / val {c.val} / test {c.test}; "
        f"{c.rejects} rejected (rejects.jsonl), {c.warnings} warnings; report: {dst / 'report.md'}"
    )


def dataset_inputs(r: LoadedResource) -> fp.Inputs:
    spec = r.resource.spec
    dump = spec.model_dump(mode="json", by_alias=True)
    return fp.Inputs(
        spec=fp.spec_fields(dump, drop=("source", "output", "pod", "resources", "workers")),
        data=fp.hash_files(r.resolve(spec.source.path)),
    )


def _skipped(what: str, d: fp.Decision, out: Path, again: str) -> None:
    console.print(f"{what}: skipped — {d.why} ({out}); {again}", style="dim", highlight=False)


def _stage_dataset(r: LoadedResource, *, progress: bool, force: bool) -> Path:
    spec = r.resource.spec
    src, dst = r.resolve(spec.source.path), r.resolve(spec.output.path)
    inputs = dataset_inputs(r)
    d = fp.decide(dst, inputs, force=force)
    if d.action == "skip" and (dst / "report.json").is_file():
        _skipped(f"DatasetBuild/{r.name}", d, dst, "pass --force to build it again")
        _dataset_result(json.loads((dst / "report.json").read_text()), dst)
        return dst
    console.rule(f"DatasetBuild/{r.name}")
    if d.has_previous:
        console.print(f"DatasetBuild/{r.name}: rebuilding in place — {'; '.join(d.changes)}", highlight=False)
    try:
        build_dataset_stage(spec, src, dst, progress=progress)
    except (StageError, OSError) as e:
        _failed(dst, e)
        raise
    report = json.loads((dst / "report.json").read_text())
    fp.record_finished(
        dst, inputs, dataset_status_from_report(report, dst).model_dump(mode="json", by_alias=True)
    )
    return dst


# ------------------------------------------------------------------------------------------------------------
# FineTuneJob

# spec fields that change the trained weights (the rest — pods, resources, node counts, monitoring, evaluation,
# restart budgets — do not: the planner keeps the global batch whatever the hardware)
TRAINING_INPUTS = ("template", "enableThinking", "finetuning", "training")


def job_inputs(job: ResolvedJob) -> fp.Inputs:
    dump = job.resource.spec.model_dump(mode="json", by_alias=True)
    files = ["dataset_info.json"] + [
        p.name for p in (job.dataset.split("train"), job.dataset.split("val")) if p
    ]
    return fp.Inputs(
        spec=fp.spec_fields(dump, keep=TRAINING_INPUTS),
        data=fp.hash_files(job.dataset.dir, files),
        model=fp.hash_model(job.model),
    )


# how long the other pods of a gang wait for node rank 0 to set up the output directory
GANG_SETUP_WAIT_S = float(os.environ.get("THINKTUNE_GANG_SETUP_WAIT_S", "600"))


def _wait_for_node_rank_0(out: Path, inputs: fp.Inputs) -> None:
    """Node rank > 0 shares the output directory with node rank 0, which moves a previous run aside: start
    only once rank 0 recorded these inputs (else LLaMA Factory here could resume a checkpoint that rank 0 is
    moving away)."""
    deadline = time.monotonic() + GANG_SETUP_WAIT_S
    while (fp.started_record(out) or {}).get("fingerprint") != inputs.fingerprint:
        if time.monotonic() > deadline:
            raise StageError(
                f"node rank 0 did not record the inputs of this run in {out / fp.INPUTS_FILE} within "
                f"{GANG_SETUP_WAIT_S:.0f}s (THINKTUNE_GANG_SETUP_WAIT_S); is it running with the same spec?"
            )
        time.sleep(1)


def _stage_finetune(job: ResolvedJob, *, progress: bool, force: bool) -> None:
    from thinktune.train.job import train_job

    out, what = job.output_dir, f"FineTuneJob/{job.name}"
    inputs = job_inputs(job)
    d = fp.decide(out, inputs, force=force, resumable=True)
    if d.action == "skip":
        _skipped(what, d, out, "pass --force to train again (the finished run is kept under previous/)")
        if job.writes_job_results:
            _train_result_again(job)
        return
    console.rule(what + (f" (node rank {job.node_rank})" if job.node_rank else ""))
    check_output_dir(out, f"{what} spec.output.path")
    if not job.writes_job_results:
        _wait_for_node_rank_0(out, inputs)
    elif d.action == "resume":
        console.print(f"{what}: resuming — {d.why}", highlight=False)
    elif d.has_previous:
        moved = fp.move_previous(out)
        console.print(
            f"{what}: starting fresh — {'; '.join(d.changes)}; the previous run moved to {moved}",
            highlight=False,
        )
    if job.writes_job_results:
        fp.record_started(out, inputs)
    trained = fp.read_json(out / "report.json") if d.action == "resume" else None
    try:
        if trained and trained.get("outcome") == "Succeeded" and (trained.get("status") or {}).get("plan"):
            # stopped after training, before the stage finished (a pod killed during evaluation): finish it
            console.print(
                f"{what}: training had finished with these inputs; finishing the stage", highlight=False
            )
            report = trained
        else:
            report = train_job(job, progress=progress)
    except (StageError, OSError) as e:
        if job.writes_job_results:
            _failed(out, e)
        if isinstance(e, OSError):
            _located(e, out)
        raise
    if not job.writes_job_results:
        console.print(
            f"[green]training finished[/] on node rank {job.node_rank}; node rank 0 writes the results"
        )
        return
    status = report["status"]
    plan = contract.PlanSummary.model_validate(status["plan"])
    if job.evaluation.enabled:
        status.setdefault("metrics", {}).update(_evaluate_after_training(job, plan))
    fp.record_finished(out, inputs, status)
    finished_training(job, status, report.get("adapter_path"))


def _train_result_again(job: ResolvedJob) -> None:
    """A skipped job still reports its result: on a pod the operator reads it from the termination message."""
    status = fp.read_json(job.output_dir / fp.STATUS_FILE) or {}
    report = fp.read_json(job.output_dir / "report.json") or {}
    if status.get("plan"):
        finished_training(job, status, report.get("adapter_path"))


def finished_training(job: ResolvedJob, status: dict[str, Any], adapter_path: str | None) -> None:
    """The job-level result of a finished training (node rank 0): the termination message and one line."""
    contract.write_termination_message(
        contract.TrainResult(
            adapter_path=adapter_path,
            metrics=status.get("metrics") or {},
            oom_retries=(status.get("restarts") or {}).get("oom") or 0,
            plan=contract.PlanSummary.model_validate(status["plan"]),
            report_path=str(job.output_dir / "report.json"),
        )
    )
    console.print(
        f"[green]training finished[/]: adapter {adapter_path or job.output_dir}; "
        f"report: {job.output_dir / 'report.md'}"
    )


def _evaluate_after_training(job: ResolvedJob, plan: contract.PlanSummary) -> dict[str, float]:
    """spec.evaluation: score the new adapter on the held-out test split. A failed evaluation is reported but
    does not undo a finished training run."""
    from thinktune.evaluate.run import evaluate_job, headline

    try:
        with step(f"evaluating FineTuneJob/{job.name} on its test split (spec.evaluation)"):
            report = evaluate_job(job, plan=plan)
    except StageError as e:
        console.print(f"[yellow]warning:[/] evaluation after training failed: {e}")
        return {}
    return {k: float(v) for k, v in headline(report).items() if isinstance(v, int | float)}


# ------------------------------------------------------------------------------------------------------------
# ModelExport

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def export_inputs(export: ResolvedExport) -> fp.Inputs:
    dump = export.resource.spec.model_dump(mode="json", by_alias=True)
    ds = export.dataset
    data = fp.hash_files(export.adapter_dir, ADAPTER_FILES)
    if ds is not None:
        files = ["dataset_info.json"] + [p.name for p in (ds.split("train"), ds.split("test")) if p]
        data += ":" + fp.hash_files(ds.dir, files)
    return fp.Inputs(
        spec=fp.spec_fields(
            dump, drop=("output", "pod", "resources", "adapter", "fineTuneJobRef", "baseModel")
        ),
        data=data,
        model=fp.hash_model(export.base_model),
    )


def _stage_export(r: LoadedResource, *, jobs: dict[str, ResolvedJob], progress: bool, force: bool) -> None:
    from thinktune.export.pipeline import export_model

    export = resolve_export(r, jobs=jobs)
    out, what = export.output_dir, f"ModelExport/{r.name}"
    inputs = export_inputs(export)
    d = fp.decide(out, inputs, force=force)
    status = fp.read_json(out / fp.STATUS_FILE) or {}
    if d.action == "skip" and status.get("phase") == "Succeeded":
        _skipped(what, d, out, "pass --force to export again")
        _export_result(out, status)
        return
    console.rule(what)
    check_output_dir(out, f"{what} spec.output.path")
    if d.has_previous:
        console.print(f"{what}: exporting again in place — {'; '.join(d.changes)}", highlight=False)
    try:
        report = export_model(export, progress=progress)
    except (StageError, OSError) as e:
        _failed(out, e)
        if isinstance(e, OSError):
            _located(e, out)
        raise
    fp.record_finished(out, inputs, report["status"])
    _export_result(out, report["status"])


def _export_result(out: Path, status: dict[str, Any]) -> None:
    contract.write_termination_message(
        contract.ExportResult(artifacts=status.get("artifacts") or [], report_path=status.get("reportPath"))
    )
    console.print(f"[green]export finished[/]: {out}; model card: {out / 'README.md'}")


# ------------------------------------------------------------------------------------------------------------


class _Pool:
    """The CRs a run can refer to: everything in the directory (or the file's directory for a single file),
    with each FineTuneJob resolved once, when first needed (its dataset may be built earlier in the run)."""

    def __init__(
        self,
        path: Path,
        loaded: list[LoadedResource],
        *,
        only_kind: str | None,
        model_override,
        dataset_dir: Path | None,
    ):
        pool = loaded
        if only_kind is not None and Path(path).is_file():
            try:
                pool = load_path(Path(path).parent)
            except ResourceError:
                pool = loaded
        self.datasets = {
            r.name: r.resolve(r.resource.spec.output.path) for r in pool if r.kind == "DatasetBuild"
        }
        self.job_crs = {r.name: r for r in pool if r.kind == "FineTuneJob"}
        self.model_override, self.dataset_dir = model_override, dataset_dir
        self._jobs: dict[str, ResolvedJob] = {}

    def job(self, name: str) -> ResolvedJob:
        if name not in self._jobs:
            self._jobs[name] = resolve_job(
                self.job_crs[name],
                datasets=self.datasets,
                model_override=self.model_override,
                dataset_dir=self.dataset_dir,
            )
        return self._jobs[name]

    def jobs_for(self, r: LoadedResource) -> dict[str, ResolvedJob]:
        ref = r.resource.spec.fine_tune_job_ref
        return {ref.name: self.job(ref.name)} if ref is not None and ref.name in self.job_crs else {}


def run_path(
    path: Path,
    *,
    only_kind: str | None = None,
    model_override: str | None = None,
    dataset_dir: Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> int:
    try:
        loaded = load_path(path)
    except ResourceError as e:
        return _error(InputError(str(e)))
    pool = _Pool(path, loaded, only_kind=only_kind, model_override=model_override, dataset_dir=dataset_dir)
    started = time.monotonic()
    try:
        for r in loaded:
            if only_kind and r.kind != only_kind:
                continue
            if r.kind == "DatasetBuild":
                _stage_dataset(r, progress=progress, force=force)
            elif r.kind == "FineTuneJob":
                _stage_finetune(pool.job(r.name), progress=progress, force=force)
            elif r.kind == "ModelExport":
                _stage_export(r, jobs=pool.jobs_for(r), progress=progress, force=force)
    except (StageError, OSError) as e:
        # a TrainingFailed carries the worker's exit code (75 = GPU failure): the operator tells infrastructure
        # from application failures by it, so it reaches the pod's exit status unchanged
        return _error(e)
    console.print(f"[bold green]done[/] in {time.monotonic() - started:.0f}s")
    return contract.EXIT_OK


def run_evaluate(path: Path, *, model_override: str | None = None) -> int:
    from thinktune.evaluate.run import evaluate_job

    try:
        loaded = [r for r in load_path(path) if r.kind == "FineTuneJob"]
        if not loaded:
            raise InputError(f"{path}: no FineTuneJob to evaluate")
        pool = _Pool(path, loaded, only_kind="FineTuneJob", model_override=model_override, dataset_dir=None)
        for r in loaded:
            evaluate_job(pool.job(r.name))
    except ResourceError as e:
        return _error(InputError(str(e)))
    except (StageError, OSError) as e:
        return _error(e)
    return contract.EXIT_OK
