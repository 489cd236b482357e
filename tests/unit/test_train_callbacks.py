"""Monitoring pieces: Chinese character / term accuracy with the real Qwen3 tokenizer, anomaly detection,
the Prometheus exporter, status.json, and the report built from a metrics file."""

from __future__ import annotations

import json
import math
import urllib.request
from types import SimpleNamespace

import pytest
from thinktune.train.callbacks import (
    BUILTIN_TERMS,
    AnomalyDetector,
    PromMetrics,
    ThinktuneCallback,
    TokenBytes,
    is_cjk,
    load_terms,
    new_counts,
    score_batch,
    summarize_counts,
)


@pytest.fixture(scope="module")
def tok():
    from thinktune.qwen_tokenizer import load_qwen3_tokenizer

    return load_qwen3_tokenizer()


def _labels(tok, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    p = tok.encode(prompt, add_special_tokens=False)
    a = tok.encode(answer, add_special_tokens=False)
    return p + a, [-100] * len(p) + a


def test_token_bytes_roundtrip(tok):
    tb = TokenBytes(tok)
    text = "<think>\n椭圆曲线密码学（ECC）基于离散对数。\n</think>\n\nAES-256 与 SM4 都是分组密码。"
    ids = tok.encode(text, add_special_tokens=False)
    assert b"".join(tb(i) for i in ids).decode("utf-8") == text


def test_perfect_and_wrong_predictions(tok):
    tb = TokenBytes(tok)
    ids, labels = _labels(tok, "问：什么是对称加密？答：", "对称加密使用同一个密钥，例如 AES。")
    terms = ["对称加密", "密钥", "AES"]
    # perfect: the prediction at j-1 is the label at j
    perfect = ids[1:] + [0]
    c = new_counts()
    score_batch([perfect], [labels], tb, terms, c)
    s = summarize_counts(c)
    n_cjk = sum(is_cjk(ch) for ch in "对称加密使用同一个密钥例如")
    assert s["char_accuracy"] == 1.0 and s["token_accuracy"] == 1.0 and c["cjk_chars"] == n_cjk
    assert s["term_accuracy"] == 1.0 and c["term_occurrences"] == 3
    assert s["terms"]["对称加密"] == {"occurrences": 1, "accuracy": 1.0}
    # all wrong
    c = new_counts()
    score_batch([[1] * len(ids)], [labels], tb, terms, c)
    s = summarize_counts(c)
    assert s["char_accuracy"] == 0.0 and s["term_accuracy"] == 0.0


def test_one_wrong_token_breaks_exactly_its_characters_and_term(tok):
    tb = TokenBytes(tok)
    ids, labels = _labels(tok, "问：", "哈希函数和数字签名")
    answer_start = labels.index(next(x for x in labels if x != -100))
    pred = ids[1:] + [0]
    # break the first answer token (predicted at position answer_start - 1)
    first_tok = ids[answer_start]
    pred[answer_start - 1] = first_tok + 1
    c = new_counts()
    score_batch([pred], [labels], tb, ["哈希函数", "数字签名"], c)
    s = summarize_counts(c)
    first_chars = len(tb(first_tok).decode("utf-8", errors="ignore")) or 1
    assert c["cjk_correct"] == c["cjk_chars"] - first_chars
    assert s["terms"]["哈希函数"]["accuracy"] == 0.0 and s["terms"]["数字签名"]["accuracy"] == 1.0
    assert s["term_accuracy"] == 0.5


def test_prompt_tokens_are_not_scored(tok):
    tb = TokenBytes(tok)
    ids, labels = _labels(tok, "对称加密对称加密对称加密", "好")
    c = new_counts()
    score_batch([ids[1:] + [0]], [labels], tb, ["对称加密"], c)
    assert c["term_occurrences"] == 0 and c["cjk_chars"] == 1


def test_terms_loaded():
    terms = load_terms()
    assert len(terms) >= len(BUILTIN_TERMS) // 2
    assert terms == sorted(terms, key=lambda s: (-len(s), s))  # longest first


# ------------------------------------------------------------------------------------------------- anomalies


def test_nan_and_spike():
    d = AnomalyDetector(spike_factor=3.0)
    for i, v in enumerate([2.0, 2.1, 1.9, 2.0], start=1):
        assert d.on_train_log(i, v) == []
    kinds = [a["kind"] for a in d.on_train_log(5, 9.0)]
    assert kinds == ["loss_spike"]
    assert [a["kind"] for a in d.on_train_log(6, math.nan)] == ["nan"]
    assert [a["kind"] for a in d.on_train_log(7, 2.0, grad_norm=math.inf)] == ["nan"]


def test_divergence():
    d = AnomalyDetector(spike_factor=100.0)
    found = []
    for i, v in enumerate([2.0, 1.5, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], start=1):
        found += d.on_train_log(i, v)
    assert "divergence" in [a["kind"] for a in found]


def test_no_false_alarms_on_a_healthy_run():
    d = AnomalyDetector()
    found = []
    for i in range(1, 200):
        found += d.on_train_log(
            i,
            3.0 * math.exp(-i / 50) + 0.5 + 0.05 * math.sin(i),
            grad_norm=1.0,
            memory_bytes=10 * 2**30 + (i % 3) * 2**20,
        )
    for j, v in enumerate([2.0, 1.8, 1.7, 1.65, 1.6]):
        found += d.on_eval(j * 10, v)
    assert found == []


def test_plateau():
    d = AnomalyDetector(plateau_evals=3)
    out = []
    for i, v in enumerate([2.0, 1.5, 1.6, 1.55, 1.7]):
        out += d.on_eval(i, v)
    assert [a["kind"] for a in out] == ["plateau"]


def test_memory_growth():
    d = AnomalyDetector()
    out = []
    for i in range(1, 15):
        out += d.on_train_log(i, 1.0, memory_bytes=(4 + i) * 2**30)
    assert "memory_growth" in [a["kind"] for a in out]


# ------------------------------------------------------------------------------------------------ prometheus


def test_prometheus_endpoint_serves_documented_names():
    p = PromMetrics(job="ftj-a", namespace="team", rank=1, port=0)
    try:
        assert p.port
        p.set("loss", 1.25)
        p.set("tokens_per_second", 1234.0)
        p.set("gpu_memory_allocated_bytes", 5e9)
        p.set("eval_loss", float("nan"))  # ignored, not exported as NaN
        p.anomaly("loss_spike")
        body = urllib.request.urlopen(f"http://127.0.0.1:{p.port}/metrics", timeout=5).read().decode()
    finally:
        p.close()
    assert 'thinktune_train_loss{job="ftj-a",namespace="team",rank="1"} 1.25' in body
    assert 'thinktune_train_tokens_per_second{job="ftj-a",namespace="team",rank="1"} 1234.0' in body
    assert (
        'thinktune_train_anomalies_total{job="ftj-a",kind="loss_spike",namespace="team",rank="1"} 1.0' in body
    )
    assert "thinktune_train_gpu_memory_allocated_bytes" in body
    # every name the operator/dashboard query is documented in the module docstring
    import thinktune.train.callbacks as cb

    for name in PromMetrics.NAMES:
        assert f"thinktune_train_{name}" in cb.__doc__


# ------------------------------------------------------------------------------------ callback without trainer


def _state(step, max_steps=10, epoch=0.5, tokens=0):
    return SimpleNamespace(global_step=step, max_steps=max_steps, epoch=epoch, num_input_tokens_seen=tokens)


def test_callback_writes_metrics_and_status(tmp_path, monkeypatch):
    from thinktune.spec import TrainingProgress

    monkeypatch.delenv("THINKTUNE_INJECT_OOM_AT_STEP", raising=False)
    cb = ThinktuneCallback(output_dir=tmp_path, job="j", metrics_port=None, progress=False, terms=["密钥"])
    args = SimpleNamespace(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        gradient_checkpointing=False,
        output_dir=str(tmp_path),
    )
    cb.on_train_begin(args, _state(0), None)
    for s in range(1, 6):
        cb.on_step_begin(args, _state(s - 1), None)
        cb.on_step_end(args, _state(s), None)
        cb.on_log(
            args,
            _state(s, tokens=100 * s),
            None,
            logs={
                "loss": 3.0 - 0.1 * s,
                "learning_rate": 1e-4,
                "grad_norm": 0.5,
                "num_input_tokens_seen": 100 * s,
            },
        )
    cb.on_log(args, _state(5), None, logs={"loss": float("nan"), "learning_rate": 1e-4})
    cb.on_evaluate(args, _state(5), None, metrics={"eval_loss": 2.5})
    cb.on_train_end(args, _state(5), None)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in recs][:2] == ["begin", "train"]
    assert any(r["type"] == "warning" and r["kind"] == "nan" for r in recs)
    st = json.loads((tmp_path / "status.json").read_text())
    prog = TrainingProgress.model_validate(st)
    assert prog.step == 5 and prog.total_steps == 10 and prog.percent == 50 and prog.eval_loss == 2.5
    assert st["phase"] == "Finished" and st["summary"] == "5/10 (50%)" and st["warnings"]


