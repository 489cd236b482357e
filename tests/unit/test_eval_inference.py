"""Evaluation's model side without a model: prompt rendering, response encoding, generation prompts and the
aggregation of response scores (thinktune.evaluate.inference)."""

from __future__ import annotations

import math

import pytest
from thinktune.evaluate import inference as I  # noqa: N812 - reads like the module it abbreviates
from thinktune.evaluate import metrics as M


def test_lf_prompt_and_response_parts():
    p = I.render_prompt_lf([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    assert p == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    t, a = I.response_parts("<think>\nT\n</think>\n\nA")
    assert (t, a) == ("<think>\nT\n</think>\n\n", "A<|im_end|>\n")
    assert I.response_parts("A")[0] == "<think>\n\n</think>\n\n"  # LF adds an empty think block


def test_encode_sample_truncates_response_tail():
    class Tok:  # one id per character
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    s = M.Sample(
        messages=[{"role": "user", "content": "Q"}], reference="<think>\n" + "想" * 50 + "\n</think>\n\n答"
    )
    ids, start, boundary, truncated = I.encode_sample(Tok(), s, 10_000)
    assert not truncated and "".join(map(chr, ids[start:boundary])).startswith("<think>\n想")
    assert "".join(map(chr, ids[boundary:])) == "答<|im_end|>\n"
    ids, start, boundary, truncated = I.encode_sample(Tok(), s, start + 20)
    assert truncated and len(ids) == start + 20 and boundary > len(ids)


def test_generation_prompt_prefill_both_ways():
    class Official:  # Thinking-2507: the template pre-fills <think>
        chat_template = "x"

        def apply_chat_template(self, messages, **kw):
            assert kw["add_generation_prompt"] and kw["enable_thinking"]
            return I.render_prompt_lf(messages) + "<think>\n"

    class NoTemplate:
        chat_template = None

    msgs = [{"role": "user", "content": "Q"}]
    prompt, prefill = I.generation_prompt(Official(), msgs)
    assert prompt.endswith("assistant\n<think>\n") and prefill == "<think>\n"
    prompt, prefill = I.generation_prompt(NoTemplate(), msgs)
    assert prompt == I.render_prompt_lf(msgs) and prefill == ""
    # either way the parsed prediction is the same
    assert M.split_thinking("<think>\n" + "想\n</think>\n\n答") == M.split_thinking(
        "<think>\n想\n</think>\n\n答"
    )


def test_perplexity_and_top1_agreement():
    a = [I.ResponseScore(2.0, 2, 1.0, 1, [1, 2, 3]), I.ResponseScore(0.0, 0, 3.0, 3, [4, 5])]
    b = [I.ResponseScore(0.0, 1, 0.0, 1, [1, 9, 3]), I.ResponseScore(0.0, 0, 0.0, 1, [4])]
    ppl = I.perplexity(a)
    assert ppl["full"] == pytest.approx(math.exp(6.0 / 6)) and ppl["thinking"] == pytest.approx(math.e)
    assert ppl["answer"] == pytest.approx(math.exp(4.0 / 4)) and ppl["tokens"] == 6
    assert I.perplexity([I.ResponseScore(0.0, 0, 0.0, 0, [])])["full"] is None
    assert I.top1_agreement(a, b) == pytest.approx(3 / 4)  # positions compared: 3 + 1


def test_sampled_generations_use_the_models_settings_and_are_reproducible(tmp_path):
    """evaluation.decoding sampling: the model's generation_config (Qwen3-Thinking's 0.6 / 0.95 / 20, which
    make-tiny-model copies), seeded: the same seed gives the same answers, another seed others; greedy is the
    default verification relies on."""
    torch = pytest.importorskip("torch")
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer
    from thinktune.tiny_model import make_tiny_model
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path / "m", num_layers=1, log=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = load_qwen3_tokenizer()
    assert I.sampling_settings(model) == {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
    samples = [
        M.Sample(messages=[{"role": "user", "content": q}], reference="", id=str(n))
        for n, q in enumerate(["什么是SM4？", "AES-GCM 的 nonce 能重复吗？", "HMAC 是什么？"])
    ]

    def texts(**kw):
        return [g["text"] for g in I.generate(model, tok, samples, max_new_tokens=12, batch_size=2, **kw)]

    a, b = texts(sampling=True, seed=0), texts(sampling=True, seed=0)
    assert a == b and texts(sampling=True, seed=1) != a
    assert texts() == texts() != a  # greedy: deterministic, and not what sampling chose
