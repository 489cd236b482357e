"""Real round trips on the tiny random Qwen3 (CPU): a LoRA adapter trained for a few steps with peft, merged,
quantized (rtn int8/int4), verified, carded; evaluation reports on the same model. Everything offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset  # noqa: E402
from thinktune.spec import EvaluationSpec, ModelExportStatus, VerifySpec  # noqa: E402
from thinktune.tiny_model import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.e2e

IDS = [151644, 872, 198, 100, 2000, 3000, 151645, 198, 151644, 77091, 198, 151667, 198, 5000]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    base = make_tiny_model(root / "base")
    adapter = make_tiny_adapter(base, root / "adapter")
    ds = write_tiny_dataset(root / "ds")
    return {"root": root, "base": base, "adapter": adapter, "ds": ds}


@pytest.fixture(scope="module")
def merged(work):
    from thinktune.export.merge import merge_adapter

    return merge_adapter(work["base"], work["adapter"], work["root"] / "merged", backend="peft")


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


def test_merge_equals_base_plus_adapter(work, merged):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(merged["path"])
    assert merged["backend"] == "peft" and merged["dtype"] == "float32"
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "Modelfile"} <= {
        p.name for p in out.iterdir()
    }
    ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(work["base"]), str(work["adapter"])
    ).eval()
    base = AutoModelForCausalLM.from_pretrained(work["base"]).eval()
    m = AutoModelForCausalLM.from_pretrained(out).eval()
    a, b, c = _logits(ref), _logits(m), _logits(base)
    assert (a - c).abs().max() > 1e-2, "the adapter should change the model"
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")  # official Thinking-2507 template kept


def test_rtn_int8_close_int4_further(work, merged):
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import load_rtn_model, quantize_rtn
    from thinktune.export.verify import verify_variants
    from transformers import AutoModelForCausalLM

    root = work["root"]
    variants = []
    for bits in (8, 4):
        info = quantize_rtn(merged["path"], root / f"rtn-int{bits}", bits=bits, group_size=32)
        assert info["quantized_modules"] == 2 * 7  # q,k,v,o,gate,up,down per layer; lm_head/embeddings stay
        cfg = json.loads((root / f"rtn-int{bits}" / "rtn_config.json").read_text())
        assert cfg["format"] == "thinktune-rtn" and cfg["bits"] == bits
        assert cfg["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
        variants.append({"name": f"rtn-int{bits}", "path": str(root / f"rtn-int{bits}")})
    ref = _logits(AutoModelForCausalLM.from_pretrained(merged["path"]).eval())
    err = {b: (_logits(load_rtn_model(root / f"rtn-int{b}")) - ref).abs().max().item() for b in (8, 4)}
    assert 0 < err[8] < err[4] / 4, err

    samples = load_samples(work["ds"] / "test.json")
    res = verify_variants(merged["path"], variants, samples, spec=VerifySpec(samples=4), max_new_tokens=8)
    v8, v4 = res["variants"]["rtn-int8"], res["variants"]["rtn-int4"]
    assert res["samples"] == 4 and res["merged"]["perplexity"] > 1
    assert abs(v8["perplexityIncrease"]) < 0.01
    assert abs(v8["perplexityIncrease"]) <= abs(v4["perplexityIncrease"])
    assert v8["top1Agreement"] > v4["top1Agreement"] and v8["top1Agreement"] > 0.97
    assert v8["charAccuracyVsMerged"] >= v4["charAccuracyVsMerged"]
    # a zero tolerance turns any degradation into a warning
    strict = verify_variants(
        merged["path"],
        variants[1:],
        samples[:2],
        spec=VerifySpec(samples=2, max_perplexity_increase=0.0),
        max_new_tokens=0,
    )
    v = strict["variants"]["rtn-int4"]
    if v["perplexityIncrease"] > 0:
        assert not v["verified"] and "maxPerplexityIncrease" in v["warnings"][0]


def _export_cr(tmp: Path, adapter: Path, base: Path, quantize: list[dict]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    doc = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "tiny-export"},
        "spec": {
            "adapter": {"path": str(adapter)},
            "baseModel": {"nameOrPath": os.path.relpath(base, tmp)},
            "quantize": quantize,
            "verify": {"samples": 3},
            "output": {"path": "out/export"},
        },
    }
    import yaml

    (tmp / "mex.yaml").write_text(yaml.safe_dump(doc))
    return tmp / "mex.yaml"


def test_export_pipeline_rtn_via_runner(work, merged):
    """`thinktune export -f mex.yaml` path: runner -> export_model; relative baseModel, dataset from the training
    report, LLaMA Factory merge tried first (falls back to peft where LLaMA Factory cannot import)."""
    from thinktune.resources import load_path
    from thinktune.runner import run_path

    cr = _export_cr(work["root"] / "cr", work["adapter"], work["base"], [{"method": "rtn", "bits": 8}])
    # the trainer's report.json records the dataset dir: the pipeline finds it there
    (work["adapter"] / "report.json").write_text(
        json.dumps({"dataset": {"dir": str(work["ds"])}, "train_loss": 1.23})
    )
    assert run_path(cr, only_kind="ModelExport", progress=False, force=True) == 0
    loaded = load_path(cr)[0]
    out = loaded.resolve(loaded.resource.spec.output.path)
    report = json.loads((out / "report.json").read_text())
    status = ModelExportStatus.model_validate(report["status"])
    assert ModelExportStatus.model_validate(json.loads((out / "status.local.json").read_text())) == status
    assert status.phase == "Succeeded", status.message
    assert [a.name for a in status.artifacts] == ["merged", "rtn-int8"]
    assert status.artifacts[1].verified is True and status.artifacts[1].perplexity > 1
    assert status.artifacts[0].size_bytes > 1e6
    assert report["dataset"]["foundVia"] == "training report.json"
    assert report["merge"]["backend"] in ("llamafactory", "peft")
    # whichever backend ran, the merged weights equal the peft merge
    from transformers import AutoModelForCausalLM

    a = _logits(AutoModelForCausalLM.from_pretrained(out / "merged").eval())
    b = _logits(AutoModelForCausalLM.from_pretrained(merged["path"]).eval())
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert {c.type for c in status.conditions} == {"Succeeded", "Verified"}
    assert (out / "report.md").is_file() and (out / "merged" / "Modelfile").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "base_model:" in card and "rtn-int8" in card and "vllm serve" in card and "enable_thinking" in card
    assert "tiny *random*" in card and "train_loss: 1.23" in card and "load_rtn_model" in card


def test_export_gptq_on_cpu_fails_clearly_but_keeps_the_rest(work, monkeypatch):
    from thinktune.errors import StageError
    from thinktune.export import quantize as Q
    from thinktune.export.pipeline import export_model
    from thinktune.resolve import ResolvedDataset, ResolvedExport
    from thinktune.resources import load_path

    monkeypatch.setattr(Q, "_cuda_available", lambda: False)
    cr = _export_cr(work["root"] / "cr2", work["adapter"], work["base"], [{"method": "gptq", "bits": 4}])
    loaded = load_path(cr)[0]
    out = loaded.resolve(loaded.resource.spec.output.path)
    export = ResolvedExport(
        resource=loaded.resource,
        adapter_dir=work["adapter"],
        base_model=str(work["base"]),
        dataset=ResolvedDataset.inspect(work["ds"]),
        dataset_source="test",
        output_dir=out,
    )
    with pytest.raises(StageError, match=r"gptq-int4: gptq quantization needs"):
        export_model(export, progress=False, merge_backend="peft")
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["phase"] == "Failed"
    assert (out / "merged" / "model.safetensors").is_file()
    gptq = report["status"]["artifacts"][1]
    assert gptq["name"] == "gptq-int4" and gptq["verified"] is False and gptq["warnings"]


def test_evaluate_model_reports(work):
    from thinktune.evaluate.run import evaluate_model

    out = work["root"] / "eval"
    spec = EvaluationSpec(max_samples=3, max_new_tokens=12, thresholds={"rougeL": 0.2, "termAccuracy": 0.5})
    report = evaluate_model(
        str(work["base"]),
        adapter_path=str(work["adapter"]),
        test_file=work["ds"] / "test.json",
        spec=spec,
        output_dir=out,
        progress=False,
    )
    assert report["samples"] == 3 and report["generation"]["prefill"] == "<think>\n"
    m = report["metrics"]
    assert set(m) >= {"answer", "thinking", "full", "thinkingCompliance", "perplexity"}
    assert m["perplexity"]["full"] > 1 and m["perplexity"]["thinking"] and m["perplexity"]["answer"]
    assert report["recommendations"] and not report["passed"]  # a random model fails the thresholds
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 3 and preds[0]["prediction"].startswith("<think>\n")
    assert (out / "eval_report.md").is_file() and (out / "eval_metrics.png").stat().st_size > 1000
    # the review sheet is built from predictions.jsonl
    from thinktune.evaluate.review import export_review_sheet

    sheet = export_review_sheet(out / "predictions.jsonl", out / "review.csv")
    assert len(sheet.read_text(encoding="utf-8-sig").splitlines()) >= 4


def test_evaluate_job_from_cr(work, tmp_path):
    import shutil

    import yaml
    from thinktune.runner import run_evaluate

    lora = tmp_path / "out" / "lora"
    shutil.copytree(work["adapter"], lora)
    doc = {
        "apiVersion": "thinktune.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j"},
        "spec": {
            "model": {"nameOrPath": str(work["base"])},
            "dataset": {"path": str(work["ds"])},
            "output": {"path": "out/lora"},
            "evaluation": {"maxSamples": 2, "maxNewTokens": 6},
        },
    }
    (tmp_path / "ftj.yaml").write_text(yaml.safe_dump(doc))
    assert run_evaluate(tmp_path / "ftj.yaml") == 0  # `thinktune evaluate -f ftj.yaml`
    report = json.loads((lora / "eval" / "eval_report.json").read_text())
    assert report["samples"] == 2 and report["adapter"] == str(lora) and report["model"] == str(work["base"])


def test_response_nll_matches_full_forward(work, merged):
    """score_responses keeps only the response logits; the numbers equal a full forward pass."""
    from thinktune.evaluate import inference
    from thinktune.evaluate import metrics as M
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged["path"])
    model = AutoModelForCausalLM.from_pretrained(merged["path"]).eval()
    samples = M.load_samples(work["ds"] / "test.json")[:2]
    for score, s in zip(inference.score_responses(model, tok, samples), samples, strict=True):
        ids, start, boundary, _ = inference.encode_sample(tok, s, 4096)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")[start - 1 :]
        assert score.tokens == len(nll) and score.tokens_thinking == boundary - start
        assert score.nll == pytest.approx(float(nll.sum()), rel=1e-4)
        assert score.argmax == logits[start - 1 :].argmax(-1).tolist()