def test_callback_injects_oom(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("THINKTUNE_INJECT_OOM_AT_STEP", "3")
    cb = ThinktuneCallback(output_dir=tmp_path, metrics_port=None, progress=False, terms=[])
    args = SimpleNamespace(per_device_train_batch_size=2)
    cb.on_step_end(args, _state(2), None)
    with pytest.raises(torch.OutOfMemoryError, match="INJECTED"):
        cb.on_step_end(args, _state(3), None)
    cb.on_step_end(SimpleNamespace(per_device_train_batch_size=1), _state(3), None)  # smaller batch "fits"


# ------------------------------------------------------------------------------------------------ report


def test_report_from_metrics(tmp_path):
    from thinktune.train.report import build_report, convergence

    lines = [{"type": "begin", "step": 0}]
    for s in range(1, 21):
        lines.append(
            {
                "type": "train",
                "step": s,
                "loss": 3.0 - 0.1 * s,
                "learning_rate": 1e-4 * (1 - s / 20),
                "tokens_per_second": 1000 + s,
                "memory": [
                    {"rank": 0, "allocated_bytes": 2**30, "peak_bytes": 2**31},
                    {"rank": 1, "allocated_bytes": 2**30, "peak_bytes": 2**31},
                ],
            }
        )
        if s % 5 == 0:
            lines.append(
                {
                    "type": "eval",
                    "step": s,
                    "eval_loss": 2.9 - 0.08 * s,
                    "char_accuracy": 0.1 + 0.02 * s,
                    "term_accuracy": 0.01 * s,
                    "term_token_accuracy": 0.02 * s,
                    "token_accuracy": 0.3,
                    "cjk_chars": 100,
                    "term_occurrences": 10,
                    "terms": {"密钥": {"occurrences": 4, "accuracy": 0.5}},
                }
            )
    # a resumed attempt repeats step 20 with a different loss: the later record wins
    lines.append({"type": "train", "step": 20, "loss": 0.95, "learning_rate": 0.0, "tokens_per_second": 900})
    lines.append({"type": "warning", "kind": "loss_spike", "step": 7, "message": "loss spike at step 7"})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    r = build_report(
        tmp_path,
        plan={"strategy": "ddp", "total_steps": 20, "explanations": ["because"]},
        attempts=[
            {"attempt": 0, "outcome": "oom", "returncode": 76, "duration_s": 10},
            {
                "attempt": 1,
                "outcome": "succeeded",
                "returncode": 0,
                "duration_s": 20,
                "resumed_from": "/o/checkpoint-15",
            },
        ],
        oom_retries=[
            {
                "attempt": 1,
                "at_step": 17,
                "from": {"micro_batch": 4, "grad_accum": 1, "gradient_checkpointing": False},
                "to": {"micro_batch": 2, "grad_accum": 2, "gradient_checkpointing": True},
            }
        ],
        warnings=["plan warning"],
        adapter_path=str(tmp_path),
    )
    c = r["convergence"]
    assert c["loss_decreased"] and c["last_loss"] < c["first_loss"] and c["verdict"] == "converging"
    assert r["chinese"]["char_accuracy"] == pytest.approx(0.5) and r["chinese"][
        "char_accuracy_first"
    ] == pytest.approx(0.2)
    assert set(r["plots"]) == {"loss", "lr", "tokens_per_second", "memory", "term_accuracy"}
    for rel in r["plots"].values():
        assert (tmp_path / rel).stat().st_size > 1000
    md = (tmp_path / "report.md").read_text()
    for needle in (
        "## Convergence",
        "Chinese character accuracy",
        "OOM retry 1 at step 17",
        "plan warning",
        "loss spike at step 7",
        "![loss](plots/loss.png)",
        "because",
        "resumed from /o/checkpoint-15",
    ):
        assert needle in md, needle
    from thinktune.spec import FineTuneJobStatus

    st = FineTuneJobStatus.model_validate(r["status"])
    assert st.restarts.oom == 1 and st.metrics["charAccuracy"] == pytest.approx(0.5)
    assert json.loads((tmp_path / "report.json").read_text())["outcome"] == "Succeeded"
    assert convergence([], [])["verdict"] == "unknown"
    bad = convergence([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 3.0}], [])
    assert bad["verdict"].startswith("not converging")


