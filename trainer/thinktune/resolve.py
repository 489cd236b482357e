"""Where a job's inputs and outputs are, decided once.

The runner (``thinktune run/train/evaluate/export``, which is also what every pod runs) resolves each CR it
executes into a ``ResolvedJob`` (FineTuneJob) or ``ResolvedExport`` (ModelExport) from the CR, the directory of
its file, the other CRs beside it and the ``--model`` / ``--dataset`` overrides, and hands that to training
(thinktune/train/job.py), evaluation (thinktune/evaluate/run.py) and export (thinktune/export/pipeline.py). Those
stages take paths from it and look nothing up themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from thinktune.contract import ENV_NODE_RANK, truthy
from thinktune.errors import InputError
from thinktune.resources import LoadedResource
from thinktune.spec import EvaluationSpec, FineTuneJob, ModelExport, ModelSource


class Resolved(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)


class ResolvedDataset(Resolved):
    """A LLaMA Factory dataset directory as a DatasetBuild writes it (thinktune/data/writer.py)."""

    dir: Path
    name: str  # the prefix of the NAME_train / NAME_val / NAME_test entries of dataset_info.json
    has_val: bool
    train_samples: int | None

    @classmethod
    def inspect(cls, dataset_dir: Path) -> ResolvedDataset:
        dataset_dir = Path(dataset_dir).resolve()
        info_path = dataset_dir / "dataset_info.json"
        if not info_path.is_file():
            raise InputError(
                f"{info_path} not found: not a LLaMA Factory dataset directory (build it with a DatasetBuild / "
                "`thinktune dataset build`)"
            )
        info = json.loads(info_path.read_text(encoding="utf-8"))
        trains = sorted(k for k in info if k.endswith("_train"))
        if not trains:
            raise InputError(f"{info_path} has no NAME_train entry (entries: {', '.join(info) or 'none'})")
        name = trains[0].removesuffix("_train")
        return cls(
            dir=dataset_dir,
            name=name,
            has_val=f"{name}_val" in info,
            train_samples=_count_rows(dataset_dir / info[trains[0]].get("file_name", "")),
        )

    def split(self, split: str) -> Path | None:
        """The file of ``split`` (train / val / test): ``<split>.json`` as the DatasetBuild names it, else the
        file dataset_info.json lists under NAME_<split>."""
        for name in (f"{split}.json", f"{split}.jsonl"):
            if (self.dir / name).is_file():
                return self.dir / name
        info = json.loads((self.dir / "dataset_info.json").read_text(encoding="utf-8"))
        entry = info.get(f"{self.name}_{split}") or {}
        f = self.dir / entry.get("file_name", "")
        return f if entry.get("file_name") and f.is_file() else None


def _count_rows(f: Path) -> int | None:
    try:
        if f.suffix == ".jsonl":
            return sum(1 for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
        if f.suffix == ".json":
            return len(json.loads(f.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pass
    return None


def resolve_model(
    source: ModelSource,
    base_dir: Path,
    *,
    override: str | None = None,
    warm_start: Path | None = None,
    log=print,
) -> str:
    """An absolute path when the model is local (making the tiny model first when ``makeTiny`` asks for it,
    warm-started on the training split ``warm_start``: thinktune/tiny_model.py), else the hub id. ``override``
    (``--model``) is a hub id or a path relative to the current directory."""
    if override:
        local = Path(override).expanduser()
        if local.exists():
            return str(local.resolve())
        if override.startswith(("/", ".", "~")):
            raise InputError(
                f"--model {override}: no such directory ({local.resolve()}); pass a model directory"
            )
        return override
    p = Path(source.name_or_path).expanduser()
    local = (p if p.is_absolute() else Path(base_dir) / p).resolve()
    if (local / "config.json").is_file():
        return str(local)
    if source.make_tiny:
        from thinktune.tiny_model import make_tiny_model

        log(f"[job] making the tiny random Qwen3 (real tokenizer) at {local}")
        return str(Path(make_tiny_model(local, warm_start=warm_start, log=log)).resolve())
    if p.is_absolute() or source.name_or_path.startswith((".", "~")):
        raise InputError(
            f"model path {local} has no config.json (set model.makeTiny: true for a tiny model, or pass a hub id)"
        )
    return source.name_or_path  # a hub id: needs the hub or a warm HF cache


HUB_CHECK_TIMEOUT_S = 10.0


def check_model_available(model: str, *, where: str = "model.nameOrPath") -> None:
    """Fail in seconds, before any work, when ``model`` (a hub id, as ``resolve_model`` returns it) is neither
    in the Hugging Face cache nor reachable on the hub. A local directory needs no check here."""
    if Path(model).is_absolute():
        if not (Path(model) / "config.json").is_file():
            raise InputError(f"{where}: {model} has no config.json; point it at a model directory")
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return
    not_local = (
        f"{where}: base model {model!r} is not a local directory and not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE})"
    )
    fix = f"download it first (`hf download {model}`) or set {where} / --model to a local model directory"
    offline = [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if truthy(os.environ.get(k))]
    if offline or constants.HF_HUB_OFFLINE:
        raise InputError(
            f"{not_local}, and the hub is offline ({offline[0] if offline else 'HF_HUB_OFFLINE'}=1); {fix}"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(model, timeout=HUB_CHECK_TIMEOUT_S)
    except GatedRepoError:
        raise InputError(
            f"{not_local}; it is gated on the hub: accept its licence and log in (`hf auth login`)"
        ) from None
    except RepositoryNotFoundError:
        raise InputError(f"{not_local}, and the hub has no model of that name; check the spelling") from None
    except Exception as e:  # noqa: BLE001 - connection errors come in many types; the reason is what matters
        raise InputError(
            f"{not_local}, and the hub is unreachable ({type(e).__name__}: {e}); {fix}"
        ) from None


def find_adapter(path: Path) -> Path | None:
    """The LoRA adapter in ``path``: the directory itself (where LLaMA Factory saves the final adapter), its
    ``adapter/`` (a ModelExport with merge: false copies it there) or its newest ``checkpoint-N``."""
    path = Path(path)
    for cand in (path, path / "adapter"):
        if (cand / "adapter_config.json").is_file():
            return cand
    steps = {
        int(p.name.removeprefix("checkpoint-")): p
        for p in path.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit() and (p / "adapter_config.json").is_file()
    }
    return steps[max(steps)] if steps else None


def node_rank(env: dict[str, str] | None = None) -> int:
    """This pod's place in a multi-node gang (0 when alone); only node rank 0 writes job-level results."""
    return int((os.environ if env is None else env).get(ENV_NODE_RANK) or 0)


