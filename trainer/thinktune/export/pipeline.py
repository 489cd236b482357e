"""The ModelExport stage: merge -> quantize -> verify -> model card -> report.

``export_model(export)`` takes a ``ResolvedExport`` (thinktune/resolve.py: the adapter, the base model, the
dataset and the output dir, resolved once by the runner, which is also what the export pod runs). Layout of
``output_dir``::

    merged/            merged model (safetensors + tokenizer + chat template + generation config + Modelfile)
    adapter/           only with merge: false (a copy of the adapter)
    <variant>/         one standard checkpoint per quantized variant (int8, int4, gptq-int4, ...; see
                       thinktune/export/quantize.py)
    README.md          model card
    report.json        {"status": ModelExportStatus (camelCase), "merge", "variants", "verification", ...}
    report.md          human report

The dataset gives calibration text for gptq (train split) and verification samples (test split); without one,
gptq fails and verification is skipped with a note in the report.

A requested variant that cannot be produced (e.g. gptq without a train split) does not stop the others; the export then
ends ``Failed`` with a message naming the cause, after writing everything it could, and raises
``thinktune.errors.StageError`` so ``thinktune run`` reports it and does not mark the stage up to date.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinktune.errors import StageError
from thinktune.resolve import ResolvedExport
from thinktune.spec import Condition, ExportArtifact, ModelExportStatus

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VERIFY_MAX_NEW_TOKENS = 128


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _log(progress: bool):
    from rich.console import Console

    console = Console(stderr=True)
    return (lambda msg: console.print(f"[cyan]export[/] {msg}")) if progress else (lambda msg: None)


def export_model(
    export: ResolvedExport,
    *,
    progress: bool = True,
    merge_backend: str = "auto",
    verify_max_new_tokens: int = VERIFY_MAX_NEW_TOKENS,
    raise_on_failure: bool = True,
) -> dict[str, Any]:
    """Run the ModelExport; return the report (``report["status"]`` is a ModelExportStatus dict, camelCase)."""
    from thinktune.evaluate import metrics as M
    from thinktune.export.card import write_model_card
    from thinktune.export.merge import merge_adapter
    from thinktune.export.quantize import (
        QuantizationError,
        QuantizationUnavailable,
        calibration_batches,
        quantize,
        variant_bits,
    )
    from thinktune.export.verify import verify_variants
    from thinktune.progress import step
    from thinktune.tiny_model import read_tiny_marker

    res, spec = export.resource, export.resource.spec
    log = _log(progress)
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    output_dir, adapter, base = export.output_dir, export.adapter_dir, export.base_model
    output_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    notes: list[str] = []

    ds = export.dataset
    ds_dir, ds_how = (ds.dir if ds else None), export.dataset_source
    train_file = ds.split("train") if ds else None
    test_file = ds.split("test") if ds else None
    if ds is None:
        notes.append(
            f"no dataset found next to the adapter (no {adapter / 'report.json'} naming one): verification "
            "skipped, gptq impossible"
        )

    artifacts: list[dict[str, Any]] = []
    merge_info: dict[str, Any] | None = None
    if spec.merge:
        log(f"merging {adapter} into {base}")
        with step("merging the adapter"):
            merge_info = merge_adapter(base, adapter, output_dir / "merged", backend=merge_backend)
        notes += merge_info.get("notes", [])
        merged_dir = Path(merge_info["path"])
        artifacts.append(
            {
                "name": "merged",
                "path": str(merged_dir),
                "method": "merge",
                "bits": None,
                "size_bytes": _dir_size(merged_dir),
                "warnings": [],
            }
        )
    else:
        dst = output_dir / "adapter"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(adapter, dst)
        merged_dir = None
        artifacts.append(
            {
                "name": "adapter",
                "path": str(dst),
                "method": "lora",
                "bits": None,
                "size_bytes": _dir_size(dst),
                "warnings": [],
            }
        )

    for q in spec.quantize:
        name = q.variant_name()
        dst = output_dir / name
        entry = {
            "name": name,
            "path": str(dst),
            "method": q.method,
            "bits": variant_bits(q),
            "group_size": q.group_size,
            "warnings": [],
        }
        try:
            calib = None
            if q.method == "gptq":
                if train_file is None:
                    raise QuantizationError(
                        "gptq needs calibration text from the train split, but no dataset "
                        "(train.json) was found; pass dataset_dir"
                    )
                from transformers import AutoTokenizer

                calib, entry["calibration"] = calibration_batches(
                    M.load_samples(train_file),
                    AutoTokenizer.from_pretrained(str(merged_dir)),
                    q.calibration_samples,
                    q.calibration_seq_len,
                )
            with step(f"quantizing {name} ({q.method})"):
                info = quantize(q, merged_dir, dst, calibration=calib)
            entry.update(size_bytes=_dir_size(dst), info=info, group_size=info["group_size"])
            notes += [f"{name}: {n}" for n in info["notes"]]
        except (QuantizationUnavailable, QuantizationError) as e:
            entry.update(verified=False, failed=True)
            entry["warnings"].append(str(e))
            errors.append(f"{name}: {e}")
            log(f"[red]{name} failed[/]: {e}")
        artifacts.append(entry)

    verification: dict[str, Any] | None = None
    to_verify = [a for a in artifacts if a["method"] in ("int8", "int4", "gptq") and not a.get("failed")]
    if spec.verify.enabled and merged_dir is not None and to_verify:
        if test_file is None:
            notes.append("verification skipped: no test split found")
            for a in to_verify:
                a["warnings"].append("not verified: no test split found")
        else:
            samples = M.load_samples(test_file, limit=spec.verify.samples)
            with step(f"verifying {', '.join(a['name'] for a in to_verify)} on {len(samples)} test samples"):
                verification = verify_variants(
                    str(merged_dir),
                    to_verify,
                    samples,
                    spec=spec.verify,
                    max_new_tokens=verify_max_new_tokens,
                    log=log,
                )
            artifacts[0]["perplexity"] = verification["merged"]["perplexity"]
            artifacts[0]["term_accuracy"] = verification["merged"]["termAccuracy"]
            for a in to_verify:
                v = verification["variants"].get(a["name"], {})
                a["verification"] = v
                a["verified"] = v.get("verified")
                a["perplexity"] = v.get("perplexity")
                a["term_accuracy"] = v.get("termAccuracy")
                a["warnings"] += v.get("warnings", [])

    # card
    train_report = _read_json(adapter / "report.json")
    eval_report = _read_json(adapter / "eval" / "eval_report.json")
    ds_report = _read_json(ds_dir / "report.json") if ds_dir else None
    card_path = None
    if spec.model_card:
        card_path = write_model_card(
            output_dir,
            {
                "name": res.metadata.name,
                "base_model": base,
                "adapter": str(adapter),
                "merge_backend": merge_info["backend"] if merge_info else None,
                "dataset": {
                    "dir": str(ds_dir) if ds_dir else None,
                    "counts": (ds_report or {}).get("counts"),
                },
                "training": train_report,
                "evaluation": eval_report,
                "artifacts": artifacts,
                "verify": spec.verify.model_dump() if verification else None,
                "tiny": read_tiny_marker(base) is not None if Path(base).is_dir() else False,
            },
        )

    failed = bool(errors)
    n_warn = sum(len(a["warnings"]) for a in artifacts if not a.get("failed"))
    if failed:
        message = "export failed: " + "; ".join(errors)
    else:
        made = ", ".join(a["name"] for a in artifacts)
        message = f"exported {made}" + (f"; {n_warn} verification warning(s)" if n_warn else "")
    now = datetime.now(UTC)
    conditions = [
        Condition(
            type="Failed" if failed else "Succeeded",
            status="True",
            reason="QuantizationFailed" if failed else "Exported",
            message=message,
            last_transition_time=now,
        )
    ]
    if verification is not None:
        all_ok = all(a.get("verified") for a in to_verify)
        conditions.append(
            Condition(
                type="Verified",
                status="True" if all_ok else "False",
                reason="WithinThresholds" if all_ok else "DegradationWarnings",
                message="all variants within thresholds"
                if all_ok
                else "; ".join(f"{a['name']}: {w}" for a in to_verify for w in a["warnings"]),
                last_transition_time=now,
            )
        )
    status = ModelExportStatus(
        phase="Failed" if failed else "Succeeded",
        conditions=conditions,
        start_time=started_at,
        completion_time=now,
        message=message,
        report_path=str(output_dir / REPORT_JSON),
        artifacts=[
            ExportArtifact(
                name=a["name"],
                path=a["path"],
                size_bytes=a.get("size_bytes"),
                verified=a.get("verified"),
                perplexity=a.get("perplexity"),
                term_accuracy=a.get("term_accuracy"),
                warnings=a["warnings"],
            )
            for a in artifacts
        ],
    )
    report = {
        "kind": "ModelExportReport",
        "name": res.metadata.name,
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
        "baseModel": base,
        "adapter": str(adapter),
        "dataset": {
            "dir": str(ds_dir) if ds_dir else None,
            "foundVia": ds_how,
            "train": str(train_file) if train_file else None,
            "test": str(test_file) if test_file else None,
        },
        "merge": merge_info,
        "artifacts": artifacts,
        "verification": verification,
        "notes": notes,
        "modelCard": str(card_path) if card_path else None,
        "seconds": time.monotonic() - t0,
    }
    (output_dir / REPORT_JSON).write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
    )
    _write_markdown(report, output_dir / REPORT_MD)
    log(message)
    if failed and raise_on_failure:
        raise StageError(f"ModelExport/{res.metadata.name}: {message} (report: {output_dir / REPORT_MD})")
    return report


def _write_markdown(report: dict[str, Any], path: Path) -> None:
    def f(v, fmt=".4f"):
        return "–" if v is None else format(v, fmt) if isinstance(v, float) else str(v)

    st = report["status"]
    lines = [
        f"# Export report: {report['name']}",
        "",
        f"**{st['phase']}** — {st.get('message', '')}",
        "",
        f"- base model: `{report['baseModel']}`",
        f"- adapter: `{report['adapter']}`",
        f"- merge: {report['merge']['backend'] if report.get('merge') else 'not merged'}",
        f"- dataset: `{report['dataset']['dir']}` (found via {report['dataset']['foundVia']})",
        "",
        "| artifact | size (MB) | perplexity | Δ perplexity | top-1 agreement | char acc vs merged | term acc | "
        "verified |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in report["artifacts"]:
        v = a.get("verification") or {}
        inc = v.get("perplexityIncrease")
        lines.append(
            f"| {a['name']} | {f((a.get('size_bytes') or 0) / 1e6, '.1f')} | {f(a.get('perplexity'))} | "
            f"{'–' if inc is None else format(inc, '+.2%')} | {f(v.get('top1Agreement'))} | "
            f"{f(v.get('charAccuracyVsMerged'))} | {f(a.get('term_accuracy'))} | {f(a.get('verified'))} |"
        )
    warns = [(a["name"], w) for a in report["artifacts"] for w in a["warnings"]]
    if warns:
        lines += ["", "## Warnings", ""] + [f"- **{n}**: {w}" for n, w in warns]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
