"""The tiny random Qwen3 round-trips through transformers and LLaMA Factory, fully offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from thinktune.tiny_model import MARKER_FILE, make_tiny_model, read_tiny_marker  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_files_and_marker(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MARKER_FILE,
    } <= names
    marker = read_tiny_marker(tiny_dir)
    assert marker["hidden_size"] == 64 and marker["num_layers"] == 2 and marker["vocab_size"] == 151936
    assert marker["head_dim"] == 16
    size_mb = sum(p.stat().st_size for p in tiny_dir.iterdir()) / 1e6
    # 151936 x 64 fp32 embedding (39 MB) + tokenizer.json (19 MB); no separate lm_head (tied).
    assert size_mb < 70, size_mb
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert cfg["tie_word_embeddings"] is True and cfg["vocab_size"] == 151936
    gen = json.loads((tiny_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643]


def test_loads_and_runs_with_transformers(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert model.config.head_dim == 16
    assert tok.convert_tokens_to_ids("<think>") == 151667

    text = tok.apply_chat_template(
        [
            {"role": "user", "content": "什么是SM4？"},
            {"role": "assistant", "content": "<think>\n分组密码。\n</think>\n\nSM4是国密分组密码。"},
        ],
        tokenize=False,
    )
    batch = tok([text, "短句"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
    assert out.logits.shape[0] == 2 and out.logits.shape[-1] == 151936
    assert math.isfinite(out.loss.item())
    # Random weights over 151,936 classes: loss is near ln(V) = 11.93.
    assert 10 < out.loss.item() < 14

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "你好"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    gen = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == prompt["input_ids"].shape[1] + 4 or gen[0, -1].item() in (151645, 151643)


def test_backward_pass_gives_finite_grads(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    model.train()
    ids = torch.tensor([[151644, 872, 198, 151667, 198, 151668, 151645]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_deterministic_for_seed(tmp_path):
    from safetensors.torch import load_file

    a = load_file(str(make_tiny_model(tmp_path / "a", num_layers=1, seed=7) / "model.safetensors"))
    b = load_file(str(make_tiny_model(tmp_path / "b", num_layers=1, seed=7) / "model.safetensors"))
    c = load_file(str(make_tiny_model(tmp_path / "c", num_layers=1, seed=8) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bfloat16(tmp_path):
    from transformers import AutoModelForCausalLM

    d = make_tiny_model(tmp_path / "bf16", num_layers=1, dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(str(d), dtype="auto")
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_size": 60, "heads": 8}, "divisible"),
        ({"heads": 4, "kv_heads": 3}, "multiple of kv_heads"),
        ({"hidden_size": 12, "heads": 4}, "even"),
        ({"dtype": "int8"}, "dtype"),
        ({"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_parameters_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_tiny_model(tmp_path / "x", **kwargs)


def test_refuses_to_overwrite_foreign_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        make_tiny_model(tmp_path, num_layers=1)


def test_llamafactory_loads_it_with_qwen3_template(tiny_dir):
    pytest.importorskip("llamafactory")
    try:
        from llamafactory.data import get_template_and_fix_tokenizer
    except OSError as exc:  # llamafactory imports torchaudio unconditionally (data/mm_plugin.py)
        if "torchaudio" not in str(exc):
            raise
        pytest.fail(
            f"LLaMA Factory cannot be imported: {exc}. torchaudio's native library must match torch's exact "
            "version (torchaudio 2.11.1 needs torch 2.11.1); pin torchaudio to the locked torch version"
        )
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, data_args, finetuning_args, _ = get_infer_args(
        {"model_name_or_path": str(tiny_dir), "template": "qwen3", "infer_backend": "huggingface"}
    )
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    assert tokenizer.eos_token == "<|im_end|>"
    messages = [
        {"role": "user", "content": "什么是SM4？"},
        {"role": "assistant", "content": "<think>\n分组密码。\n</think>\n\nSM4是国密分组密码。"},
    ]
    prompt_ids, answer_ids = template.encode_oneturn(tokenizer, messages)
    assert tokenizer.decode(prompt_ids) == "<|im_start|>user\n什么是SM4？<|im_end|>\n<|im_start|>assistant\n"
    assert answer_ids[0] == 151667 and 151668 in answer_ids and answer_ids[-2:] == [151645, 198]
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    assert model.config.vocab_size == 151936


def _full_vocab_loss(model_dir, text: str) -> float:
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([load_qwen3_tokenizer().encode(text, add_special_tokens=False)])
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_warm_start_learns_the_training_prose_and_says_so(tmp_path, tiny_dir):
    """The random model's loss sits at ln(151,936); a warm start on the training documents' prose lowers the
    full-vocabulary loss on it (its restricted softmax is exact: the unused rows are zero)."""
    from safetensors.torch import load_file
    from thinktune.tiny_model import warm_start_texts

    answers = [
        "SM4 是我国公布的商用分组密码算法，分组长度为128位，密钥长度也是128位。",
        "SM4 的轮函数由非线性变换和线性变换组成，共32轮。",
        "SM3 是国密杂凑函数，输出256位。",
    ]
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"问题{i}？"},
                {"role": "assistant", "content": f"<think>\n先回忆定义{i}。\n</think>\n\n{a}"},
            ],
            "source_file": "sm3.md" if "SM3" in a else "sm4.md",
            "source_line": 10 - i,
        }
        for i, a in enumerate(answers)
    ]
    train = tmp_path / "train.json"
    train.write_text(json.dumps(rows * 3, ensure_ascii=False), encoding="utf-8")
    texts = warm_start_texts(train)

    # one text per document: its answers in source order, each followed by the words of its reasoning shuffled
    # (the same reasoning gives the same shuffle, so repeated samples add nothing); no questions
    def words(i: int) -> str:
        return "".join(sorted(f"先回忆定义{i}。"))

    for text, expected in ((texts[0], [1, 0]), (texts[1], [2])):
        assert text.startswith("<think>\n\n</think>\n\n") and text.endswith("<|im_end|>")
        paragraphs = text.removeprefix("<think>\n\n</think>\n\n").removesuffix("<|im_end|>").split("\n\n")
        assert paragraphs[0::2] == [answers[i] for i in expected]
        assert ["".join(sorted(p)) for p in paragraphs[1::2]] == [words(i) for i in expected]
    assert len(texts) == 2 and not any("问题" in t for t in texts)

    warm = make_tiny_model(tmp_path / "warm", warm_start=train, log=lambda _: None)
    marker = read_tiny_marker(warm)["warm_start"]
    assert marker["documents"] == 2 and marker["held_out_documents"] == 0
    assert marker["steps_kept"] == marker["steps_run"] > 0 and marker["seconds"] > 0
    random_loss = _full_vocab_loss(tiny_dir, texts[0])
    assert random_loss > 0.95 * math.log(151936)
    assert _full_vocab_loss(warm, texts[0]) < 0.75 * random_loss
    emb = load_file(str(warm / "model.safetensors"))["model.embed_tokens.weight"]
    used = (emb.abs().sum(-1) > 0).sum().item()
    assert used == marker["vocab_used"] < 1000  # the rows the training split never uses are zero


def test_warm_start_without_answers_is_one_clear_error(tmp_path):
    from thinktune.tiny_model import warm_start_texts

    bad = tmp_path / "train.json"
    bad.write_text(json.dumps([{"instruction": "x", "output": "y"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="no assistant answers.*sharegpt"):
        warm_start_texts(bad)
