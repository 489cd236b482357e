"""The embedded (local) runtime: run CRs in-process, in dependency order, the way the operator would on a cluster.

`thinktune run -f examples/crypto/` resolves references between the CRs (a FineTuneJob's datasetRef names a
DatasetBuild in the same set; a ModelExport's fineTuneJobRef names a FineTuneJob), skips stages whose inputs
have not changed since their last successful run (a fingerprint of spec + inputs is stored next to the
outputs), and writes each stage's status — the same shape the operator writes to `.status` — to
`<output>/status.local.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from thinktune.resources import LoadedResource, ResourceError, load_path
from thinktune.spec import DatasetBuildSpec, DatasetBuildStatus, DatasetCounts, ModelSource

console = Console(stderr=True, soft_wrap=True)
STATE_FILE = ".thinktune-state.json"


class StageError(Exception):
    """A stage failed in a way the user can act on; the message says how."""


TERMINATION_LOG_ENV = "THINKTUNE_TERMINATION_LOG"
TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message


def write_termination_message(payload: dict[str, Any]) -> None:
    """On a cluster the operator reads a stage's results from the pod's termination message (no exec, no PVC
    access): one compact JSON object, trimmed of its largest fields until it fits Kubernetes' 4 KiB."""
    path = os.environ.get(TERMINATION_LOG_ENV)
    if not path:
        return
    data = {k: v for k, v in payload.items() if v is not None}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    while len(text.encode()) > TERMINATION_LIMIT and data:
        data.pop(max(data, key=lambda k: len(json.dumps(data[k], default=str))))
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:  # a read-only or missing path must not fail a finished stage
        console.print(f"[yellow]warning:[/] cannot write termination message to {path}: {e.strerror}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Outputs that later stages write inside an earlier stage's directory must not make it look changed.
_NOT_INPUTS = (STATE_FILE, "status.local.json")
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
    (output / "status.local.json").write_text(json.dumps(status, indent=2, default=str))


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
        return 2
    try:
        report = build_dataset(spec, src, dst, progress=progress)
    except DatasetBuildError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 1
    status = dataset_status_from_report(report, dst)
    c = status.counts
    write_termination_message(
        {
            "counts": c.model_dump(by_alias=True),
            "reportPath": str(dst / "report.json"),
            "outputPath": str(dst),
        }
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
    if rc != 0:
        raise StageError(f"DatasetBuild/{r.name} failed (exit {rc})")
    report = json.loads((dst / "report.json").read_text())
    _mark_done(dst, fp, dataset_status_from_report(report, dst).model_dump(mode="json", by_alias=True))
    return dst


# ------------------------------------------------------------------------------------------------------------
# FineTuneJob


def _job_model(r: LoadedResource, model_override: str | None) -> ModelSource:
    """The FineTuneJob's base model, with `--model` (a hub id or path) replacing it when given."""
    model = r.resource.spec.model.model_copy()
    if model_override:
        model.name_or_path, model.make_tiny = model_override, False
    return model


def _stage_finetune(
    r: LoadedResource,
    *,
    datasets: dict[str, Path],
    model_override: str | None,
    dataset_dir: Path | None,
    progress: bool,
    force: bool,
) -> Path:
    from thinktune.train.job import train_job

    res = r.resource
    if model_override:
        res = res.model_copy(deep=True)
        res.spec.model = _job_model(r, model_override)
    if dataset_dir is None:
        if res.spec.dataset is not None:
            dataset_dir = r.resolve(res.spec.dataset.path)
        else:
            ref = res.spec.dataset_ref.name
            if ref not in datasets:
                raise StageError(
                    f"{r.file}:{r.line}: FineTuneJob/{r.name} spec.datasetRef.name={ref!r}, but no "
                    f"DatasetBuild named {ref!r} is in the files given; pass its YAML too (a "
                    f"directory with all CRs), or use spec.dataset.path / --dataset DIR"
                )
            dataset_dir = datasets[ref]
    out = r.resolve(res.spec.output.path)
    model_path = r.resolve(res.spec.model.name_or_path)
    inputs = [dataset_dir] + ([model_path] if model_path.exists() else [])
    fp = _fingerprint(res.spec.model_dump_json(), inputs)
    if not force and _up_to_date(out, fp):
        console.print(f"[dim]FineTuneJob/{r.name}: up to date ({out})[/]")
        return out
    console.rule(f"FineTuneJob/{r.name}")
    report = train_job(res, base_dir=r.base_dir, dataset_dir=dataset_dir, progress=progress)
    status = report.get("status", {"phase": "Succeeded"})
    _mark_done(out, fp, status)  # evaluation reads the plan from status.local.json
    if res.spec.evaluation.enabled:
        status.setdefault("metrics", {}).update(_evaluate_after_training(r, model_override))
        _mark_done(out, fp, status)
    write_termination_message(
        {
            "adapterPath": report.get("adapter_path"),
            "metrics": status.get("metrics"),
            "oomRetries": (status.get("restarts") or {}).get("oom"),
            "plan": status.get("plan"),
        }
    )
    console.print(
        f"[green]training finished[/]: adapter {report.get('adapter_path', out)}; report: {out / 'report.md'}"
    )
    return out


def _evaluate_after_training(r: LoadedResource, model_override: str | None) -> dict[str, float]:
    """spec.evaluation: score the new adapter on the held-out test split. A failed evaluation is reported but
    does not undo a finished training run."""
    from thinktune.evaluate.run import evaluate_job, headline

    try:
        report = evaluate_job(r, model_override=model_override)
    except StageError as e:
        console.print(f"[yellow]warning:[/] evaluation after training failed: {e}")
        return {}
    return {k: float(v) for k, v in headline(report).items() if isinstance(v, int | float)}


# ------------------------------------------------------------------------------------------------------------
# ModelExport


def _stage_export(
    r: LoadedResource, *, jobs: dict[str, tuple[Path, Any]], progress: bool, force: bool
) -> Path:
    try:
        from thinktune.export.pipeline import export_model
    except ImportError as e:
        raise StageError(
            f"ModelExport/{r.name}: the export stage is not available in this build ({e})"
        ) from None
    res = r.resource
    out = r.resolve(res.spec.output.path)
    if res.spec.adapter is not None:
        adapter = r.resolve(res.spec.adapter.path)
        base = res.spec.base_model
    else:
        ref = res.spec.fine_tune_job_ref.name
        if ref not in jobs:
            raise StageError(
                f"{r.file}:{r.line}: ModelExport/{r.name} spec.fineTuneJobRef.name={ref!r}, but no "
                f"FineTuneJob named {ref!r} is in the files given"
            )
        adapter, base = jobs[ref]
        base = res.spec.base_model or base
    fp = _fingerprint(res.spec.model_dump_json(), [adapter])
    if not force and _up_to_date(out, fp):
        console.print(f"[dim]ModelExport/{r.name}: up to date ({out})[/]")
        return out
    console.rule(f"ModelExport/{r.name}")
    report = export_model(
        res, adapter_dir=adapter, base_model=base, output_dir=out, base_dir=r.base_dir, progress=progress
    )
    status = report.get("status", {"phase": "Succeeded"})
    _mark_done(out, fp, status)
    write_termination_message({"artifacts": status.get("artifacts")})
    console.print(f"[green]export finished[/]: {out}; model card: {out / 'README.md'}")
    return out


# ------------------------------------------------------------------------------------------------------------


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
        console.print(f"[bold red]error:[/] {e}")
        return 2
    # references resolve against everything in the directory (or the file's directory for a single file)
    pool = loaded
    if only_kind is not None and Path(path).is_file():
        try:
            pool = load_path(Path(path).parent)
        except ResourceError:
            pool = loaded
    datasets = {r.name: r.resolve(r.resource.spec.output.path) for r in pool if r.kind == "DatasetBuild"}
    jobs = {}
    for r in pool:
        if r.kind == "FineTuneJob":
            adapter = r.resolve(r.resource.spec.output.path)
            model = _job_model(r, model_override)
            # a local model (or the tiny one the job makes) is handed on as an absolute path; a hub id as is
            if not model_override and (model.make_tiny or r.resolve(model.name_or_path).exists()):
                model.name_or_path = str(r.resolve(model.name_or_path))
            jobs[r.name] = (adapter, model)
    started = time.monotonic()
    try:
        for r in loaded:
            if only_kind and r.kind != only_kind:
                continue
            if r.kind == "DatasetBuild":
                _stage_dataset(r, progress=progress, force=force)
            elif r.kind == "FineTuneJob":
                _stage_finetune(
                    r,
                    datasets=datasets,
                    model_override=model_override,
                    dataset_dir=dataset_dir,
                    progress=progress,
                    force=force,
                )
            elif r.kind == "ModelExport":
                _stage_export(r, jobs=jobs, progress=progress, force=force)
    except StageError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 1
    except Exception as e:
        # the trainer's TrainingFailed carries the worker's exit code (75 = GPU failure): the operator tells
        # infrastructure from application failures by it, so it must reach the pod's exit status unchanged
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        console.print(f"[bold red]error:[/] {e}")
        return int(code)
    console.print(f"[bold green]done[/] in {time.monotonic() - started:.0f}s")
    return 0


def run_evaluate(path: Path, *, model_override: str | None = None) -> int:
    try:
        from thinktune.evaluate.run import evaluate_job
    except ImportError as e:
        console.print(f"[bold red]error:[/] evaluation is not available in this build ({e})")
        return 2
    try:
        loaded = [r for r in load_path(path) if r.kind == "FineTuneJob"]
    except ResourceError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    try:
        for r in loaded:
            evaluate_job(r, model_override=model_override)
    except StageError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 1
    return 0
