"""The `thinktune` command.

Every verb imports its heavy machinery (torch, LLaMA Factory, kopf) inside the function, so `thinktune crds`
or `thinktune validate` start in a fraction of a second and work without the trainer extra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="thinktune",
    help="Fine-tune Qwen3 thinking models on Chinese domain markdown with LLaMA Factory — locally or on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dataset_app = typer.Typer(help="Build training datasets from markdown.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
review_app = typer.Typer(help="Expert (human) review of model answers.", no_args_is_help=True)
app.add_typer(review_app, name="review")

console = Console(stderr=True, soft_wrap=True)
REPO_ROOT = Path(__file__).resolve().parents[2]

FileOpt = Annotated[Path, typer.Option("-f", "--filename", help="CR YAML file (or a directory for `run`).")]


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error (also: THINKTUNE_DEBUG=1).")
    ] = False,
) -> None:
    """Fine-tune Qwen3 thinking models on Chinese domain markdown with LLaMA Factory — locally or on Kubernetes."""
    if debug:
        import os

        from thinktune.errors import ENV_DEBUG

        os.environ[ENV_DEBUG] = "1"  # the runner and the training subprocesses read it


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _load_one(path: Path, kind: str):
    from thinktune.resources import ResourceError, load_path

    try:
        loaded = [r for r in load_path(path) if r.kind == kind]
    except ResourceError as e:
        _fail(str(e))
    if not loaded:
        _fail(f"{path}: no {kind} found")
    if len(loaded) > 1:
        _fail(f"{path}: {len(loaded)} {kind} resources found; pass the file of the one to run")
    return loaded[0]


# --------------------------------------------------------------------------------------------------------------


CHART_CRDS = REPO_ROOT / "helm" / "thinktune" / "crds"


@app.command()
def crds(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the CRD YAMLs.")] = REPO_ROOT
    / "crds",
    check: Annotated[
        bool, typer.Option(help="Only check that the directory is up to date (exit 1 if stale).")
    ] = False,
) -> None:
    """Generate the CustomResourceDefinitions from thinktune.spec (crds/*.yaml and the Helm chart's copy)."""
    from thinktune.crdgen import render_crds, write_crds

    # the chart ships byte copies (Helm installs crds/ from inside the chart); one command keeps both in sync
    targets = [output] + ([CHART_CRDS] if output == REPO_ROOT / "crds" and CHART_CRDS.parent.is_dir() else [])
    if check:
        rendered = render_crds()
        stale = [
            str(t / n)
            for t in targets
            for n, text in rendered.items()
            if not (t / n).exists() or (t / n).read_text(encoding="utf-8") != text
        ]
        if stale:
            _fail(f"stale CRDs: {', '.join(stale)}; run `thinktune crds`", code=1)
        console.print(f"CRDs in {', '.join(map(str, targets))} are up to date")
        return
    for target in targets:
        for path in write_crds(target):
            console.print(f"wrote {path}")


@app.command()
def validate(path: FileOpt) -> None:
    """Validate CR YAML files against the spec models (the same rules the CRD schema enforces)."""
    from thinktune.resources import ResourceError, load_path

    try:
        loaded = load_path(path)
    except ResourceError as e:
        _fail(str(e), code=1)
    for r in loaded:
        console.print(f"[green]ok[/] {r.kind}/{r.name} ({r.file.name}:{r.line})")


@app.command()
def doctor(
    model: Annotated[str | None, typer.Option(help="Hub id or local path of the model to check.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check this machine: GPUs, memory, disk, tokenizer/template compatibility; recommend settings."""
    from thinktune.doctor import doctor_command

    raise typer.Exit(doctor_command(model, json_out))


@app.command("make-tiny-model")
def make_tiny_model(
    out: Annotated[Path, typer.Argument(help="Output directory.")],
    hidden_size: Annotated[int, typer.Option(help="Hidden size.")] = 64,
    num_layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    kv_heads: Annotated[int, typer.Option(help="Key/value heads.")] = 2,
    intermediate: Annotated[int, typer.Option(help="MLP size.")] = 128,
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Create a tiny random-weight Qwen3 with the real Qwen3 tokenizer (offline), for tests and CPU smoke runs."""
    from thinktune.tiny_model import make_tiny_model as make

    path = make(
        out,
        hidden_size=hidden_size,
        num_layers=num_layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        seed=seed,
    )
    console.print(f"tiny Qwen3 written to {path}")


@dataset_app.command("build")
def dataset_build(
    filename: Annotated[Path | None, typer.Option("-f", "--filename", help="DatasetBuild CR YAML.")] = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="Directory of markdown documents.")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option("--output", help="Output dataset directory.")] = None,
    split: Annotated[str | None, typer.Option(help="train,val,test fractions, e.g. 0.7,0.15,0.15")] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Build a dataset: markdown -> validated Qwen3-thinking samples -> train/val/test + dataset_info.json."""
    from pydantic import ValidationError

    from thinktune.spec import DatasetBuildSpec, Volume

    if filename is not None:
        loaded = _load_one(filename, "DatasetBuild")
        spec = loaded.resource.spec
        src = input_dir or loaded.resolve(spec.source.path)
        dst = output_dir or loaded.resolve(spec.output.path)
    else:
        if input_dir is None or output_dir is None:
            _fail("pass -f dsb.yaml, or both --input DIR and --output DIR")
        spec = DatasetBuildSpec(source=Volume(path=str(input_dir)), output=Volume(path=str(output_dir)))
        src, dst = input_dir, output_dir
    if split is not None or seed is not None:
        fields = spec.split.model_dump()
        if split is not None:
            try:
                fields["train"], fields["val"], fields["test"] = (float(x) for x in split.split(","))
            except ValueError:
                _fail(f"--split {split!r}: expected three comma-separated fractions like 0.7,0.15,0.15")
        if seed is not None:
            fields["seed"] = seed
        try:
            spec = spec.model_copy(update={"split": type(spec.split).model_validate(fields)})
        except ValidationError as e:
            _fail(f"--split: {e.errors()[0]['msg'].removeprefix('Value error, ')}")
    from thinktune.runner import run_dataset_build

    raise typer.Exit(run_dataset_build(spec, Path(src), Path(dst), progress=not no_progress))


@app.command()
def train(
    filename: FileOpt,
    model: Annotated[
        str | None, typer.Option(help="Override spec.model.nameOrPath (hub id or path).")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset directory (instead of resolving datasetRef).")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live display.")] = False,
    force: Annotated[
        bool,
        typer.Option(help="Train again although a finished run has the same inputs (it moves to previous/)."),
    ] = False,
) -> None:
    """Fine-tune with LLaMA Factory as a FineTuneJob describes (planner, OOM retry, metrics, report).

    A finished run with the same spec, data and base model is skipped; an unfinished one resumes from its last
    checkpoint; a run with other inputs moves to <output>/previous/ and training starts fresh."""
    from thinktune.runner import run_path

    raise typer.Exit(
        run_path(
            filename,
            only_kind="FineTuneJob",
            model_override=model,
            dataset_dir=dataset,
            progress=not no_progress,
            force=force,
        )
    )


@app.command()
def evaluate(
    filename: FileOpt,
    model: Annotated[str | None, typer.Option(help="Override spec.model.nameOrPath.")] = None,
) -> None:
    """Evaluate a trained FineTuneJob on its test split (perplexity, BLEU, ROUGE-L, term accuracy)."""
    from thinktune.runner import run_evaluate

    raise typer.Exit(run_evaluate(filename, model_override=model))


@review_app.command("export")
def review_export(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl written by `thinktune evaluate`.")],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Sheet to write (.csv, .jsonl, or .json: Label Studio tasks)."),
    ],
    reviewer: Annotated[list[str] | None, typer.Option(help="Reviewer name (repeat for several).")] = None,
) -> None:
    """Write a review sheet: each answer with empty accuracy/fluency/professionalism (1-5) and comment columns."""
    from thinktune.evaluate.review import export_review_sheet

    path = export_review_sheet(predictions, output, reviewers=tuple(reviewer or ("",)))
    console.print(
        f"review sheet written to {path}; fill in the score columns, then `thinktune review import`"
    )


@review_app.command("serve")
def review_serve(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl written by `thinktune evaluate`.")],
    store: Annotated[
        Path | None, typer.Option(help="SQLite file the scores go to (default: review.sqlite beside it).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8765,
) -> None:
    """Expert review page: score answers 1-5, rubric, comment, blind A/B vs the base model; saved as given."""
    from thinktune.evaluate.review_server import serve

    raise typer.Exit(
        serve(predictions, store or predictions.with_name("review.sqlite"), host=host, port=port)
    )


@review_app.command("import")
def review_import(
    sheet: Annotated[
        Path, typer.Argument(help="Filled-in review sheet, or the review page's review.sqlite.")
    ],
    threshold: Annotated[float, typer.Option(help="Scores below this are flagged.")] = 3.0,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Directory for the summary.")] = None,
) -> None:
    """Validate a filled-in sheet (errors name the row), aggregate scores and reviewer agreement."""
    from thinktune.evaluate.review import ReviewSheetError, import_review_sheet, write_review_summary

    try:
        summary = import_review_sheet(sheet, threshold=threshold)
    except ReviewSheetError as e:
        _fail(str(e), code=1)
    out = write_review_summary(summary, output or sheet.parent)
    console.print(f"review summary written to {out}")


@app.command()
def export(
    filename: FileOpt,
    force: Annotated[
        bool, typer.Option(help="Export again although the adapter, base model and spec are unchanged.")
    ] = False,
) -> None:
    """Merge, quantize and verify a model as a ModelExport describes (skipped when its inputs are unchanged)."""
    from thinktune.runner import run_path

    raise typer.Exit(run_path(filename, only_kind="ModelExport", force=force))


@app.command()
def run(
    filename: FileOpt,
    model: Annotated[
        str | None, typer.Option(help="Override the FineTuneJob's model (hub id or path).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Re-run stages even when their outputs are up to date.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress display.")] = False,
) -> None:
    """Run every CR in a file or directory locally, in order: DatasetBuild -> FineTuneJob -> ModelExport."""
    from thinktune.runner import run_path

    raise typer.Exit(run_path(filename, model_override=model, progress=not no_progress, force=force))


def _mount_optional() -> None:
    try:
        from thinktune_sandbox.cli import app as sandbox_app
    except ImportError:
        return
    app.add_typer(
        sandbox_app, name="sandbox", help="A local Kubernetes control plane with simulated GPU nodes."
    )


_mount_optional()


def main() -> None:
    """Expected failures become one line and exit 2 (thinktune/errors.py ``explain``); a bug says it is one
    (exit 1); ``--debug`` shows the traceback of either."""
    from thinktune.errors import debug_enabled, explain

    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        if debug_enabled() or "--debug" in sys.argv:
            raise
        known = explain(e)
        if known is not None:
            console.print(f"[bold red]error:[/] {known[0]}", highlight=False)
            sys.exit(known[1])
        console.print(
            f"[bold red]error:[/] unexpected {type(e).__name__}: {e} (a thinktune bug: rerun with --debug for "
            "the traceback and report it)",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
