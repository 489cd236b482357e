"""Validation: roles, empty turns, thinking format, token length with the real Qwen3 tokenizer."""

from __future__ import annotations

import pytest
from thinktune.data.validate import render_chat, structural_problems, token_lengths

GOOD = [
    {"role": "system", "content": "你是助手。"},
    {"role": "user", "content": "什么是 SM4？"},
    {"role": "assistant", "content": "<think>\n分析：分组密码。\n</think>\n\nSM4 是分组密码。"},
]


@pytest.fixture(scope="module")
def qwen_tok():
    from thinktune.qwen_tokenizer import load_tokenizer

    return load_tokenizer("builtin:qwen3")


def test_good_sample_has_no_problems():
    assert structural_problems(GOOD) == []
    assert structural_problems(GOOD[1:]) == []  # system is optional


@pytest.mark.parametrize(
    "msgs,needle",
    [
        ([GOOD[0], GOOD[2], GOOD[1]], "roles must alternate"),
        ([GOOD[0], {"role": "user", "content": "  "}, GOOD[2]], "empty user turn"),
        ([GOOD[0], GOOD[1]], "does not end with an assistant turn"),
        ([GOOD[0], GOOD[1], {"role": "assistant", "content": "没有思考"}], "must start with '<think>"),
        ([GOOD[0], GOOD[1], {"role": "assistant", "content": "<think>\nr\n</think>\n\n"}], "empty answer"),
        (
            [GOOD[0], GOOD[1], {"role": "assistant", "content": "<think>\nr\n</think>\n\na </think>"}],
            "only once",
        ),
        ([GOOD[0], {"role": "user", "content": "<think>?"}, GOOD[2]], "Qwen3 special tokens"),
        ([{"role": "system", "content": ""}, GOOD[1], GOOD[2]], "empty system prompt"),
        ([], "no messages"),
    ],
)
def test_structural_problems(msgs, needle):
    probs = structural_problems(msgs)
    assert probs and any(needle in r for r, _ in probs), probs
    assert all(fix for _, fix in probs)


def test_render_chat_is_the_qwen3_training_format():
    assert render_chat(GOOD) == (
        "<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\n什么是 SM4？<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n分析：分组密码。\n</think>\n\nSM4 是分组密码。<|im_end|>\n"
    )


def test_token_length_with_real_tokenizer_counts_special_tokens_once(qwen_tok):
    text = render_chat(GOOD)
    n = token_lengths([text], qwen_tok)[0]
    ids = qwen_tok(text, add_special_tokens=False)["input_ids"]
    assert n == len(ids)
    # <|im_start|>, <|im_end|>, <think>, </think> are single special tokens
    for tok in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert qwen_tok.convert_tokens_to_ids(tok) in ids
    assert ids.count(qwen_tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert 20 < n < len(text)


def test_token_lengths_accept_an_injected_tokenizer():
    class CharTok:
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    assert token_lengths(["abc", "密码"], CharTok()) == [3, 2]

    class EncodeOnly:
        def __call__(self, *a, **k):
            raise TypeError("no batch")

        def encode(self, t):
            return t.split()

    assert token_lengths(["a b c"], EncodeOnly()) == [3]
