"""Evaluate a (base + LoRA adapter) model on a test split: perplexity on the assistant turn, greedy generations
with the Qwen3-Thinking prompt, BLEU / ROUGE-L / character / term / concept accuracy per part (answer, thinking,
full), thinking-format compliance, and recommendations where a metric is below ``spec.thresholds``.

Outputs in ``output_dir``: ``eval_report.json``, ``eval_report.md`` (+ ``eval_metrics.png``),
``predictions.jsonl`` (one line per sample: id, question, reference, prediction, per-sample scores; the input of
the expert review sheet, see ``thinktune.evaluate.review``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinktune.contract import PlanSummary
from thinktune.errors import StageError
from thinktune.resolve import ResolvedJob
from thinktune.spec import EvaluationSpec

REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
PREDICTIONS = "predictions.jsonl"
CHART = "eval_metrics.png"

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
    try:
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
# Reports


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_chart(metrics: dict[str, Any], path: Path) -> Path | None:
    """Grouped bar chart of the 0..1 metrics per part (BLEU scaled to 0..1)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = ["bleu", "rougeL", "charAccuracy", "termAccuracy", "conceptAccuracy"]
    parts = ["answer", "thinking", "full"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.25
    for i, part in enumerate(parts):
        vals = []
        for n in names:
            v = metrics.get(part, {}).get(n)
            vals.append(0.0 if v is None else (v / 100 if n == "bleu" else v))
        ax.bar([x + i * width for x in range(len(names))], vals, width, label=part)
    ax.set_xticks(
        [x + width for x in range(len(names))], ["BLEU/100", "ROUGE-L", "char acc", "term acc", "concept acc"]
    )
    ax.set_ylim(0, 1)
    ax.set_title(f"Evaluation (thinking compliance {_fmt(metrics.get('thinkingCompliance'), 2)})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_markdown(report: dict[str, Any], path: Path) -> None:
    m = report["metrics"]
    ppl = m.get("perplexity", {})
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{report['model']}`"
        + (f" + adapter `{report['adapter']}`" if report.get("adapter") else ""),
        f"- test file: `{report['testFile']}` ({report['samples']} samples)",
        f"- generation: greedy, maxNewTokens {report['generation']['maxNewTokens']}, prompt "
        f"{'pre-fills <think>' if report['generation']['prefill'] else 'without pre-fill'}",
        f"- finished: {report['finished']} ({report['seconds']:.0f} s)",
        "",
        "## Perplexity (assistant turn only)",
        "",
        "| full | thinking | answer | tokens |",
        "|---|---|---|---|",
        f"| {_fmt(ppl.get('full'))} | {_fmt(ppl.get('thinking'))} | {_fmt(ppl.get('answer'))} | {ppl.get('tokens')} |",
        "",
        "## Generation metrics",
        "",
        "| part | BLEU | corpus BLEU | ROUGE-L | char acc | term acc | concept acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for part in ("answer", "thinking", "full"):
        p = m.get(part, {})
        lines.append(
            f"| {part} | {_fmt(p.get('bleu'), 1)} | {_fmt(p.get('corpusBleu'), 1)} | {_fmt(p.get('rougeL'))} "
            f"| {_fmt(p.get('charAccuracy'))} | {_fmt(p.get('termAccuracy'))} | "
            f"{_fmt(p.get('conceptAccuracy'))} |"
        )
    lines += [
        "",
        f"Thinking-format compliance (`</think>` + non-empty answer): "
        f"**{_fmt(m.get('thinkingCompliance'), 2)}**; generations that hit the token limit: "
        f"{report['generation']['hitLimit']}",
        "",
    ]
    if report.get("chart"):
        lines += [f"![metrics]({Path(report['chart']).name})", ""]
    if report.get("failedChecks"):
        lines += ["## Below threshold", "", "| metric | value | threshold |", "|---|---|---|"]
        lines += [
            f"| {f['metric']} | {_fmt(f['value'])} | {'≤' if f['direction'] == 'max' else '≥'} "
            f"{_fmt(f['threshold'])} |"
            for f in report["failedChecks"]
        ]
        lines.append("")
    if report.get("recommendations"):
        lines += ["## Recommendations", ""] + [f"- {r}" for r in report["recommendations"]] + [""]
    if report.get("perTerm"):
        lines += [
            "## Terms (answer part, weakest first)",
            "",
            "| term | in references | in predictions | accuracy |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['term']} | {r['references']} | {r['hits']} | {_fmt(r['accuracy'], 2)} |"
            for r in report["perTerm"][:30]
        ]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


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
    from thinktune.data.glossary import term_aliases
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M

    matcher = M.TermMatcher(terms if terms is not None else term_aliases())
    device = next(model.parameters()).device
    bs = batch_size or (8 if device.type == "cuda" else 2)
    with _progress(progress, len(samples) * 2, "evaluating") as tick:
        scores = inference.score_responses(
            model, tokenizer, samples, max_length=max_length, progress=lambda: tick(1)
        )
        gens = inference.generate(
            model, tokenizer, samples, max_new_tokens=spec.max_new_tokens, batch_size=bs, progress=tick
        )
    preds = [g["text"] for g in gens]
    per = [M.score_prediction(p, s.reference, matcher) for p, s in zip(preds, samples, strict=True)]
    metrics = M.aggregate_scores(per, preds, [s.reference for s in samples])
    metrics["perplexity"] = inference.perplexity(scores)
    _, prefill = inference.generation_prompt(tokenizer, samples[0].messages) if samples else ("", "")
    generation = {
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
    metrics = res["metrics"]
    failed, recs = recommendations(
        metrics, spec.thresholds, per_term=res["perTerm"], generation=res["generation"], job=job
    )
    with (output_dir / PREDICTIONS).open("w", encoding="utf-8") as f:
        for s, g, sc in zip(samples, res["predictions"], res["perSample"], strict=True):
            think, ans, _ = M.split_thinking(g["text"])
            f.write(
                json.dumps(
                    {
                        "id": s.id,
                        "question": s.question,
                        "messages": s.messages,
                        "reference": s.reference,
                        "prediction": g["text"],
                        "predictionThinking": think,
                        "predictionAnswer": ans,
                        "newTokens": g["new_tokens"],
                        "hitLimit": g["hit_limit"],
                        "scores": sc,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    chart = write_chart(metrics, output_dir / CHART)
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
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.monotonic() - started,
    }
    report["headline"] = headline(report)
    (output_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    write_markdown(report, output_dir / REPORT_MD)
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
        "learningRate": spec.training.learning_rate,
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
