"""The built-in Qwen3 tokenizer is the real one: same BPE as tiktoken, same added-token ids, same template."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import unicodedata

import pytest

pytest.importorskip("transformers")
tiktoken = pytest.importorskip("tiktoken")

from thinktune.chat_template import GENERATION_PROMPT, qwen3_thinking_chat_template  # noqa: E402
from thinktune.qwen_tokenizer import (  # noqa: E402
    BUILTIN_QWEN3,
    QWEN3_ADDED_TOKENS,
    QWEN3_MODEL_MAX_LENGTH,
    QWEN_PAT_STR,
    load_bpe_ranks,
    load_qwen3_tokenizer,
    load_tokenizer,
    qwen3_tokenizer_cache_dir,
)

SAMPLES = {
    "simplified": "对称加密算法SM4的分组长度是128位，密钥长度也是128位。国密算法包括SM2、SM3和SM4。",
    "traditional": "橢圓曲線密碼學的安全性基於離散對數問題的困難性。數位簽章與雜湊函數。",
    "english": "The Advanced Encryption Standard (AES) uses a 128-bit block; it's what we'd call a 'cipher'.",
    "mixed": "使用AES-256-GCM模式时，nonce（随机数）长度推荐为96 bits，不要重复使用！OK?",
    "code": 'def sm4_encrypt(key: bytes, block: bytes) -> bytes:\n    """加密一个分组。"""\n'
    '    assert len(key) == 16, f"bad key {len(key)}"\n    return bytes(a ^ b for a, b in zip(key, block))\n',
    "emoji": "加密 🔐 完成 ✅ 失败 ❌ 👨‍👩‍👧‍👦 🇨🇳 ok😀😀",
    "whitespace": "  \n\n\t\t第一行   \r\n   \n\n\n第二行\t \u3000全角空格\u3000\n    indented\n\n\n\n   ",
    "numbers": "2^128 = 340282366920938463463374607431768211456; 0x1F2E3D; 3.14159",
    "markdown": "## 第三章：分组密码\n\n| 算法 | 分组 |\n|---|---|\n| SM4 | 128 |\n\n> 注意：**不要**使用ECB模式。\n- [x] 完成",
}


@pytest.fixture(scope="module")
def tok():
    return load_qwen3_tokenizer()


@pytest.fixture(scope="module")
def reference():
    return tiktoken.Encoding(
        "qwen-reference", pat_str=QWEN_PAT_STR, mergeable_ranks=load_bpe_ranks(), special_tokens={}
    )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_agrees_with_tiktoken(tok, reference, name):
    text = SAMPLES[name]
    ours = tok.encode(text, add_special_tokens=False)
    # Qwen's tokenizer normalises to NFC first (as QwenTokenizer.encode does before tiktoken).
    assert ours == reference.encode_ordinary(unicodedata.normalize("NFC", text))
    assert tok.decode(ours) == text


def test_known_ids_for_chinese_sentence(tok):
    # Pinned in notes/qwen-tokenizer.md from the same conversion.
    ids = tok.encode("对称加密算法SM4的分组长度是128位。", add_special_tokens=False)
    assert len(ids) == 16
    assert ids[:4] == [32664, 24641, 113456, 107018]


def test_nfc_normalisation(tok):
    decomposed = unicodedata.normalize("NFD", "café é")
    assert tok.encode(decomposed, add_special_tokens=False) == tok.encode("café é", add_special_tokens=False)


def test_added_tokens_at_real_ids(tok):
    assert len(QWEN3_ADDED_TOKENS) == 26
    assert len(tok) == 151_669
    decoder = tok.added_tokens_decoder
    for spec in QWEN3_ADDED_TOKENS:
        assert tok.convert_tokens_to_ids(spec.content) == spec.id, spec
        assert tok.encode(spec.content, add_special_tokens=False) == [spec.id], spec
        # Embedded in text it is still one token, not split into "<", "think", ">".
        ids = tok.encode(f"前{spec.content}后", add_special_tokens=False)
        assert spec.id in ids, spec
        assert decoder[spec.id].content == spec.content
        assert decoder[spec.id].special == spec.special, spec


def test_well_known_ids(tok):
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 151643
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tok.convert_tokens_to_ids("<|file_sep|>") == 151664
    assert tok.convert_tokens_to_ids("<tool_response>") == 151665
    assert tok.convert_tokens_to_ids("</tool_response>") == 151666
    assert tok.encode("<think>", add_special_tokens=False) == [151667]
    assert tok.encode("</think>", add_special_tokens=False) == [151668]


def test_special_token_settings(tok):
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.bos_token is None
    assert tok.model_max_length == QWEN3_MODEL_MAX_LENGTH
    # No BOS/EOS is added around plain text (Qwen adds none).
    assert tok("你好")["input_ids"] == tok.encode("你好", add_special_tokens=False)
    # <think> is not "special", so skip_special_tokens keeps the reasoning markers but drops <|im_end|>.
    ids = tok.encode("<think>\n推理\n</think>\n\n答案<|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\n推理\n</think>\n\n答案"


def test_generation_prompt_prefills_think(tok):
    text = tok.apply_chat_template(
        [{"role": "user", "content": "什么是SM4？"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n什么是SM4？<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert text.endswith(GENERATION_PROMPT)


def test_thinking_turn_renders_like_qwen3_thinking_2507(tok):
    messages = [
        {"role": "system", "content": "你是密码学专家。"},
        {"role": "user", "content": "什么是SM4？"},
        {"role": "assistant", "content": "<think>\n用户问SM4。\n</think>\n\nSM4是分组密码。"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\n你是密码学专家。<|im_end|>\n"
        "<|im_start|>user\n什么是SM4？<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n用户问SM4。\n</think>\n\nSM4是分组密码。<|im_end|>\n"
    )
    # reasoning_content (the OpenAI-style field) renders the same way.
    alt = [
        messages[0],
        messages[1],
        {"role": "assistant", "content": "SM4是分组密码。", "reasoning_content": "用户问SM4。"},
    ]
    assert tok.apply_chat_template(alt, tokenize=False) == text


def test_history_reasoning_is_stripped(tok):
    messages = [
        {"role": "user", "content": "问一"},
        {"role": "assistant", "content": "<think>\n想一\n</think>\n\n答一"},
        {"role": "user", "content": "问二"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user\n问一<|im_end|>\n"
        "<|im_start|>assistant\n答一<|im_end|>\n"
        "<|im_start|>user\n问二<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )
    assert "想一" not in text


def test_chat_template_tokenizes_think_as_single_tokens(tok):
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert ids[0] == 151644 and ids.count(151645) == 1
    assert ids[-2:] == [151667, 198]  # "<think>", "\n"


def test_cache_dir_is_a_loadable_qwen2_tokenizer(tok):
    from transformers import AutoTokenizer

    cache = qwen3_tokenizer_cache_dir()
    cfg = json.loads((cache / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"
    again = AutoTokenizer.from_pretrained(str(cache))
    assert type(again).__name__ == "Qwen2Tokenizer"
    assert again.chat_template == qwen3_thinking_chat_template()
    assert again.encode(SAMPLES["mixed"]) == tok.encode(SAMPLES["mixed"])


def test_load_tokenizer_builtin_and_path(tok, tmp_path):
    assert load_tokenizer(BUILTIN_QWEN3).encode("<think>", add_special_tokens=False) == [151667]
    tok.save_pretrained(tmp_path / "t")
    assert load_tokenizer(tmp_path / "t").convert_tokens_to_ids("</think>") == 151668


def test_load_tokenizer_missing_path_names_path_and_fix(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as err:
        load_tokenizer(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "thinktune make-tiny-model" in msg and "Qwen/" in msg


def test_load_tokenizer_dir_without_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_uncached_hub_id_offline():
    with pytest.raises(FileNotFoundError, match="make-tiny-model"):
        load_tokenizer("thinktune-test/definitely-not-cached")


def test_built_tokenizer_is_cached_beside_the_ranks_keyed_by_their_hash(tok, monkeypatch):
    """A load after the first never rebuilds (the build is what took tens of seconds per load); the cache sits
    next to qwen.tiktoken when that is writable, under a key naming the hash of the ranks file."""
    import hashlib

    import thinktune.qwen_tokenizer as qt

    monkeypatch.delenv("THINKTUNE_CACHE", raising=False)
    ranks = qt.tiktoken_file()
    digest = hashlib.sha256(ranks.read_bytes()).hexdigest()[:16]
    qt.load_qwen3_tokenizer()  # builds it there if this install has not yet
    cache = qt.qwen3_tokenizer_cache_dir()
    assert f"ranks{digest}" in cache.name and (cache / "tokenizer.json").is_file()
    if os.access(ranks.parent, os.W_OK):
        assert cache.parent.parent == ranks.parent

    def no_rebuild():
        raise AssertionError("rebuilt from the BPE ranks although a cached tokenizer.json exists")

    monkeypatch.setattr(qt, "build_qwen3_tokenizer", no_rebuild)
    again = qt.load_qwen3_tokenizer()
    assert again.encode("对称加密使用同一个密钥") == tok.encode("对称加密使用同一个密钥")
