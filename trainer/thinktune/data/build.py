"""``build_dataset``: a directory of markdown → a LLaMA Factory dataset directory (the DatasetBuild workload).

Parallel per document (parsing, Chinese normalisation, thinking, jieba) over ``spec.workers`` processes (all
cores by default); then, in this process: teacher-model generation (thinking.generate=model), validation with
the real tokenizer, exact/near de-duplication, the stratified split, and the output files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing as mp
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinktune.data.chinese import term_recognizer
from thinktune.data.dedup import dedup_text, deduplicate
from thinktune.data.document import DocOptions, DocResult, process_file, quality_gate
from thinktune.data.leakage import Held, leakage_report
from thinktune.data.samples import SAMPLE_TYPES, Reject, Sample
from thinktune.data.split import SPLITS, group_split
from thinktune.data.teacher import TeacherError, make_teacher
from thinktune.data.teacher_questions import REJECT_PREFIX, extra_samples
from thinktune.data.thinking import assess_quality, strip_code
from thinktune.data.validate import load_length_tokenizer, render_chat, structural_problems, token_lengths
from thinktune.data.writer import dataset_info, plots, report_markdown, write_json, write_jsonl
from thinktune.spec import DatasetBuildSpec, DatasetBuildStatus, DatasetCounts

PARALLEL_MIN_BYTES = 256 * 1024  # below this, worker start-up (jieba init ~1 s each) costs more than it saves


class DatasetBuildError(Exception):
    """Nothing usable was produced (no documents, or no valid sample). The message says why and what to do."""


def find_documents(
    input_dir: Path, include: list[str], exclude: list[str], skip_dir: Path | None = None
) -> list[Path]:
    """Documents under input_dir matching include and not exclude (sorted). ``skip_dir`` (the output directory,
    when it lies inside the input) is never read: report.md must not become training data on a rebuild."""
    files: set[Path] = set()
    for pat in include:
        for p in input_dir.glob(pat):
            if p.is_file():
                files.add(p)
        if pat.startswith("**/"):  # make "**/*.md" also match top-level files on every Python
            files.update(p for p in input_dir.glob(pat[3:]) if p.is_file())
    out = []
    for p in sorted(files):
        rel = p.relative_to(input_dir).as_posix()
        if any(fnmatch.fnmatch(rel, ex) or p.match(ex) for ex in exclude):
            continue
        if skip_dir is not None and p.resolve().is_relative_to(skip_dir.resolve()):
            continue
        out.append(p)
    return out


PIPELINE_VERSION = "2"  # bump when the same inputs would produce different output


def content_hash(spec: DatasetBuildSpec, input_dir: Path, docs: list[Path] | None = None) -> str:
    """sha256 over the documents (path + bytes), the spec fields that shape the output, the extra glossary and
    the pipeline version: equal hashes mean a rebuild would write the same dataset."""
    input_dir = Path(input_dir)
    if docs is None:
        docs = find_documents(input_dir, spec.include, spec.exclude)
    h = hashlib.sha256(f"thinktune-dataset-v{PIPELINE_VERSION}\n".encode())
    shaping = spec.model_dump(
        mode="json", by_alias=True, exclude={"source", "output", "pod", "resources", "workers"}
    )
    h.update(json.dumps(shaping, sort_keys=True).encode())
    if spec.chinese.glossary and Path(spec.chinese.glossary).is_file():
        h.update(Path(spec.chinese.glossary).read_bytes())
    for p in docs:
        h.update(p.relative_to(input_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def status_from_report(report: dict) -> DatasetBuildStatus:
    """The DatasetBuild status fields that mirror report.json (counts, paths, content hash, summary)."""
    c = DatasetCounts.model_validate(report["counts"])
    return DatasetBuildStatus(
        counts=c,
        output_path=report["output_dir"],
        content_hash=report.get("content_hash"),
        report_path=str(Path(report["output_dir"]) / "report.json"),
        message=f"{c.samples} samples (train {c.train}/val {c.val}/test {c.test}) from "
        f"{c.documents} documents; {c.rejects} rejects, {c.duplicates} duplicates, "
        f"{c.warnings} warnings",
    )


def _work(batch: list[tuple[str, str]], opts: DocOptions) -> list[DocResult]:
    return [process_file(path, rel, opts) for path, rel in batch]


def _percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def _progress(enabled: bool, total: int):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]dataset build[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents"),
        TimeElapsedColumn(),
        transient=False,
    )


def process_documents(
    docs: list[Path], input_dir: Path, opts: DocOptions, workers: int, progress: bool = False
) -> list[DocResult]:
    """Process documents, in parallel when it pays off. Results are in document order."""
    jobs = [(str(p), p.relative_to(input_dir).as_posix()) for p in docs]
    total_bytes = sum(p.stat().st_size for p in docs)
    results: list[DocResult] = []
    with _progress(progress and len(jobs) > 0, len(jobs)) as prog:
        task = prog.add_task("docs", total=len(jobs)) if prog is not None else None
        if workers <= 1 or len(jobs) < 2 or total_bytes < PARALLEL_MIN_BYTES:
            for job in jobs:
                results.extend(_work([job], opts))
                if prog is not None:
                    prog.advance(task)
            return results
        # ~4 batches per worker keeps all cores busy without per-document IPC overhead
        n_batches = min(len(jobs), workers * 4)
        batches = [jobs[i::n_batches] for i in range(n_batches)]
        # forkserver: never fork a parent that may already run tokenizer/torch threads
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["thinktune.data.worker_init"])  # jieba loaded once, shared by forks
        else:
            ctx = mp.get_context("spawn")
        by_file: dict[str, DocResult] = {}
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            futs = [ex.submit(_work, b, opts) for b in batches]
            for f in futs:
                for r in f.result():
                    by_file[r.file] = r
                    if prog is not None:
                        prog.advance(task)
        return [by_file[rel] for _, rel in jobs]


def build_dataset(
    spec: DatasetBuildSpec, input_dir: Path, output_dir: Path, *, progress: bool = True, tokenizer: Any = None
) -> dict:
    """Build the dataset described by ``spec`` from ``input_dir`` into ``output_dir``; returns report.json's dict.

    ``tokenizer``: any HF tokenizer (or callable returning ``input_ids``) for the length check; default
    ``load_tokenizer(spec.validation.tokenizer)``. Raises DatasetBuildError when nothing usable is produced.
    """
    t0 = time.perf_counter()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise DatasetBuildError(f"input directory {input_dir} does not exist (spec.source / --input)")
    docs = find_documents(input_dir, spec.include, spec.exclude, skip_dir=output_dir)
    if not docs:
        raise DatasetBuildError(
            f"no markdown documents in {input_dir} matching include={spec.include} exclude={spec.exclude}"
        )
    opts = DocOptions(
        opencc=spec.chinese.opencc,
        punctuation=spec.chinese.normalize_punctuation,
        glossary=spec.chinese.glossary,
        nested=spec.thinking.nested,
        generate=spec.thinking.generate,
        min_quality=spec.thinking.min_quality,
        system_prompt=spec.system_prompt,
        # ~1 token per Chinese character at most: half the cutoff leaves room for question and thinking
        max_answer_chars=max(256, spec.validation.cutoff_len // 2),
    )
    workers = spec.workers or os.cpu_count() or 1
    results = process_documents(docs, input_dir, opts, workers, progress)
    t_docs = time.perf_counter()

    samples: list[Sample] = []
    rejects: list[Reject] = []
    errors: list[str] = []
    warnings: list[str] = []
    for r in results:
        samples.extend(r.samples)
        rejects.extend(r.rejects)
        errors.extend(r.errors)
        warnings.extend(r.warnings)

    authored = samples  # every sample the documents gave, before dedup: whose questions the author asked
    # de-duplication first (before splitting, and before the costly steps: teacher generation, token count):
    # source thinking wins over generated, then document order. Keys are the answers (dedup_text), not the
    # reasoning.
    order = sorted(range(len(samples)), key=lambda i: (samples[i].thinking_method != "source", i))
    ordered = [samples[i] for i in order]
    duplicates = 0
    if spec.dedup.enabled:
        texts = [dedup_text(s.question, s.answer) for s in ordered]
        dd = deduplicate(texts, spec.dedup.near_duplicate_threshold)
        for i, j, kind, sim in dd.dropped:
            d, k = ordered[i], ordered[j]
            rejects.append(
                Reject(
                    d.source_file,
                    d.source_line,
                    f"{kind} duplicate of {k.source} (similarity {sim:.2f})",
                    kind="duplicate",
                    fix="remove the repeated text or rephrase it",
                    sample={"question": d.question[:200]},
                )
            )
        duplicates = len(dd.dropped)
        keep = set(dd.keep)
        unique = [s for i, s in enumerate(ordered) if i in keep]
    else:
        unique = ordered
    unique.sort(key=lambda s: (s.source_file, s.source_line, s.style))
    samples = unique
    # chunks the teacher may ask extra questions about: the section texts that survived dedup (even when
    # the teacher's own thinking for the section sample is rejected below, its text is still the author's)
    chunks = [s for s in samples if s.style == "section"]
    t_dedup = time.perf_counter()

    # teacher-model thinking (parent process: one model for all samples)
    teacher = None
    if spec.thinking.generate == "model" and any(
        s.thinking_method == "model" and not s.reasoning for s in samples
    ):
        teacher = make_teacher(spec.thinking.teacher_model or "", spec.thinking.teacher_model_name)
        rec = term_recognizer(spec.chinese.glossary)
        kept = []
        for s in samples:
            if s.thinking_method == "model" and not s.reasoning:
                try:
                    s.reasoning = teacher.reasoning(s.question, s.answer)
                except TeacherError as exc:
                    raise DatasetBuildError(str(exc)) from exc
                if not s.reasoning.strip():
                    rejects.append(
                        Reject(
                            s.source_file,
                            s.source_line,
                            "teacher model produced no reasoning",
                            fix="use a stronger teacher model or thinking.generate=template",
                            sample={"question": s.question[:200]},
                        )
                    )
                    continue
                a_terms = rec.terms(strip_code(s.answer))
                r_terms = rec.terms(strip_code(s.reasoning))
                s.terms = list(dict.fromkeys(list(s.terms) + list(r_terms)))
                q = assess_quality(
                    s.reasoning, s.answer, a_terms, r_terms, source=f"{s.question}\n\n{s.answer}"
                )
                s.quality = q.as_dict()
                gate = quality_gate(q, spec.thinking.min_quality)
                if gate:
                    rejects.append(
                        Reject(
                            s.source_file,
                            s.source_line,
                            f"generated thinking rejected by the quality gate: {gate}",
                            kind="thinking_quality",
                            fix="use a stronger teacher model, or write the reasoning in a <thinking> block",
                            sample={"question": s.question[:200], "reasoning": s.reasoning[:300]},
                        )
                    )
                    continue
            kept.append(s)
        samples = kept

    # extra questions per chunk, answered by the teacher and gated (teacher_questions.py)
    extra_stats = None
    if spec.thinking.extra_questions_per_chunk:
        teacher = teacher or make_teacher(spec.thinking.teacher_model or "", spec.thinking.teacher_model_name)
        try:
            extra, extra_rejects, extra_stats = extra_samples(
                teacher,
                chunks,
                authored,
                spec.thinking.extra_questions_per_chunk,
                term_recognizer(spec.chinese.glossary),
                spec.thinking.min_quality,
            )
        except TeacherError as exc:
            raise DatasetBuildError(str(exc)) from exc
        rejects.extend(extra_rejects)
        samples = sorted(samples + extra, key=lambda s: (s.source_file, s.source_line, s.style))

    # validation: structure + thinking format
    valid: list[Sample] = []
    for s in samples:
        probs = structural_problems(s.messages())
        if probs:
            for reason, fix in probs:
                rejects.append(
                    Reject(s.source_file, s.source_line, reason, fix=fix, sample={"messages": s.messages()})
                )
        else:
            valid.append(s)
    unique = valid
    t_struct = time.perf_counter()

    # token length with the real tokenizer, on the chat-rendered sample: too long -> rejected, never truncated
    tok_name = spec.validation.tokenizer if tokenizer is None else type(tokenizer).__name__
    t_tok0 = time.perf_counter()
    if tokenizer is None and unique:
        tokenizer = load_length_tokenizer(spec.validation.tokenizer)
    t_tok1 = time.perf_counter()
    lengths = token_lengths([render_chat(s.messages()) for s in unique], tokenizer) if unique else []
    cutoff = spec.validation.cutoff_len
    final: list[Sample] = []
    over = 0
    for s, n in zip(unique, lengths, strict=True):
        s.n_tokens = n
        if n > cutoff:
            over += 1
            rejects.append(
                Reject(
                    s.source_file,
                    s.source_line,
                    f"too long: {n} tokens > cutoffLen {cutoff} (rejected, not truncated)",
                    fix="split the section/answer into smaller questions or raise validation.cutoffLen",
                    sample={"question": s.question[:200], "tokens": n},
                )
            )
        else:
            final.append(s)
    t_valid = time.perf_counter()

    if not final:
        reasons = Counter(r.reason.split(":")[0] for r in rejects)
        top = (
            "; ".join(f"{r} ({n})" for r, n in reasons.most_common(5))
            or "no question/answer or section text found"
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(output_dir / "rejects.jsonl", [r.record() for r in rejects])
        raise DatasetBuildError(
            f"no usable samples from {len(docs)} documents in {input_dir}: {top}. "
            f"See {output_dir / 'rejects.jsonl'} for file:line details."
        )

    sp = group_split(
        [s.source_file for s in final],
        [s.type for s in final],
        [s.terms for s in final],
        (spec.split.train, spec.split.val, spec.split.test),
        spec.split.seed,
        spec.split.stratify_by,
    )
    warnings.extend(sp.warnings)
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for s, name in zip(final, sp.assignment, strict=True):
        by_split[name].append(s)
    for s in final:
        for w in s.warnings:
            warnings.append(f"{s.source}: {w}")

    # write
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_json(output_dir / f"{name}.json", [s.row() for s in by_split[name]])
    write_json(output_dir / "dataset_info.json", dataset_info(spec.dataset_name), indent=2)
    write_jsonl(output_dir / "rejects.jsonl", [r.record() for r in rejects])

    report = _report(
        spec,
        input_dir,
        output_dir,
        results,
        final,
        by_split,
        rejects,
        errors,
        warnings,
        duplicates,
        lengths=[s.n_tokens for s in final],
        over=over,
        tok_name=tok_name,
    )
    report["content_hash"] = content_hash(spec, input_dir, docs)
    if extra_stats is not None:
        report["teacher_questions"] = extra_stats.as_dict(kept=sum(1 for s in final if s.generated_question))
    report["split"] = {
        "by": "document" if sp.by_group else "sample",
        "fractions": {s: round(len(by_split[s]) / len(final), 4) for s in SPLITS},
        "documents": {s: len({x.source_file for x in by_split[s]}) for s in SPLITS},
    }
    report["leakage"] = leakage_report(
        {n: [Held(x.id, x.source_file, x.answer) for x in rows] for n, rows in by_split.items()}
    )
    report["timing"] = {
        "documents_s": round(t_docs - t0, 3),
        "dedup_s": round(t_dedup - t_docs, 3),
        "structure_s": round(t_struct - t_dedup, 3),
        "tokenizer_load_s": round(t_tok1 - t_tok0, 3),
        "token_length_s": round(t_valid - t_tok1, 3),
        "workers": workers,
    }
    images = plots(output_dir, report)
    report["plots"] = images
    report["timing"]["total_s"] = round(time.perf_counter() - t0, 3)
    report["token_lengths"].pop("values", None)
    (output_dir / "report.md").write_text(report_markdown(report, images), encoding="utf-8")
    write_json(output_dir / "report.json", report, indent=2)
    return report


def _report(
    spec: DatasetBuildSpec,
    input_dir: Path,
    output_dir: Path,
    results: list[DocResult],
    final: list[Sample],
    by_split: dict[str, list[Sample]],
    rejects: list[Reject],
    errors: list[str],
    warnings: list[str],
    duplicates: int,
    lengths: list[int],
    over: int,
    tok_name: str,
) -> dict:
    per_type: dict[str, dict[str, int]] = {}
    for t in SAMPLE_TYPES:
        row = {s: sum(1 for x in by_split[s] if x.type == t) for s in SPLITS}
        row["total"] = sum(row.values())
        per_type[t] = row
    per_style = dict(Counter(s.style for s in final))
    split_terms = {s: set(t for x in by_split[s] for t in x.terms) for s in SPLITS}
    all_terms = set().union(*split_terms.values())
    term_freq = Counter(t for x in final for t in set(x.terms))
    in_all = set.intersection(*split_terms.values()) if all(split_terms.values()) else set()
    common_missing = sorted(t for t, n in term_freq.items() if n >= 3 and t not in in_all)
    src = [s for s in final if s.thinking_method == "source"]
    gen = [s for s in final if s.generated_thinking]
    qs = [float(s.quality.get("score", 0.0)) for s in final if s.quality]
    sl = sorted(lengths)
    counts = DatasetCounts(
        documents=len(results),
        samples=len(final),
        train=len(by_split["train"]),
        val=len(by_split["val"]),
        test=len(by_split["test"]),
        rejects=len(rejects),
        duplicates=duplicates,
        generated_thinking=len(gen),
        warnings=len(warnings),
    )
    return {
        "dataset_name": spec.dataset_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "bytes": sum(r.n_bytes for r in results),
        "counts": counts.model_dump(),
        "splits": {s: f"{s}.json" for s in SPLITS},
        "per_type": per_type,
        "per_style": per_style,
        "term_coverage": {
            "terms_total": len(all_terms),
            "in_all_splits": len(in_all),
            "frequent_terms_missing_from_a_split": common_missing,
            "per_split": {
                s: {
                    "terms": len(split_terms[s]),
                    "coverage": round(len(split_terms[s]) / len(all_terms), 4) if all_terms else 0.0,
                }
                for s in SPLITS
            },
            "top_terms": term_freq.most_common(30),
        },
        "thinking": {
            "source": len(src),
            "blocks": sum(r.thinking_blocks for r in results),
            "max_depth": max((r.max_thinking_depth for r in results), default=0),
            "nested_samples": sum(1 for s in src if s.thinking_depth > 1),
            "multi_block_samples": sum(1 for s in src if s.thinking_blocks > 1),
            "generated": len(gen),
            "template": sum(1 for s in gen if s.thinking_method == "template"),
            "model": sum(1 for s in gen if s.thinking_method == "model"),
            "nested_mode": spec.thinking.nested,
            "min_quality": spec.thinking.min_quality,
            "quality_mean": round(sum(qs) / len(qs), 3) if qs else None,
            "quality_min": round(min(qs), 3) if qs else None,
            "below_min_quality": sum(1 for q in qs if q < spec.thinking.min_quality),
            # proxies of the gold-set figures (tests/unit/test_data_gold.py) for this build
            "author_share": round(len(src) / len(final), 4) if final else 0.0,
            "generated_share": round(len(gen) / len(final), 4) if final else 0.0,
            "restatement_mean": _mean(s.quality.get("restatement") for s in gen),
            "grounding_mean": _mean(s.quality.get("grounding") for s in gen),
            "rejected_by_quality_gate": sum(1 for r in rejects if r.kind == "thinking_quality"),
        },
        "generated_thinking": len(gen),
        "token_lengths": {
            "tokenizer": tok_name,
            "cutoff_len": spec.validation.cutoff_len,
            "min": sl[0] if sl else 0,
            "p50": _percentile(sl, 50),
            "p90": _percentile(sl, 90),
            "p99": _percentile(sl, 99),
            "max": sl[-1] if sl else 0,
            "over_cutoff": over,
            "values": sl,
        },
        "rejects_by_reason": dict(Counter(_reason_key(r.reason) for r in rejects)),
        "documents_with_errors": sorted(
            {r.source_file for r in rejects if r.kind in ("document", "thinking")}
        ),
        "warnings": warnings,
        "errors": errors,
    }


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 3) if vals else None


def _reason_key(reason: str) -> str:
    if reason.startswith("generated thinking rejected by the quality gate"):
        return "generated thinking rejected by the quality gate"
    if reason.startswith(REJECT_PREFIX):
        return ": ".join(reason.split(": ")[:2])
    if reason.startswith("too long"):
        return "too long for cutoffLen"
    if "duplicate of" in reason:
        return reason.split(" duplicate of")[0] + " duplicate"
    if "opened at line" in reason or "never closed" in reason:
        return (
            reason.split(" opened")[0] + " never closed"
            if "never closed" in reason
            else "misplaced </thinking>"
        )
    return reason[:80]