class ResolvedJob(Resolved):
    """One FineTuneJob with everything it refers to resolved."""

    resource: FineTuneJob
    model: str  # absolute path of a local model, or a hub id
    dataset: ResolvedDataset
    output_dir: Path
    node_rank: int = 0

    @property
    def name(self) -> str:
        return self.resource.metadata.name

    @property
    def namespace(self) -> str:
        return self.resource.metadata.namespace or "default"

    @property
    def evaluation(self) -> EvaluationSpec:
        return self.resource.spec.evaluation

    @property
    def adapter_path(self) -> Path | None:
        return find_adapter(self.output_dir)

    @property
    def writes_job_results(self) -> bool:
        """report.json, status, the termination message and evaluation come from node rank 0 only: every pod
        of a gang shares one output directory."""
        return self.node_rank == 0


def resolve_job(
    r: LoadedResource,
    *,
    datasets: dict[str, Path],
    model_override: str | None = None,
    dataset_dir: Path | None = None,
    log=print,
) -> ResolvedJob:
    """``datasets``: DatasetBuild name -> output dir of the CRs given with this one (spec.datasetRef)."""
    spec = r.resource.spec
    if dataset_dir is None:
        if spec.dataset is not None:
            dataset_dir = r.resolve(spec.dataset.path)
        elif spec.dataset_ref.name in datasets:
            dataset_dir = datasets[spec.dataset_ref.name]
        else:
            ref = spec.dataset_ref.name
            raise InputError(
                f"{r.file}:{r.line}: FineTuneJob/{r.name} spec.datasetRef.name={ref!r}, but no DatasetBuild "
                f"named {ref!r} is in the files given; pass its YAML too (a directory with all CRs), or use "
                "spec.dataset.path / --dataset DIR"
            )
    dataset = ResolvedDataset.inspect(dataset_dir)
    return ResolvedJob(
        resource=r.resource,
        model=resolve_model(
            spec.model, r.base_dir, override=model_override, warm_start=dataset.split("train"), log=log
        ),
        dataset=dataset,
        output_dir=r.resolve(spec.output.path),
        node_rank=node_rank(),
    )


