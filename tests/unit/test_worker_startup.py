"""The worker's two start-up shortcuts (thinktune/train/worker_startup.py) change nothing LLaMA Factory computes:
the tokenized dataset is the same rows with them as without, the fingerprint datasets names it by still changes
whenever the tokenization does, and the processor LLaMA Factory ends up with is the same (none) for a text-only
model while a model with processor files still goes through ``AutoProcessor``. Their time: a benchmark,
bench/worker_startup.py."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("llamafactory")
datasets = pytest.importorskip("datasets")

from datasets.fingerprint import Hasher  # noqa: E402
from datasets.utils import _dill  # noqa: E402
from thinktune.data.writer import dataset_info  # noqa: E402
from thinktune.tiny_model import make_tiny_model  # noqa: E402
from thinktune.train import worker_startup  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

DATASETS_REDUCER = _dill._save_transformersPreTrainedTokenizerBase  # before any test replaces it


def _tokenizer_types() -> list[type]:
    """The tokenizer types datasets' fingerprint pickler has registered a reducer for so far."""
    return [t for t in _dill.Pickler.dispatch if isinstance(t, type) and "Tokenizer" in t.__name__]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", num_layers=1, log=lambda _: None)


@pytest.fixture
def lean(monkeypatch):
    """The worker's fingerprint reducer, in a pickler that has not met a tokenizer type yet (as in the worker)."""

    def fresh():
        for t in _tokenizer_types():
            del _dill.Pickler.dispatch[t]

    fresh()
    monkeypatch.setattr(_dill, "_save_transformersPreTrainedTokenizerBase", DATASETS_REDUCER)
    assert worker_startup.lean_tokenizer_fingerprint()
    yield
    monkeypatch.setattr(_dill, "_save_transformersPreTrainedTokenizerBase", DATASETS_REDUCER)
    fresh()


def test_the_fingerprint_still_follows_every_change_of_the_tokenization(model_dir, lean):
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert all(hasattr(tok, k) for k in worker_startup.REDUNDANT_TOKENIZER_STATE)  # what is left out exists
    base = Hasher.hash(tok)
    assert Hasher.hash(AutoTokenizer.from_pretrained(model_dir)) == base  # deterministic across loads
    added = AutoTokenizer.from_pretrained(model_dir)
    added.add_tokens(["<非对称加密>"])  # lands in the Rust tokenizer only
    assert Hasher.hash(added) != base
    right = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    assert Hasher.hash(right) != base
    templ = AutoTokenizer.from_pretrained(model_dir)
    templ.chat_template = "{{ messages }}"
    assert Hasher.hash(templ) != base


def test_the_fingerprint_pickles_a_fraction_of_what_datasets_pickles(model_dir, lean, monkeypatch):
    tok = AutoTokenizer.from_pretrained(model_dir)
    lean_bytes = len(_dill.dumps(tok))
    del _dill.Pickler.dispatch[type(tok)]
    monkeypatch.setattr(_dill, "_save_transformersPreTrainedTokenizerBase", DATASETS_REDUCER)
    full_bytes = len(_dill.dumps(tok))
    assert lean_bytes < 0.7 * full_bytes, (lean_bytes, full_bytes)


def _lf_args(model_dir, ds_dir, out):
    return dict(
        model_name_or_path=str(model_dir),
        stage="sft",
        do_train=True,
        finetuning_type="lora",
        template="qwen3",
        dataset="t_train",
        dataset_dir=str(ds_dir),
        cutoff_len=256,
        output_dir=str(out),
        overwrite_output_dir=True,
        per_device_train_batch_size=1,
        max_steps=1,
        report_to="none",
        use_cpu=True,
    )


