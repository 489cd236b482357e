"""Real round trips on the tiny random Qwen3 (CPU): a LoRA adapter trained for a few steps with peft, merged,
quantized through auto-round (int8, int4, calibrated gptq 4-bit; a 2-bit variant broken on purpose), loaded by
plain transformers in a process that never imports thinktune, verified, carded; evaluation reports on the same
model. Everything offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from thinktune.export.testing import make_tiny_adapter, write_tiny_dataset  # noqa: E402
from thinktune.spec import EvaluationSpec, ModelExportStatus, VerifySpec  # noqa: E402
from thinktune.tiny_model import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
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


PLAIN_LOAD = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, ids = sys.argv[1], json.loads(sys.argv[2])
kw = {}
if json.load(open(path + "/config.json"))["quantization_config"]["quant_method"] == "gptq":
    from transformers import AutoRoundConfig  # GPTQ format without optimum/gptqmodel: auto-round's kernels
    kw["quantization_config"] = AutoRoundConfig(backend="auto")
model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", **kw).eval()
tok = AutoTokenizer.from_pretrained(path)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
prompt = tok.apply_chat_template([{"role": "user", "content": "SM2是什么？"}], tokenize=False, add_generation_prompt=True)
print(json.dumps({"argmax": logits.argmax(-1).tolist(), "prompt": prompt,
                  "thinktune": any(m.split(".")[0] == "thinktune" for m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def variants(work, merged):
    """int8 / int4 (compressed-tensors, round-to-nearest), gptq 4-bit calibrated on the train split (GPTQ format)
    and a 2-bit calibrated variant that is broken on purpose."""
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.quantize import calibration_batches, quantize
    from thinktune.spec import QuantizeSpec
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged["path"])
    calib, stats = calibration_batches(load_samples(work["ds"] / "train.json"), tok, 8, 64)
    assert stats["chineseChars"] > 300
    specs = {
        "int8": (QuantizeSpec(method="int8"), None),
        "int4": (QuantizeSpec(method="int4"), None),
        "gptq-int4-gptq-format": (QuantizeSpec(method="gptq", iterations=5, format="gptq"), None),
        "gptq-int2": (QuantizeSpec(method="gptq", iterations=2, group_size=-1), 2),
    }
    out = {}
    for name, (q, bits) in specs.items():
        q_calib = calib if q.method == "gptq" else None
        out[name] = quantize(q, merged["path"], work["root"] / name, calibration=q_calib, bits=bits)
    return out


def test_variants_are_standard_checkpoints_plain_transformers_loads(work, merged, variants):
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    ref = _logits(AutoModelForCausalLM.from_pretrained(merged["path"]).eval()).argmax(-1).tolist()
    merged_files = {p.name: p.read_bytes() for p in Path(merged["path"]).glob("*token*")}
    for name in ("int8", "int4", "gptq-int4-gptq-format"):
        info, d = variants[name], Path(variants[name]["path"])
        assert (
            info["group_size"] == 64 and "128 requested, 64 used" in info["notes"][0]
        )  # tiny dims are 64/128
        cfg = json.loads((d / "config.json").read_text())["quantization_config"]
        assert cfg["quant_method"] == ("gptq" if "gptq-format" in name else "compressed-tensors"), cfg
        assert {
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
        } <= {p.name for p in d.iterdir()}
        assert {k: (d / k).read_bytes() for k in merged_files} == merged_files  # the trained tokenizer, as is
        assert (d / "model.safetensors").stat().st_size < (
            Path(merged["path"]) / "model.safetensors"
        ).stat().st_size
        proc = subprocess.run(
            [sys.executable, "-c", PLAIN_LOAD, str(d), json.dumps(IDS)],
            capture_output=True,
            text=True,
            env={**os.environ, "AR_LOG_LEVEL": "WARNING"},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["thinktune"] is False
        assert got["prompt"].endswith("<|im_start|>assistant\n<think>\n")  # Qwen3-Thinking template
        agree = sum(a == b for a, b in zip(got["argmax"], ref, strict=True)) / len(ref)
        assert agree >= (1.0 if name == "int8" else 0.5), (name, agree)
    assert variants["gptq-int4-gptq-format"]["iterations"] == 5 and variants["int4"]["iterations"] == 0


def test_verify_orders_variants_and_catches_the_broken_one(work, merged, variants):
    from thinktune.evaluate.metrics import load_samples
    from thinktune.export.verify import verify_variants

    samples = load_samples(work["ds"] / "test.json")
    res = verify_variants(
        merged["path"],
        [{"name": n, "path": v["path"], "info": v} for n, v in variants.items()],
        samples,
        spec=VerifySpec(samples=4),
        max_new_tokens=8,
    )
    v8, v4, v2 = (res["variants"][n] for n in ("int8", "int4", "gptq-int2"))
    assert res["samples"] == 4 and res["merged"]["perplexity"] > 1
    assert "vLLM not installed here" in res["vllm"]
    for v in res["variants"].values():
        assert v["roundTrip"] == {
            "texts": 4,
            "exact": 4,
            "failures": [],
        }  # Chinese text survives the tokenizer
    assert abs(v8["perplexityIncrease"]) < 0.01 and v8["top1Agreement"] > 0.97 and v8["verified"], v8
    assert v8["quantization"] == {"quant_method": "compressed-tensors", "bits": 8, "group_size": 64}
    assert v8["top1Agreement"] >= v4["top1Agreement"] > v2["top1Agreement"]
    assert abs(v4["perplexityIncrease"]) < abs(v2["perplexityIncrease"])
    assert not v2["verified"] and v2["quantization"]["bits"] == 2
    warning = next(w for w in v2["warnings"] if "minTop1Agreement" in w)
    assert "try 8-bit (method int8) instead of 2-bit" in warning and "calibrationSamples 8 -> 128" in warning
    # a zero tolerance turns any perplexity change into a warning
    strict = verify_variants(
        merged["path"],
        [{"name": "int4", "path": variants["int4"]["path"], "info": variants["int4"]}],
        samples[:2],
        spec=VerifySpec(samples=2, max_perplexity_increase=0.0, min_top1_agreement=0.0),
        max_new_tokens=0,
    )
    v = strict["variants"]["int4"]
    if v["perplexityIncrease"] > 0:
        assert not v["verified"] and "maxPerplexityIncrease" in v["warnings"][0]
        assert "calibrated 4-bit (method gptq)" in v["warnings"][0]


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


def test_export_pipeline_via_runner(work, merged):
    """`thinktune export -f mex.yaml` path: runner -> export_model with the example's variants (int8 + calibrated
    4-bit from the train split); relative baseModel, dataset from the training report, LLaMA Factory merge tried
    first (falls back to peft where LLaMA Factory cannot import)."""
    from thinktune.resources import load_path
    from thinktune.runner import run_path

    example = yaml.safe_load((ROOT / "examples" / "crypto" / "03-modelexport.yaml").read_text())
    cr = _export_cr(work["root"] / "cr", work["adapter"], work["base"], example["spec"]["quantize"])
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
    assert [a.name for a in status.artifacts] == ["merged", "int8", "gptq-int4"]
    assert status.artifacts[1].verified is True and status.artifacts[1].perplexity > 1
    assert (
        status.artifacts[2].perplexity > 1 and status.artifacts[2].size_bytes < status.artifacts[0].size_bytes
    )
    gptq = report["artifacts"][2]
    assert gptq["calibration"]["rows"] == 16 and gptq["calibration"]["chineseChars"] > 300
    assert gptq["info"]["iterations"] == 20 and gptq["info"]["library"]["auto-round"]
    assert status.artifacts[0].size_bytes > 1e6
    assert report["dataset"]["foundVia"] == "training report.json"
    assert report["merge"]["backend"] in ("llamafactory", "peft")
    # whichever backend ran, the merged weights equal the peft merge
    from transformers import AutoModelForCausalLM

    a = _logits(AutoModelForCausalLM.from_pretrained(out / "merged").eval())
    b = _logits(AutoModelForCausalLM.from_pretrained(merged["path"]).eval())
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert {c.type for c in status.conditions} == {"Succeeded", "Verified"}  # Verified may be False (4-bit)
    assert (out / "report.md").is_file() and (out / "merged" / "Modelfile").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert (
        "base_model:" in card
        and "vllm serve ./gptq-int4 --reasoning-parser" in card
        and "enable_thinking" in card
    )
    assert "vllm serve ./int8" in card and "`./int8` (8-bit weights, group 64, round-to-nearest" in card
    assert "tiny *random*" in card and "train_loss: 1.23" in card and "pip install compressed-tensors" in card


def test_export_gptq_without_train_split_fails_clearly_but_keeps_the_rest(work):
    from thinktune.errors import StageError
    from thinktune.export.pipeline import export_model
    from thinktune.resolve import ResolvedExport
    from thinktune.resources import load_path

    quantize = [{"method": "gptq", "iterations": 2}, {"method": "int8"}]
    cr = _export_cr(work["root"] / "cr2", work["adapter"], work["base"], quantize)
    loaded = load_path(cr)[0]
    out = loaded.resolve(loaded.resource.spec.output.path)
    export = ResolvedExport(
        resource=loaded.resource,
        adapter_dir=work["adapter"],
        base_model=str(work["base"]),
        dataset=None,
        dataset_source="none",
        output_dir=out,
    )
    with pytest.raises(StageError, match=r"gptq-int4: gptq needs calibration text from the train split"):
        export_model(export, progress=False, merge_backend="peft")
    report = json.loads((out / "report.json").read_text())
    assert report["status"]["phase"] == "Failed"
    assert (out / "merged" / "model.safetensors").is_file() and (out / "int8" / "config.json").is_file()
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
