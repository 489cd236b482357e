"""The sample corpus → thinktune dataset → LLaMA Factory's own loader and 2 real training steps (tiny Qwen3, CPU).

LLaMA Factory only *warns* about samples it cannot use ("Skipping this abnormal example", "Invalid role tag",
"Dropped invalid example", "Dropped lengthy example") and then silently trains on fewer rows, so this test runs
LF in a subprocess, captures its log, and asserts that none of those appear, that every row survives, that LF's
token counts equal the ones in our report (same qwen3 rendering), and that <think>…</think> is in the labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from thinktune.data.build import build_dataset
from thinktune.spec import DatasetBuildSpec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "crypto" / "corpus"
BAD = ROOT / "examples" / "crypto" / "corpus-bad"

LF_SCRIPT = r"""
import json, sys
from pathlib import Path
try:
    from thinktune.train.worker import ensure_torchaudio_importable  # torchaudio/torch ABI mismatch guard
    ensure_torchaudio_importable()
except ImportError:
    pass
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
from llamafactory.data import get_template_and_fix_tokenizer, get_dataset

ds_dir, model_dir, out_dir, name, cutoff = sys.argv[1:6]
args = dict(model_name_or_path=model_dir, stage="sft", do_train=True, finetuning_type="lora", lora_rank=4,
            lora_target="all", template="qwen3", enable_thinking=True, dataset=f"{name}_train",
            eval_dataset=f"{name}_val", dataset_dir=ds_dir, cutoff_len=int(cutoff), output_dir=out_dir,
            overwrite_output_dir=True, per_device_train_batch_size=2, gradient_accumulation_steps=1,
            max_steps=2, learning_rate=1e-3, report_to="none", logging_steps=1, use_cpu=True,
            save_strategy="no", overwrite_cache=True, seed=1)
model_args, data_args, training_args, finetuning_args, _ = get_train_args(dict(args))
tm = load_tokenizer(model_args)
tok = tm["tokenizer"]
template = get_template_and_fix_tokenizer(tok, data_args)
dm = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)
train, evald = dm["train_dataset"], dm["eval_dataset"]
think, end = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("</think>")
res = {
    "train_rows": len(train), "eval_rows": len(evald),
    "labels_with_think": sum(1 for ex in train if think in ex["labels"] and end in ex["labels"]),
    "inputs_with_one_think": sum(1 for ex in train if ex["input_ids"].count(think) == 1 and ex["input_ids"].count(end) == 1),
    "prompt_masked": all(ex["labels"][0] == -100 for ex in train),
    "lengths": sorted(len(ex["input_ids"]) for ex in train),
}
print("LFRESULT " + json.dumps(res), flush=True)
from llamafactory.train.tuner import run_exp
run_exp(dict(args))
print("LFTRAINED", flush=True)
"""

FORMAT_WARNINGS = (
    "Skipping this abnormal example",
    "Invalid role tag",
    "Invalid message count",
    "Dropped invalid example",
    "Dropped lengthy example",
)


@pytest.fixture(scope="module")
def tok():
    from thinktune.qwen_tokenizer import load_tokenizer

    return load_tokenizer("builtin:qwen3")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from thinktune.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def run_lf(ds: Path, model: Path, out: Path, name: str, cutoff: int) -> tuple[dict, str]:
    script = out.parent / "lf_check.py"
    script.write_text(LF_SCRIPT)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_DISABLED": "true",
    }
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run(
        [sys.executable, str(script), str(ds), str(model), str(out), name, str(cutoff)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=str(out.parent),
    )
    log = p.stdout + "\n" + p.stderr
    assert p.returncode == 0, log[-6000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("LFRESULT "))
    return json.loads(line[len("LFRESULT ") :]), log


def test_corpus_builds_and_llamafactory_trains_without_format_warnings(tmp_path, tok, tiny):
    ds = tmp_path / "ds"
    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": str(CORPUS)},
            "output": {"path": str(ds)},
            "datasetName": "crypto",
            "validation": {"cutoffLen": 2048},
        }
    )
    report = build_dataset(spec, CORPUS, ds, progress=False, tokenizer=tok)
    train = json.loads((ds / "train.json").read_text(encoding="utf-8"))
    val = json.loads((ds / "val.json").read_text(encoding="utf-8"))
    assert report["counts"]["train"] == len(train) >= 100 and report["errors"] == []

    res, log = run_lf(ds, tiny, tmp_path / "lf-out", "crypto", 2048)
    for w in FORMAT_WARNINGS:
        assert w not in log, w
    # every row loaded (none skipped), train and eval
    assert res["train_rows"] == len(train) and res["eval_rows"] == len(val)
    # the reasoning is trained: <think> and </think> are in the labels of every row, once in every input
    assert res["labels_with_think"] == len(train) and res["inputs_with_one_think"] == len(train)
    assert res["prompt_masked"]
    # LF's tokenisation of each row has exactly the length our validation measured (so cutoff checks are exact)
    assert res["lengths"] == sorted(r["n_tokens"] for r in train)
    # two real optimizer steps ran
    assert "LFTRAINED" in log
    steps = [json.loads(x) for x in (tmp_path / "lf-out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [s["current_steps"] for s in steps if "loss" in s] == [1, 2]
    assert (tmp_path / "lf-out" / "adapter_model.safetensors").is_file()


def test_malformed_files_rejected_with_line_numbers_and_rest_loads(tmp_path, tok, tiny):
    src = tmp_path / "src"
    src.mkdir()
    for f in BAD.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    for f in ("05-sm3-hash.md", "12-length-extension.md", "18-ecdsa-nonce.md", "29-aead-choice.md"):
        (src / f).write_bytes((CORPUS / f).read_bytes())
    ds = tmp_path / "ds"
    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": str(src)},
            "output": {"path": str(ds)},
            "split": {"train": 0.8, "val": 0.2, "test": 0.0},
        }
    )
    rep = build_dataset(spec, src, ds, progress=False, tokenizer=tok)
    rej = [json.loads(x) for x in (ds / "rejects.jsonl").read_text().splitlines()]
    # repaired with a warning and kept: an unclosed fence, and GBK lines converted to UTF-8
    bad_files = {f.name for f in BAD.iterdir()} - {"broken-fence.md", "bad-encoding.md"}
    assert bad_files <= {r["source_file"] for r in rej}
    assert any(w.startswith("bad-encoding.md:3: not UTF-8") for w in rep["warnings"]), rep["warnings"]
    assert any(w.startswith("broken-fence.md:5:1: code fence") for w in rep["warnings"])
    assert all(r["line"] >= 1 and r["source"].startswith(f"{r['source_file']}:{r['line']}") for r in rej)
    assert any("too long" in r["reason"] for r in rej)
    assert rep["counts"]["rejects"] == len(rej)
    # what survived is clean for LLaMA Factory
    res, log = run_lf(ds, tiny, tmp_path / "lf-out", "thinktune", 4096)
    for w in FORMAT_WARNINGS:
        assert w not in log, w
    assert res["train_rows"] == rep["counts"]["train"] and res["labels_with_think"] == res["train_rows"]