def resolve_resource(resource: FineTuneJob, base_dir: Path, **kw) -> ResolvedJob:
    """``resolve_job`` for a CR built in code (tests, benchmarks): its relative paths are relative to
    ``base_dir``, as if its file were there."""
    file = Path(base_dir).resolve() / f"{resource.metadata.name}.yaml"
    return resolve_job(LoadedResource(resource, file, 1), datasets={}, **kw)


class ResolvedExport(Resolved):
    """One ModelExport: the adapter, its base model, the dataset (gptq calibration, verification) and the output."""

    resource: ModelExport
    adapter_dir: Path
    base_model: str
    dataset: (
        ResolvedDataset | None
    )  # None: verification is skipped and gptq is impossible (the report says so)
    dataset_source: str  # how the dataset was found, for the report
    output_dir: Path


def resolve_export(r: LoadedResource, *, jobs: dict[str, ResolvedJob], log=print) -> ResolvedExport:
    """``jobs``: the resolved FineTuneJobs of the CRs given with this one (spec.fineTuneJobRef). On a cluster the
    operator has already turned the reference into ``spec.adapter`` + ``spec.baseModel``; the dataset then comes
    from the training report (``report.json``'s ``dataset.dir``, written by thinktune/train/job.py)."""
    spec = r.resource.spec
    if spec.fine_tune_job_ref is not None:
        ref = spec.fine_tune_job_ref.name
        if ref not in jobs:
            raise InputError(
                f"{r.file}:{r.line}: ModelExport/{r.name} spec.fineTuneJobRef.name={ref!r}, but no FineTuneJob "
                f"named {ref!r} is in the files given"
            )
        job = jobs[ref]
        where, dataset, source = job.output_dir, job.dataset, f"FineTuneJob/{ref}"
        base = resolve_model(spec.base_model, r.base_dir, log=log) if spec.base_model else job.model
    else:
        where = r.resolve(spec.adapter.path)
        dataset, source = _dataset_of_training_report(where)
        base = resolve_model(spec.base_model, r.base_dir, log=log)
    adapter = find_adapter(where)
    if adapter is None:
        raise InputError(
            f"ModelExport/{r.name}: no LoRA adapter (adapter_config.json) in {where}, its adapter/ or "
            "checkpoint-N; train the FineTuneJob first or point spec.adapter.path at the adapter"
        )
    return ResolvedExport(
        resource=r.resource,
        adapter_dir=adapter,
        base_model=base,
        dataset=dataset,
        dataset_source=source,
        output_dir=r.resolve(spec.output.path),
    )


def _dataset_of_training_report(adapter_dir: Path) -> tuple[ResolvedDataset | None, str]:
    try:
        d = json.loads((Path(adapter_dir) / "report.json").read_text(encoding="utf-8"))["dataset"]["dir"]
        return ResolvedDataset.inspect(Path(d)), "training report.json"
    except (OSError, ValueError, KeyError, TypeError, InputError):
        return None, "not found"
