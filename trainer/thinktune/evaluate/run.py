"""Evaluate a (base + LoRA adapter) model on a test split: perplexity on the assistant turn, generations
with the Qwen3-Thinking prompt, BLEU / ROUGE-L / character / term / concept accuracy per part (answer, thinking,
full), thinking-format compliance, and recommendations where a metric is below ``spec.thresholds``.

With ``evaluation.baseSamples`` > 0 and an adapter, the base model (the same weights with the adapter switched
off) answers the first test questions too, for the side-by-side in the report and the blind A/B review.

Outputs in ``output_dir``: ``eval_report.json``, ``eval_report.md``, ``eval_report.html`` (rendered by
``thinktune.evaluate.report``; + ``eval_metrics.png``, ``eval_base_vs_finetuned.png``), ``predictions.jsonl`` (one
line per sample: id, question, reference, prediction, per-sample scores, and ``base`` with the base model's; the
input of the expert review, see ``thinktune.evaluate.review``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinktune.contract import PlanSummary
from thinktune.errors import StageError
from thinktune.evaluate.report import (
    CHART,
    CHART_BASE,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    pick_examples,
    write_base_chart,
    write_chart,
    write_reports,
)
from thinktune.resolve import ResolvedJob
from thinktune.spec import EvaluationSpec

PREDICTIONS = "predictions.jsonl"
__all__ = [
    "CHART",
    "PREDICTIONS",
    "REPORT_HTML",
    "REPORT_JSON",
    "REPORT_MD",
    "evaluate_job",
    "evaluate_model",
]

# Threshold keys (spec.thresholds) -> where the value sits in report["metrics"]. Plain keys are answer-part
# metrics; "thinking.X" / "full.X" pick another part. Perplexity thresholds are maxima ("maxPerplexity").
_HEADLINE = {
    "bleu": ("answer", "bleu"),
    "rougeL": ("answer", "rougeL"),
    "charAccuracy": ("answer", "charAccuracy"),
    "termAccuracy": ("answer", "termAccuracy"),
    "conceptAccuracy": ("answer", "conceptAccuracy"),
}


class EvaluationError(StageError):
    """The evaluation cannot run; the message says what to fix (a StageError, so runners print it cleanly)."""


# ------------------------------------------------------------------------------------------------------------
# Loading


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
):
    """(model, tokenizer). Tokenizer from the adapter dir when it has one (LLaMA Factory saves it there), else
    from the model. bf16 on CUDA, float32 on CPU unless ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    tok_src = (
        adapter_path
        if adapter_path and (Path(adapter_path) / "tokenizer_config.json").is_file()
        else model_path
    )
    from thinktune.progress import step

    try:
        with step(f"loading {Path(str(model_path)).name} for evaluation", quiet_below=2.0):
            tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
            model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch_dtype)
    except OSError as e:
        raise EvaluationError(
            f"cannot load model {model_path}: {e}. Pass a local model directory, or a hub id "
            "with network access (HF_HUB_OFFLINE unset)"
        ) from None
    if adapter_path:
        from peft import PeftModel

        if not (Path(adapter_path) / "adapter_config.json").is_file():
            raise EvaluationError(f"{adapter_path} is not a LoRA adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter_path))
    model.to(device)
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------------------------------------
# Recommendations


def _lookup(metrics: dict[str, Any], key: str) -> float | None:
    if key in _HEADLINE:
        part, name = _HEADLINE[key]
        return metrics.get(part, {}).get(name)
    if key == "thinkingCompliance":
        return metrics.get("thinkingCompliance")
    if "." in key:
        part, name = key.split(".", 1)
        if part == "perplexity":
            return metrics.get("perplexity", {}).get(name)
        return metrics.get(part, {}).get(name)
    return None


def recommendations(
    metrics: dict[str, Any],
    thresholds: dict[str, float],
    *,
    per_term: list[dict[str, Any]],
    generation: dict[str, Any],
    job: dict[str, Any] | None = None,
) -> tuple[list[dict], list[str]]:
    """(failed checks [{metric, value, threshold}], recommendations). ``job`` may carry the training settings
    (epochs, loraRank, learningRate, maxNewTokens, samples) to make the advice concrete."""
    job = job or {}
    failed: list[dict[str, Any]] = []
    unknown: list[str] = []
    for key, thr in thresholds.items():
        if key.startswith("maxPerplexity"):
            part = key.removeprefix("maxPerplexity").lower() or "full"
            value = metrics.get("perplexity", {}).get(part)
            if value is not None and value > thr:
                failed.append({"metric": key, "value": value, "threshold": thr, "direction": "max"})
            continue
        value = _lookup(metrics, key)
        if value is None:
            if key not in _HEADLINE and key != "thinkingCompliance" and "." not in key:
                unknown.append(key)
            continue
        if value < thr:
            failed.append({"metric": key, "value": value, "threshold": thr, "direction": "min"})
    recs: list[str] = []
    names = {f["metric"] for f in failed}
    epochs, rank = job.get("epochs"), job.get("loraRank")
    lr = job.get("learningRate")
    if names & {"rougeL", "bleu", "charAccuracy", "conceptAccuracy"} or any(
        n.startswith("maxPerplexity") for n in names
    ):
        more = (
            f"numTrainEpochs {epochs:g} -> {max(epochs + 1, epochs * 1.5):g}"
            if epochs
            else "more epochs (+50 %)"
        )
        recs.append(
            f"Train longer: {more}, as long as the validation loss still falls (check the training "
            "report's loss curve for a plateau first)."
        )
        rank_txt = f"lora.rank {rank} -> {rank * 2}" if rank else "a higher lora.rank (e.g. 16 -> 32)"
        recs.append(
            f"Give the adapter more capacity: {rank_txt} (alpha = 2 x rank), target all linear layers."
        )
        if lr and lr < 2e-4:
            recs.append(f"The learning rate {lr:g} is low for LoRA; try 1e-4 to 2e-4.")
    if "termAccuracy" in names or "answer.termAccuracy" in names:
        weak = [r for r in per_term if r["accuracy"] < 0.5][:10]
        if weak:
            listed = ", ".join(f"{r['term']} ({r['hits']}/{r['references']})" for r in weak)
            recs.append(
                f"Add training data for the weakest terms: {listed}. Documents that define and use these "
                "terms in the answer (not only in the reasoning) help most."
            )
        else:
            recs.append("Add more training samples whose answers use the glossary terms explicitly.")
    compliance = metrics.get("thinkingCompliance")
    if "thinkingCompliance" in names or (compliance is not None and compliance < 0.9):
        hit = generation.get("hitLimit", 0)
        n = generation.get("samples", 0) or 1
        if hit:
            recs.append(
                f"Check thinking generation: {hit}/{n} generations hit maxNewTokens "
                f"({generation.get('maxNewTokens')}) before '</think>' or the answer; raise "
                "evaluation.maxNewTokens (thinking traces are long) or shorten the reasoning in the data."
            )
        missing = generation.get("missingClose", 0) - hit
        if missing > 0:
            recs.append(
                f"Check thinking generation: {missing}/{n} generations stopped without '</think>' and an "
                "answer. Make sure every training sample has '<think>\\n...\\n</think>\\n\\n<answer>', that "
                "template is qwen3 and enableThinking is true."
            )
    if unknown:
        recs.append(
            f"Unknown threshold keys ignored: {', '.join(sorted(unknown))} (known: "
            f"{', '.join([*_HEADLINE, 'thinkingCompliance', 'maxPerplexity'])}, 'thinking.X', 'full.X')."
        )
    return failed, recs


# ------------------------------------------------------------------------------------------------------------
# Entry points


def evaluate_loaded(
    model,
    tokenizer,
    samples,
    *,
    spec: EvaluationSpec,
    terms=None,
    batch_size: int | None = None,
    max_length: int = 4096,
    progress=True,
) -> dict[str, Any]:
    """Metrics of an already loaded model (used by evaluate_model and by export verification)."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    matcher = _matcher(terms)
    bs = batch_size or _batch_size(model)
    with _progress(progress, len(samples) * 2, "evaluating") as tick:
        scores = inference.score_responses(
            model, tokenizer, samples, max_length=max_length, progress=lambda: tick(1)
        )
        gens = inference.generate(
            model,
            tokenizer,
            samples,
            max_new_tokens=spec.max_new_tokens,
            batch_size=bs,
            progress=tick,
            **_decoding(spec),
        )
    preds = [g["text"] for g in gens]
    per = [M.score_prediction(p, s.reference, matcher) for p, s in zip(preds, samples, strict=True)]
    metrics = M.aggregate_scores(per, preds, [s.reference for s in samples])
    metrics["perplexity"] = inference.perplexity(scores)
    _, prefill = inference.generation_prompt(tokenizer, samples[0].messages) if samples else ("", "")
    generation = {
        "decoding": spec.decoding,
        **({"seed": spec.seed, **inference.sampling_settings(model)} if spec.decoding == "sampling" else {}),
        "maxNewTokens": spec.max_new_tokens,
        "samples": len(samples),
        "prefill": prefill,
        "hitLimit": sum(1 for g in gens if g["hit_limit"]),
        "missingClose": sum(1 for p in preds if M.THINK_CLOSE not in p),
        "meanNewTokens": sum(g["new_tokens"] for g in gens) / max(1, len(gens)),
    }
    return {
        "metrics": metrics,
        "generation": generation,
        "perSample": per,
        "predictions": gens,
        "responseScores": scores,
        "perTerm": M.per_term_table(per),
    }


def _decoding(spec: EvaluationSpec) -> dict[str, Any]:
    return {"sampling": spec.decoding == "sampling", "seed": spec.seed}


def _matcher(terms):
    from thinktune.data.glossary import term_aliases
    from thinktune.evaluate import metrics as M

    return M.TermMatcher(terms if terms is not None else term_aliases())


def _batch_size(model) -> int:
    return 8 if next(model.parameters()).device.type == "cuda" else 2


def base_comparison(
    model,
    tokenizer,
    samples,
    finetuned: dict[str, Any],
    *,
    spec: EvaluationSpec,
    terms=None,
    max_length=4096,
    progress=True,
) -> dict[str, Any] | None:
    """The base model on the first ``spec.base_samples`` samples: the adapter of the loaded PeftModel switched
    off (no second copy of the weights), same prompt, same decoding (and seed). None when there is no adapter or
    baseSamples is 0. ``finetuned``: evaluate_loaded's result, cut to the same samples for the comparison."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    n = min(spec.base_samples, len(samples))
    if n == 0 or not hasattr(model, "disable_adapter"):
        return None
    subset = samples[:n]
    with model.disable_adapter(), _progress(progress, 2 * n, "base model") as tick:
        scores = inference.score_responses(
            model, tokenizer, subset, max_length=max_length, progress=lambda: tick(1)
        )
        gens = inference.generate(
            model,
            tokenizer,
            subset,
            max_new_tokens=spec.max_new_tokens,
            batch_size=_batch_size(model),
            progress=tick,
            **_decoding(spec),
        )
    matcher = _matcher(terms)
    refs = [s.reference for s in subset]
    base_preds = [g["text"] for g in gens]
    per = [M.score_prediction(p, r, matcher) for p, r in zip(base_preds, refs, strict=True)]
    base_metrics = M.aggregate_scores(per, base_preds, refs)
    base_metrics["perplexity"] = inference.perplexity(scores)
    ft_preds = [g["text"] for g in finetuned["predictions"][:n]]
    ft_metrics = M.aggregate_scores(finetuned["perSample"][:n], ft_preds, refs)
    ft_metrics["perplexity"] = inference.perplexity(finetuned["responseScores"][:n])
    return {
        "samples": n,
        "base": base_metrics,
        "finetuned": ft_metrics,
        "baseHitLimit": sum(1 for g in gens if g["hit_limit"]),
        "finetunedHitLimit": sum(1 for g in finetuned["predictions"][:n] if g["hit_limit"]),
        "generations": gens,
        "perSample": per,
    }


def _generation_record(gen: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    from thinktune.evaluate import metrics as M

    think, ans, _ = M.split_thinking(gen["text"])
    return {
        "prediction": gen["text"],
        "predictionThinking": think,
        "predictionAnswer": ans,
        "newTokens": gen["new_tokens"],
        "hitLimit": gen["hit_limit"],
        "scores": scores,
    }


def prediction_records(
    samples, generations: list[dict[str, Any]], scores: list[dict[str, Any]], base: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The lines of predictions.jsonl: per sample id, question, messages, reference, the fine-tuned model's
    generation and scores, and ``base`` (the same fields) for the samples the base model answered. ``generations``
    as inference.generate returns them (text, new_tokens, hit_limit)."""
    records = []
    for i, (s, g, sc) in enumerate(zip(samples, generations, scores, strict=True)):
        rec = {"id": s.id, "question": s.question, "messages": s.messages, "reference": s.reference}
        rec |= _generation_record(g, sc)
        if base and i < base["samples"]:
            rec["base"] = _generation_record(base["generations"][i], base["perSample"][i])
        records.append(rec)
    return records


def write_predictions(records: list[dict[str, Any]], path: Path) -> Path:
    """predictions.jsonl: one record of :func:`prediction_records` per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


class _progress:
    """A rich progress bar when asked for; a no-op counter otherwise."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self._p = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress

            self._p = Progress(transient=True)
            self._p.start()
            task = self._p.add_task(self.label, total=self.total)
            return lambda n=1: self._p.advance(task, n)
        return lambda n=1: None

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()


def evaluate_model(
    model_path: str,
    *,
    adapter_path: str | None,
    test_file: Path,
    spec: EvaluationSpec,
    output_dir: Path,
    terms: list[str] | None = None,
    progress: bool = True,
    job: dict[str, Any] | None = None,
    max_length: int = 4096,
) -> dict[str, Any]:
    """Evaluate ``model_path`` (+ ``adapter_path``) on ``test_file``; write the reports into ``output_dir`` and
    return the report dict (``metrics``, ``failedChecks``, ``recommendations``, paths, ...)."""
    from thinktune.evaluate import metrics as M

    started = time.monotonic()
    test_file = Path(test_file)
    if not test_file.is_file():
        raise EvaluationError(
            f"test split {test_file} does not exist; build the dataset first "
            "(thinktune dataset build) or point spec.dataset at a directory with test.json"
        )
    samples = M.load_samples(test_file, limit=spec.max_samples)
    if not samples:
        raise EvaluationError(f"{test_file} has no samples with an assistant turn to evaluate")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_model(model_path, adapter_path)
    res = evaluate_loaded(
        model, tokenizer, samples, spec=spec, terms=terms, progress=progress, max_length=max_length
    )
    base = base_comparison(
        model, tokenizer, samples, res, spec=spec, terms=terms, max_length=max_length, progress=progress
    )
    metrics = res["metrics"]
    failed, recs = recommendations(
        metrics, spec.thresholds, per_term=res["perTerm"], generation=res["generation"], job=job
    )
    records = prediction_records(samples, res["predictions"], res["perSample"], base)
    write_predictions(records, output_dir / PREDICTIONS)
    chart = write_chart(metrics, output_dir / CHART)
    comparison = None
    if base:
        comparison = {k: v for k, v in base.items() if k not in ("generations", "perSample")}
        base_chart = write_base_chart(comparison, output_dir / CHART_BASE)
        comparison["chart"] = str(base_chart) if base_chart else None
    report = {
        "kind": "EvaluationReport",
        "model": str(model_path),
        "adapter": str(adapter_path) if adapter_path else None,
        "testFile": str(test_file),
        "samples": len(samples),
        "metrics": metrics,
        "thresholds": dict(spec.thresholds),
        "passed": not failed,
        "failedChecks": failed,
        "recommendations": recs,
        "generation": res["generation"],
        "perTerm": res["perTerm"],
        "predictions": str(output_dir / PREDICTIONS),
        "chart": str(chart) if chart else None,
        "baseComparison": comparison,
        "examples": pick_examples(records),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.monotonic() - started,
    }
    report["headline"] = headline(report)
    write_reports(report, output_dir)
    return report


def headline(report: dict[str, Any]) -> dict[str, float]:
    """Flat camelCase numbers for a CR status (FineTuneJobStatus.metrics)."""
    m = report["metrics"]
    out = {
        "perplexity": m.get("perplexity", {}).get("full"),
        "bleu": m["answer"].get("bleu"),
        "rougeL": m["answer"].get("rougeL"),
        "charAccuracy": m["answer"].get("charAccuracy"),
        "termAccuracy": m["answer"].get("termAccuracy"),
        "conceptAccuracy": m["answer"].get("conceptAccuracy"),
        "thinkingRougeL": m["thinking"].get("rougeL"),
        "thinkingCompliance": m.get("thinkingCompliance"),
    }
    return {k: float(v) for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------------------------------------
# `thinktune evaluate -f ftj.yaml`


def evaluate_job(
    job: ResolvedJob, *, plan: PlanSummary | None = None, progress: bool = True
) -> dict[str, Any]:
    """``thinktune evaluate -f ftj.yaml`` and evaluation after training: the job's adapter on its dataset's test
    split; reports go to ``<job output>/eval/``. ``plan``: the planner's decisions when training just ran (the
    LoRA rank it chose makes the advice concrete). Prints a summary; returns the report."""
    from rich.console import Console

    console = Console(stderr=True)
    spec = job.resource.spec
    adapter = job.adapter_path
    if adapter is None:
        raise EvaluationError(
            f"FineTuneJob/{job.name}: no adapter (adapter_config.json) under {job.output_dir}; train it first "
            "(thinktune train -f FILE)"
        )
    test = job.dataset.split("test")
    if test is None:
        raise EvaluationError(
            f"no test split (test.json) in {job.dataset.dir}; build the dataset first "
            "(thinktune dataset build / thinktune run)"
        )
    training = {
        "epochs": spec.training.num_train_epochs,
        "loraRank": spec.finetuning.lora.rank or (plan.lora_rank if plan else None),
        "learningRate": spec.training.learning_rate or (plan.learning_rate if plan else None),
    }
    out = job.output_dir / "eval"
    report = evaluate_model(
        job.model,
        adapter_path=str(adapter),
        test_file=test,
        spec=job.evaluation,
        output_dir=out,
        progress=progress,
        job=training,
        max_length=spec.training.cutoff_len,
    )
    h = headline(report)
    console.print(
        f"[green]evaluation[/] FineTuneJob/{job.name}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in h.items())
        + f"; report: {out / REPORT_MD}"
    )
    for r in report["recommendations"]:
        console.print(f"[yellow]recommendation:[/] {r}")
    return report
