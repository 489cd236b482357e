"""Monitoring pieces: teacher-forced Chinese character / term accuracy with the real Qwen3 tokenizer
(thinktune.train.scoring), the TrainerCallback glue writing metrics.jsonl and console events, and the report and
console view reading what the callback wrote. The anomaly detector and the exporter have their own test files."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from thinktune.cjk import is_ideograph
from thinktune.data.glossary import load_glossary, surface_forms_longest_first
from thinktune.train.callbacks import ThinktuneCallback
from thinktune.train.console import CONSOLE_EVENTS, ConsoleView, decode_event, encode_event
from thinktune.train.scoring import TokenBytes, new_counts, score_batch, summarize_counts


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
    n_cjk = sum(is_ideograph(ch) for ch in "对称加密使用同一个密钥例如")
    assert s["teacher_forced_char_accuracy"] == 1.0 and s["token_accuracy"] == 1.0 and c["cjk_chars"] == n_cjk
    assert s["teacher_forced_term_accuracy"] == 1.0 and c["term_occurrences"] == 3
    assert s["terms"]["对称加密"] == {"occurrences": 1, "accuracy": 1.0}
    # all wrong
    c = new_counts()
    score_batch([[1] * len(ids)], [labels], tb, terms, c)
    s = summarize_counts(c)
    assert s["teacher_forced_char_accuracy"] == 0.0 and s["teacher_forced_term_accuracy"] == 0.0


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
    assert s["teacher_forced_term_accuracy"] == 0.5


def test_prompt_tokens_are_not_scored(tok):
    tb = TokenBytes(tok)
    ids, labels = _labels(tok, "对称加密对称加密对称加密", "好")
    c = new_counts()
    score_batch([ids[1:] + [0]], [labels], tb, ["对称加密"], c)
    assert c["term_occurrences"] == 0 and c["cjk_chars"] == 1


def test_training_scores_the_one_glossary_longest_first():
    terms = surface_forms_longest_first()
    assert (
        set(terms) == load_glossary().surface_forms and len(terms) > 500
    )  # the shipped glossary, aliases too
    assert terms == sorted(terms, key=lambda s: (-len(s), s))
    cb = ThinktuneCallback(output_dir="unused", metrics_port=None, progress=False)
    assert cb.terms == terms


# ------------------------------------------------------------------------------------ callback without trainer


def _state(step, max_steps=10, epoch=0.5, tokens=0):
    return SimpleNamespace(global_step=step, max_steps=max_steps, epoch=epoch, num_input_tokens_seen=tokens)


def _run_callback(cb: ThinktuneCallback, tmp_path) -> None:
    """Five logged steps, a NaN loss, an evaluation and the end, as the Trainer calls them."""
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
        logs = {
            "loss": 3.0 - 0.1 * s,
            "learning_rate": 1e-4,
            "grad_norm": 0.5,
            "num_input_tokens_seen": 100 * s,
        }
        cb.on_log(args, _state(s, tokens=100 * s), None, logs=logs)
    cb.on_log(args, _state(5), None, logs={"loss": float("nan"), "learning_rate": 1e-4})
    cb.on_evaluate(args, _state(5), None, metrics={"eval_loss": 2.5})
    cb.on_save(args, _state(5), None)
    cb.on_train_end(args, _state(5), None)


def test_callback_writes_metrics_jsonl_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.delenv("THINKTUNE_INJECT_OOM_AT_STEP", raising=False)
    cb = ThinktuneCallback(output_dir=tmp_path, job="j", metrics_port=None, progress=False, terms=["密钥"])
    _run_callback(cb, tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    types = [r["type"] for r in recs]
    assert types[:2] == ["begin", "train"] and types[-2:] == ["checkpoint", "end"]
    assert types.count("train") == 6 and types.count("eval") == 1
    train = [r for r in recs if r["type"] == "train"]
    assert train[-2]["tokens_seen"] == 500 and train[-2]["eta_seconds"] is not None
    assert train[0]["memory"][0]["rank"] == 0 and train[0]["memory"][0]["rss_bytes"] > 0
    (warning,) = [r for r in recs if r["type"] == "warning"]
    assert warning["kind"] == "nan" and warning["step"] == 5 and "loss is nan" in warning["message"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no status.json: nothing reads it


def test_callback_console_events_round_trip_to_the_view(tmp_path, monkeypatch, capsys):
    """The callback's real stdout, fed line by line to the launcher's real ConsoleView."""
    monkeypatch.delenv("THINKTUNE_INJECT_OOM_AT_STEP", raising=False)
    cb = ThinktuneCallback(output_dir=tmp_path, metrics_port=None, progress=True, terms=[])
    _run_callback(cb, tmp_path)
    lines = capsys.readouterr().out.splitlines()
    events = [decode_event(line) for line in lines]
    assert all(events), lines  # every line the callback prints is an event
    assert [e["type"] for e in events] == ["begin"] + ["train"] * 5 + ["warning", "train", "eval", "end"]
    for e in events:
        assert set(e) == {"type", *CONSOLE_EVENTS[e["type"]]}
    buf = io.StringIO()
    view = ConsoleView(buf, live=False)
    for line in lines:
        view.feed(line + "\n")
    out = buf.getvalue()
    assert "step 5/10 (50%)" in out and "val loss 2.5000" in out and "loss is nan at step 5" in out
    assert "training done at step 5" in out


def test_console_protocol_rejects_what_is_not_an_event():
    assert decode_event("[INFO] plain log line") is None
    assert decode_event(encode_event("end", {"step": 3})) == {"type": "end", "step": 3}
    assert decode_event('@@thinktune {"type": "unknown"}') is None
    assert decode_event("@@thinktune {not json") is None
    with pytest.raises(KeyError):
        encode_event("unknown", {})


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
                    "teacher_forced_char_accuracy": 0.1 + 0.02 * s,
                    "teacher_forced_term_accuracy": 0.01 * s,
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
    zh = r["chinese"]
    assert zh["teacher_forced_char_accuracy"] == pytest.approx(0.5)
    assert zh["teacher_forced_char_accuracy_first"] == pytest.approx(0.2)
    assert set(r["plots"]) == {"loss", "lr", "tokens_per_second", "memory", "teacher_forced_accuracy"}
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
    assert st.restarts.oom == 1 and st.metrics["teacherForcedCharAccuracy"] == pytest.approx(0.5)
    assert "charAccuracy" not in st.metrics  # that name is evaluation's (generated text)
    assert json.loads((tmp_path / "report.json").read_text())["outcome"] == "Succeeded"
    assert convergence([], [])["verdict"] == "unknown"
    bad = convergence([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 3.0}], [])
    assert bad["verdict"].startswith("not learning")


def test_console_view_renders_events_and_hides_noise():
    buf = io.StringIO()
    v = ConsoleView(buf, live=False)
    v.feed("[INFO|trainer.py:1] noisy library log line\n")
    v.feed(encode_event("begin", {"step": 0, "total_steps": 10, "world_size": 2}) + "\n")
    train = {
        "step": 5,
        "total_steps": 10,
        "loss": 1.5,
        "learning_rate": 1e-4,
        "tokens_per_second": 1234.5,
        "eta_seconds": 65,
    }
    # tqdm's \r-updated bar has no newline: the event follows it on the same line
    v.feed(" 50%|█████     | 5/10 [00:01<00:01,  2.81it/s]" + encode_event("train", train) + "\n")
    quality = {"teacher_forced_char_accuracy": 0.5, "teacher_forced_term_accuracy": None}
    v.feed(encode_event("eval", {"step": 5, "eval_loss": 1.4, **quality}) + "\n")
    v.feed(
        encode_event("warning", {"kind": "loss_spike", "step": 5, "message": "loss spike at step 5"}) + "\n"
    )
    v.feed("Traceback (most recent call last):\n")
    out = buf.getvalue()
    assert "noisy library" not in out
    assert "step 5/10 (50%)" in out and "1,234 tok/s" in out and "ETA 1m05s" in out
    assert "val loss 1.4000" in out and "char acc 0.500" in out and "term acc n/a" in out
    assert "loss spike at step 5" in out and "Traceback" in out and "2 process(es)" in out


def test_eval_quality_of_a_real_model_reaches_the_report(tmp_path):
    """The callback scores a (tiny, random) Qwen3 on a validation batch; build_report reads what it wrote."""
    torch = pytest.importorskip("torch")
    from thinktune.tiny_model import make_tiny_model
    from thinktune.train.report import build_report
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = make_tiny_model(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids, labels = _labels(tokenizer, "问：什么是对称加密？答：", "对称加密使用同一个密钥，例如 SM4。")
    batch = {"input_ids": torch.tensor([ids, ids]), "labels": torch.tensor([labels, labels])}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    out = tmp_path / "out"
    cb = ThinktuneCallback(output_dir=out, metrics_port=None, progress=False, max_eval_samples=1)
    args = SimpleNamespace(per_device_train_batch_size=1, gradient_accumulation_steps=1, output_dir=str(out))
    cb.on_train_begin(args, _state(0), None)
    cb.on_evaluate(
        args,
        _state(2),
        None,
        metrics={"eval_loss": 11.9},
        model=model,
        eval_dataloader=[batch],
        processing_class=tokenizer,
    )
    (ev,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert "quality_error" not in ev and ev["eval_samples_scored"] == 1
    assert ev["cjk_chars"] == sum(map(is_ideograph, "对称加密使用同一个密钥例如"))
    assert ev["term_occurrences"] >= 3  # 对称加密, 密钥, SM4 from the shipped glossary
    assert 0 <= ev["teacher_forced_char_accuracy"] <= 1 and 0 <= ev["teacher_forced_term_accuracy"] <= 1
    r = build_report(out, write=False)
    assert r["chinese"]["teacher_forced_char_accuracy"] == ev["teacher_forced_char_accuracy"]
    assert r["chinese"]["cjk_chars"] == ev["cjk_chars"]