def test_console_view_renders_events_and_hides_noise():
    import io

    from thinktune.train.callbacks import CONSOLE_PREFIX
    from thinktune.train.console import ConsoleView

    buf = io.StringIO()
    v = ConsoleView(buf, live=False)
    v.feed("[INFO|trainer.py:1] noisy library log line\n")
    v.feed(
        CONSOLE_PREFIX + json.dumps({"type": "begin", "step": 0, "total_steps": 10, "world_size": 2}) + "\n"
    )
    v.feed(
        " 50%|█████     | 5/10 [00:01<00:01,  2.81it/s]"
        + CONSOLE_PREFIX
        + json.dumps(
            {
                "type": "train",
                "step": 5,
                "total_steps": 10,
                "loss": 1.5,
                "learning_rate": 1e-4,
                "tokens_per_second": 1234.5,
                "eta_seconds": 65,
            }
        )
        + "\n"
    )
    v.feed(
        CONSOLE_PREFIX
        + json.dumps(
            {"type": "eval", "step": 5, "eval_loss": 1.4, "char_accuracy": 0.5, "term_accuracy": None}
        )
        + "\n"
    )
    v.feed(CONSOLE_PREFIX + json.dumps({"type": "warning", "message": "loss spike at step 5"}) + "\n")
    v.feed("Traceback (most recent call last):\n")
    out = buf.getvalue()
    assert "noisy library" not in out
    assert "step 5/10 (50%)" in out and "1,234 tok/s" in out and "ETA 1m05s" in out
    assert "val loss 1.4000" in out and "char acc 0.500" in out and "term acc n/a" in out
    assert "loss spike at step 5" in out and "Traceback" in out and "2 process(es)" in out