def _dataset(d):
    d.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"解释第 {i} 个概念：哈希函数。"},
                {
                    "role": "assistant",
                    "content": f"<think>\n先看定义。\n</think>\n\n哈希函数把输入映射为摘要 {i}。",
                },
            ]
        }
        for i in range(6)
    ]
    (d / "train.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    info = dataset_info("t")  # the writer's own entry: LLaMA Factory reads what DatasetBuild writes
    (d / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return d


def _tokenized(model_dir, ds_dir, out, cache, monkeypatch):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    model_args, data_args, training_args, *_ = get_train_args(_lf_args(model_dir, ds_dir, out))
    tm = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tm["tokenizer"], data_args)
    dm = get_dataset(template, model_args, data_args, training_args, stage="sft", **tm)
    return tm, dm["train_dataset"].to_dict(), dm["train_dataset"]._fingerprint


def test_llama_factory_tokenizes_the_same_rows_with_the_shortcuts(model_dir, tmp_path, monkeypatch):
    from llamafactory.extras import packages
    from llamafactory.model import loader

    ds = _dataset(tmp_path / "ds")
    plain_tm, plain_rows, plain_fp = _tokenized(model_dir, ds, tmp_path / "o1", tmp_path / "c1", monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(loader, "AutoProcessor", loader.AutoProcessor)  # restored after
        for switch, _ in worker_startup.OPTIONAL_IMPORTS.values():
            m.setattr(packages, switch, getattr(packages, switch))
        for t in _tokenizer_types():
            m.delitem(_dill.Pickler.dispatch, t)
        m.setattr(
            _dill,
            "_save_transformersPreTrainedTokenizerBase",
            _dill._save_transformersPreTrainedTokenizerBase,
        )
        # the worker's call
        took = worker_startup.skip_redundant_startup_work(_lf_args(model_dir, ds, tmp_path / "o2"))
        assert took["lean_tokenizer_fingerprint"] and took["text_only_processor"]
        lean_tm, lean_rows, lean_fp = _tokenized(model_dir, ds, tmp_path / "o2", tmp_path / "c2", monkeypatch)
        for t in _tokenizer_types():
            del _dill.Pickler.dispatch[t]
    assert lean_rows == plain_rows and len(plain_rows["input_ids"]) == 6
    assert lean_fp != plain_fp  # a different hash of the same function: datasets' cache is keyed apart
    assert plain_tm["processor"] is None and lean_tm["processor"] is None  # LF dropped it / never loaded it
    assert lean_tm["tokenizer"].get_vocab() == plain_tm["tokenizer"].get_vocab()


def test_autoprocessor_is_skipped_only_where_no_processor_can_exist(model_dir, tmp_path, monkeypatch):
    import shutil

    assert not worker_startup.can_have_processor(str(model_dir))
    assert worker_startup.can_have_processor("Qwen/Qwen3-4B-Thinking-2507")  # a hub id: not guessed
    calls = []
    monkeypatch.setattr(
        "transformers.AutoProcessor.from_pretrained", classmethod(lambda cls, p, *a, **k: calls.append(p))
    )
    with pytest.raises(OSError, match="text-only"):
        worker_startup._TextOnlyAutoProcessor.from_pretrained(str(model_dir))
    assert calls == []
    for extra in ("preprocessor_config.json", "processor_config.json"):
        other = tmp_path / extra
        shutil.copytree(model_dir, other)
        (other / extra).write_text("{}")
        assert worker_startup.can_have_processor(str(other))
        worker_startup._TextOnlyAutoProcessor.from_pretrained(str(other))
    assert len(calls) == 2
    vl = tmp_path / "vl"
    shutil.copytree(model_dir, vl)
    cfg = json.loads((vl / "config.json").read_text())
    (vl / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2_vl"}))
    assert worker_startup.can_have_processor(str(vl))  # an architecture with a processor class
    named = tmp_path / "named"
    shutil.copytree(model_dir, named)
    tc = json.loads((named / "tokenizer_config.json").read_text())
    (named / "tokenizer_config.json").write_text(json.dumps({**tc, "processor_class": "SomeProcessor"}))
    assert worker_startup.can_have_processor(str(named))


@pytest.mark.parametrize("arg", sorted(worker_startup.OPTIONAL_IMPORTS))
def test_a_feature_left_off_keeps_llama_factory_off_its_library(arg, monkeypatch):
    """The LLaMA Factory module that imports the feature's library, imported afresh, binds it unless the shortcut
    turned the switch off; a run with the feature on, or a module already imported, is left as it is."""
    import importlib

    from llamafactory.extras import packages

    switch, name = worker_startup.OPTIONAL_IMPORTS[arg]
    bound = {"plot_loss": "plt", "predict_with_generate": "jieba"}[arg]  # the name the module binds
    parent, _, leaf = name.rpartition(".")
    for each, _ in worker_startup.OPTIONAL_IMPORTS.values():  # every call below turns the others off too
        monkeypatch.setattr(packages, each, getattr(packages, each))  # restored after
    monkeypatch.setattr(importlib.import_module(parent), leaf, importlib.import_module(name))
    monkeypatch.delitem(sys.modules, name)
    assert switch not in worker_startup.skip_unused_optional_imports({arg: True})
    assert hasattr(importlib.import_module(name), bound)  # LLaMA Factory's own import, left on
    assert switch not in worker_startup.skip_unused_optional_imports({arg: False})  # imported now: too late
    del sys.modules[name]
    assert switch in worker_startup.skip_unused_optional_imports({arg: False})
    assert not hasattr(importlib.import_module(name), bound) and not getattr(packages, switch)()


def test_the_detection_losses_leave_scipy_out_and_the_switch_is_put_back(monkeypatch):
    """transformers' loss registry, imported afresh through the shortcut, has its detection losses without scipy's
    Hungarian matching; transformers' switch reads the truth again afterwards; an already imported registry is
    left as it is; and without the shortcut the same fresh import binds it (scipy is installed here)."""
    import importlib

    import transformers.utils as tu

    original = tu.is_scipy_available
    assert original()  # LLaMA Factory's requirement: the case the shortcut is for

    def fresh_registry():
        for name in [m for m in sys.modules if m.startswith("transformers.loss.")]:
            parent, _, leaf = name.rpartition(".")
            monkeypatch.setattr(importlib.import_module(parent), leaf, sys.modules[name])  # restored after
            monkeypatch.delitem(sys.modules, name)

    importlib.import_module("transformers.loss.loss_utils")
    assert worker_startup.skip_unused_transformers_imports() == []  # imported already: too late, nothing done
    fresh_registry()
    assert worker_startup.skip_unused_transformers_imports() == ["is_scipy_available"]
    detection = sys.modules["transformers.loss.loss_for_object_detection"]
    assert not hasattr(detection, "linear_sum_assignment")
    assert tu.is_scipy_available is original and tu.is_scipy_available()
    fresh_registry()
    importlib.import_module("transformers.loss.loss_utils")
    assert hasattr(sys.modules["transformers.loss.loss_for_object_detection"], "linear_sum_assignment")


def test_a_shortcut_left_out_is_not_applied_and_an_unknown_name_is_refused(monkeypatch):
    calls = []
    monkeypatch.setattr(worker_startup, "lean_tokenizer_fingerprint", lambda: calls.append("lean") or True)
    monkeypatch.setattr(worker_startup, "skip_text_only_processor", lambda: calls.append("processor") or True)
    monkeypatch.setattr(worker_startup, "skip_unused_optional_imports", lambda args: [])
    monkeypatch.setattr(worker_startup, "skip_unused_transformers_imports", lambda: calls.append("tf") or [])
    took = worker_startup.skip_redundant_startup_work({}, leave_out=("text_only_processor",))
    assert (
        calls == ["tf", "lean"]
        and took["text_only_processor"] is False
        and took["lean_tokenizer_fingerprint"]
    )
    with pytest.raises(ValueError, match="unknown start-up shortcut"):
        worker_startup.skip_redundant_startup_work({}, leave_out=("no_such",))
