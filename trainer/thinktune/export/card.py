"""README.md model card for an export directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


def _size(n: int | None) -> str:
    if not n:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _scalars(d: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [
        (k, d[k]) for k in keys if isinstance(d.get(k), (int, float, str)) and not isinstance(d.get(k), bool)
    ]


QUANTIZED = ("int8", "int4", "gptq")


def _variant_words(a: dict[str, Any]) -> str:
    info = a.get("info") or {}
    how = "calibrated (AutoRound)" if a.get("method") == "gptq" else "round-to-nearest"
    fmt = "GPTQ format" if info.get("format") == "gptq" else "compressed-tensors"
    return f"{a.get('bits')}-bit weights, group {a.get('group_size')}, {how}, {fmt}"


def _transformers_load(a: dict[str, Any]) -> str:
    """How transformers loads the variant, without thinktune."""
    if (a.get("info") or {}).get("format") == "gptq":
        return (
            "`from_pretrained` with optimum + gptqmodel installed, or with auto-round installed: "
            "`AutoModelForCausalLM.from_pretrained(path, quantization_config=AutoRoundConfig(), "
            'device_map="auto")` (`from transformers import AutoRoundConfig`).'
        )
    return (
        "the same `from_pretrained(path)` as above with `pip install compressed-tensors` (on CPU the weights are "
        "decompressed on load)."
    )


def render_model_card(info: dict[str, Any]) -> str:
    """Markdown of the card. ``info`` keys: name, base_model, adapter, dataset (dir, counts), training (the
    FineTuneJob report, optional), evaluation (eval_report.json, optional), artifacts (list of ExportArtifact-like
    dicts + "method"/"bits"/"verification"), verify (VerifySpec dict), tiny (bool), merge_backend."""
    name = info.get("name", "model")
    base = info.get("base_model", "?")
    arts = info.get("artifacts", [])
    merged = next((a for a in arts if a["name"] == "merged"), None)
    lines = [
        "---",
        "language:",
        "- zh",
        f"base_model: {base}",
        "library_name: transformers",
        "tags:",
        "- qwen3",
        "- thinking",
        "- lora",
        "- cryptography",
        "- thinktune",
        "---",
        "",
        f"# {name}",
        "",
    ]
    if info.get("tiny"):
        lines += [
            "> **Test artifact.** The base is a tiny *random* Qwen3 made by `thinktune make-tiny-model`; its "
            "outputs are meaningless. Only the pipeline around it is real.",
            "",
        ]
    lines += [
        f"A LoRA fine-tune of **{base}** on Chinese cryptography documents, trained with thinktune (LLaMA "
        "Factory, template `qwen3`, `enable_thinking: true`). The assistant turn keeps Qwen3's reasoning: "
        "`<think>\\n…\\n</think>\\n\\n<answer>`.",
        "",
    ]
    ds = info.get("dataset") or {}
    lines += ["## Data", ""]
    if ds.get("dir"):
        lines.append(f"- dataset: `{ds['dir']}`")
        counts = ds.get("counts") or {}
        if counts:
            lines.append(
                "- samples: " + ", ".join(f"{k} {v}" for k, v in counts.items() if isinstance(v, int))
            )
    else:
        lines.append("- dataset: not recorded")
    lines.append("")
    tr = info.get("training") or {}
    lines += ["## Training", ""]
    if tr:
        for k, v in _scalars(
            tr,
            (
                "method",
                "strategy",
                "epochs",
                "num_train_epochs",
                "steps",
                "global_step",
                "train_loss",
                "eval_loss",
                "learning_rate",
                "lora_rank",
                "loraRank",
                "train_runtime",
                "seconds",
            ),
        ):
            lines.append(f"- {k}: {_f(v, '.4g')}")
        for k in ("plan", "metrics"):
            if isinstance(tr.get(k), dict):
                lines.append(
                    f"- {k}: "
                    + ", ".join(
                        f"{a}={_f(b, '.4g')}" for a, b in tr[k].items() if isinstance(b, (int, float, str))
                    )
                )
    else:
        lines.append("- no training report found next to the adapter")
    lines += [
        f"- adapter: `{info.get('adapter', '?')}`"
        + (f" (merged with {info['merge_backend']})" if info.get("merge_backend") else ""),
        "",
    ]
    ev = info.get("evaluation")
    if ev and ev.get("metrics"):
        m = ev["metrics"]
        lines += ["## Evaluation (test split)", "", "| metric | answer | thinking |", "|---|---|---|"]
        for k, label in (
            ("bleu", "BLEU (zh)"),
            ("rougeL", "ROUGE-L (jieba)"),
            ("charAccuracy", "char accuracy"),
            ("termAccuracy", "term accuracy"),
            ("conceptAccuracy", "concept accuracy"),
        ):
            lines.append(
                f"| {label} | {_f(m.get('answer', {}).get(k))} | {_f(m.get('thinking', {}).get(k))} |"
            )
        lines += [
            "",
            f"Perplexity (assistant turn): {_f(m.get('perplexity', {}).get('full'))}; thinking-format "
            f"compliance: {_f(m.get('thinkingCompliance'), '.2f')} ({ev.get('samples')} samples).",
            "",
        ]
    lines += [
        "## Files",
        "",
        "| variant | path | size | perplexity | Δ perplexity | top-1 agreement | "
        "char acc vs merged | term acc | verified |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arts:
        v = a.get("verification") or {}
        lines.append(
            f"| {a['name']} | `{Path(a['path']).name}/` | {_size(a.get('size_bytes'))} | "
            f"{_f(a.get('perplexity'))} | "
            f"{'–' if v.get('perplexityIncrease') is None else format(v['perplexityIncrease'], '+.2%')} | "
            f"{_f(v.get('top1Agreement'), '.1%') if v.get('top1Agreement') is not None else '–'} | "
            f"{_f(v.get('charAccuracyVsMerged'))} | {_f(a.get('term_accuracy'))} | "
            f"{'–' if a.get('verified') is None else ('yes' if a['verified'] else 'no')} |"
        )
    warn = [(a["name"], w) for a in arts for w in a.get("warnings", [])]
    if warn:
        lines += ["", "**Warnings**", ""] + [f"- {n}: {w}" for n, w in warn]
    vs = info.get("verify") or {}
    if vs:
        lines += [
            "",
            f"Verification compares each variant with the merged model on {vs.get('samples')} test samples "
            f"(thresholds: perplexity +{vs.get('max_perplexity_increase', 0):.0%}, term accuracy drop "
            f"{vs.get('max_term_accuracy_drop', 0):.2f}). Top-1 agreement is teacher-forced on the "
            "reference answers; char accuracy compares greedy generations (1 = identical).",
        ]
    path = "./merged" if merged else "./adapter"
    quantized = [a for a in arts if a.get("method") in QUANTIZED and not a.get("failed")]
    lines += [
        "",
        "## Usage",
        "",
        "### transformers",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'path = "{path}"',
        "tok = AutoTokenizer.from_pretrained(path)",
        'model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", device_map="auto")',
        'messages = [{"role": "user", "content": "SM2 和 RSA 有什么区别？"}]',
        "# The chat template ends the prompt with '<think>\\n': the model's output holds only '</think>'.",
        "text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
        'inputs = tok(text, return_tensors="pt").to(model.device)',
        "out = model.generate(**inputs, max_new_tokens=4096, do_sample=True, temperature=0.6, top_p=0.95, "
        "top_k=20)",
        "generated = tok.decode(out[0][inputs.input_ids.shape[1]:], skip_special_tokens=True)",
        'thinking, _, answer = generated.rpartition("</think>")',
        "print(answer.strip())",
        "```",
        "",
    ]
    for a in quantized:
        lines += [f"`./{Path(a['path']).name}` ({_variant_words(a)}): {_transformers_load(a)}", ""]
    lines += [
        "### vLLM",
        "",
        "```bash",
        *[
            f"vllm serve {p} --reasoning-parser deepseek_r1 --max-model-len 32768"
            for p in [path] + [f"./{Path(a['path']).name}" for a in quantized]
        ],
        "```",
        "",
        "The `deepseek_r1` reasoning parser splits `reasoning_content` from `content` for outputs that contain "
        "only `</think>` (Qwen's recommendation for Thinking-2507). vLLM reads the quantization from each "
        "variant's `config.json` (compressed-tensors or GPTQ, weight-only integer kernels); every variant "
        "directory holds the tokenizer and the chat template.",
    ]
    lines += [
        "",
        "### `enable_thinking`",
        "",
        "Thinking-2507 always reasons: its chat template pre-fills `<think>` and has no `enable_thinking` "
        "switch. With a hybrid Qwen3 base whose template has one, keep `enable_thinking=True` (the default): "
        "the model was trained with reasoning on (LLaMA Factory `enable_thinking: true`), and merging does "
        "not bake a non-thinking mode into the template (LLaMA Factory issue #9765). Give generation enough "
        "tokens (thousands) or the answer after `</think>` is cut off; history turns lose their reasoning "
        "in the template, as in training with `mask_history`.",
        "",
        "## Limitations",
        "",
        "- Domain-specific: trained on a small Chinese cryptography corpus; outside it expect base-model "
        "behaviour or worse.",
        "- Reasoning text was partly generated from templates during dataset building; it may be formulaic.",
        "- Not a security authority: verify algorithm parameters and standards (GB/T, GM/T) against primary "
        "sources.",
        "- Quantized variants lose accuracy; see the verification table (INT4 more than INT8).",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(out_dir: str | Path, info: dict[str, Any]) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_model_card(info), encoding="utf-8")
    return path
