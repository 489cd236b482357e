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

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from thinktune import contract
from thinktune.errors import InputError, StageError
from thinktune.resolve import ResolvedJob, resolve_export, resolve_job
from thinktune.resources import LoadedResource, ResourceError, load_path
from thinktune.spec import DatasetBuildSpec, DatasetBuildStatus, DatasetCounts

console = Console(stderr=True, soft_wrap=True)
STATE_FILE = ".thinktune-state.json"
STATUS_FILE = "status.local.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Outputs that later stages write inside an earlier stage's directory must not make it look changed.
_NOT_INPUTS = (STATE_FILE, STATUS_FILE)
_NOT_INPUT_DIRS = ("eval",)


def _fingerprint(spec_json: str, inputs: list[Path]) -> str:
    h = hashlib.sha256(spec_json.encode())
    for root in inputs:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and p.name not in _NOT_INPUTS
                and not set(p.relative_to(root).parts[:-1]) & set(_NOT_INPUT_DIRS)
            )
        else:
            continue
        for f in files:
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _up_to_date(output: Path, fingerprint: str) -> bool:
    state = output / STATE_FILE
    try:
        return json.loads(state.read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError):
        return False


def _mark_done(output: Path, fingerprint: str, status: dict[str, Any]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / STATE_FILE).write_text(json.dumps({"fingerprint": fingerprint, "finished": _now()}))
    (output / STATUS_FILE).write_text(json.dumps(status, indent=2, default=str))


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


def run_dataset_build(spec: DatasetBuildSpec, src: Path, dst: Path, *, progress: bool = True) -> int:
    from thinktune.data.build import DatasetBuildError, build_dataset

    if not src.is_dir():
        console.print(
            f"[bold red]error:[/] source directory {src} does not exist (DatasetBuild spec.source.path)"
        )
        return contract.EXIT_USAGE
    try:
        report = build_dataset(spec, src, dst, progress=progress)
    except DatasetBuildError as e:
        console.print(f"[bold red]error:[/] {e}")
        return contract.EXIT_APP_FAILURE
    status = dataset_status_from_report(report, dst)
    c = status.counts
    contract.write_termination_message(
        contract.DatasetResult(counts=c, output_path=status.output_path, report_path=status.report_path)
    )
    console.print(
        f"[green]dataset[/] {dst}: {c.samples} samples — train {c.train} / val {c.val} / test {c.test}; "
        f"{c.rejects} rejected (rejects.jsonl), {c.warnings} warnings; report: {dst / 'report.md'}"
    )
    return 0


def _stage_dataset(r: LoadedResource, *, progress: bool, force: bool) -> Path:
    spec = r.resource.spec
    src, dst = r.resolve(spec.source.path), r.resolve(spec.output.path)
    fp = _fingerprint(spec.model_dump_json(), [src])
    if not force and _up_to_date(dst, fp):
        console.print(f"[dim]DatasetBuild/{r.name}: up to date ({dst})[/]")
        return dst
    console.rule(f"DatasetBuild/{r.name}")
    rc = run_dataset_build(spec, src, dst, progress=progress)
    if rc != contract.EXIT_OK:
        raise (InputError if rc == contract.EXIT_USAGE else StageError)(
            f"DatasetBuild/{r.name} failed (exit {rc})"
        )
    report = json.loads((dst / "report.json").read_text())
    _mark_done(dst, fp, dataset_status_from_report(report, dst).model_dump(mode="json", by_alias=True))
    return dst


# ------------------------------------------------------------------------------------------------------------
# FineTuneJob


def _stage_finetune(job: ResolvedJob, *, progress: bool, force: bool) -> None:
    from thinktune.train.job import train_job

    out, spec = job.output_dir, job.resource.spec
    model_path = Path(job.model)
    inputs = [job.dataset.dir] + ([model_path] if model_path.exists() else [])
    fp = _fingerprint(spec.model_dump_json() + job.model, inputs)
    if not force and _up_to_date(out, fp):
        console.print(f"[dim]FineTuneJob/{job.name}: up to date ({out})[/]")
        return
    console.rule(f"FineTuneJob/{job.name}" + (f" (node rank {job.node_rank})" if job.node_rank else ""))
    report = train_job(job, progress=progress)
    if not job.writes_job_results:
        console.print(
            f"[green]training finished[/] on node rank {job.node_rank}; node rank 0 writes the results"
        )
        return
    status = report["status"]
    plan = contract.PlanSummary.model_validate(status["plan"])
    if job.evaluation.enabled:
        status.setdefault("metrics", {}).update(_evaluate_after_training(job, plan))
    _mark_done(out, fp, status)
    finished_training(job, report, plan)


def finished_training(job: ResolvedJob, report: dict[str, Any], plan: contract.PlanSummary) -> None:
    """The job-level result of a finished training (node rank 0): the termination message and one line."""
    status = report["status"]
    contract.write_termination_message(
        contract.TrainResult(
            adapter_path=report.get("adapter_path"),
            metrics=status.get("metrics") or {},
            oom_retries=(status.get("restarts") or {}).get("oom") or 0,
            plan=plan,
            report_path=str(job.output_dir / "report.json"),
        )
    )
    console.print(
        f"[green]training finished[/]: adapter {report.get('adapter_path', job.output_dir)}; "
        f"report: {job.output_dir / 'report.md'}"
    )


def _evaluate_after_training(job: ResolvedJob, plan: contract.PlanSummary) -> dict[str, float]:
    """spec.evaluation: score the new adapter on the held-out test split. A failed evaluation is reported but
    does not undo a finished training run."""
    from thinktune.evaluate.run import evaluate_job, headline

    try:
        report = evaluate_job(job, plan=plan)
    except StageError as e:
        console.print(f"[yellow]warning:[/] evaluation after training failed: {e}")
        return {}
    return {k: float(v) for k, v in headline(report).items() if isinstance(v, int | float)}


# ------------------------------------------------------------------------------------------------------------
# ModelExport


def _stage_export(r: LoadedResource, *, jobs: dict[str, ResolvedJob], progress: bool, force: bool) -> None:
    from thinktune.export.pipeline import export_model

    export = resolve_export(r, jobs=jobs)
    out = export.output_dir
    fp = _fingerprint(r.resource.spec.model_dump_json(), [export.adapter_dir])
    if not force and _up_to_date(out, fp):
        console.print(f"[dim]ModelExport/{r.name}: up to date ({out})[/]")
        return
    console.rule(f"ModelExport/{r.name}")
    report = export_model(export, progress=progress)
    status = report["status"]
    _mark_done(out, fp, status)
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


def _error(e: Exception) -> int:
    console.print(f"[bold red]error:[/] {e}")
    return e.exit_code if isinstance(e, StageError) else contract.EXIT_USAGE


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
        return _error(e)
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
    except StageError as e:
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
    except (ResourceError, StageError) as e:
        return _error(e)
    return contract.EXIT_OK
