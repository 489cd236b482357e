"""thinking.generate=model against a real OpenAI-compatible HTTP server process (tests/data/openai_server.py)
serving the tiny random Qwen3 through transformers. Its output is nonsense, so the quality gate must reject
every generated thinking, each traced in rejects.jsonl; the author's own thinking is kept."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from thinktune.data.build import DatasetBuildError, build_dataset
from thinktune.data.teacher import EndpointTeacher, TeacherError, messages
from thinktune.spec import DatasetBuildSpec

ROOT = Path(__file__).resolve().parents[2]


class CharTok:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("teacher") / "model"
    subprocess.run([str(Path(sys.executable).parent / "thinktune"), "make-tiny-model", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def endpoint(tiny, tmp_path_factory):
    port_file = tmp_path_factory.mktemp("srv") / "port"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "data" / "openai_server.py"), str(tiny), str(port_file), "32"]
    )
    try:
        deadline = time.time() + 120
        while not port_file.exists() or not port_file.read_text():
            assert proc.poll() is None, "teacher server exited"
            assert time.time() < deadline, "teacher server did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port_file.read_text()}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prompts_are_chinese_and_carry_the_source_chunk():
    m = messages("为什么要加盐？", "盐让杂凑不同。", source="原文：盐让相同口令得到不同杂凑值。")
    assert m[0]["role"] == "system" and "思考过程" in m[0]["content"] and "分析" in m[0]["content"]
    assert "原文：盐让相同口令" in m[1]["content"] and "为什么要加盐？" in m[1]["content"]


def test_endpoint_teacher_nonsense_is_rejected_by_the_quality_gate(endpoint, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text(
        "# 盐\n\n问：为什么要加盐？\n答：盐让相同口令得到不同杂凑值，彩虹表因此失效。\n\n"
        "问：盐要保密吗？\n<thinking>\n分析：盐的作用是让杂凑不同。\n首先，它与口令一起存储；因此攻击者本来就能看到。\n"
        "结论：盐不需要保密。\n</thinking>\n答：盐不需要保密，但每个用户要不同。\n",
        encoding="utf-8",
    )
    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": str(src)},
            "output": {"path": str(tmp_path / "o")},
            "thinking": {"generate": "model", "teacherModel": endpoint, "teacherModelName": "tiny"},
            "validation": {"cutoffLen": 100000},
        }
    )
    rep = build_dataset(spec, src, tmp_path / "o", progress=False, tokenizer=CharTok())
    rej = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    gate = [r for r in rej if r["kind"] == "thinking_quality" or "teacher model produced no" in r["reason"]]
    assert [r["source"] for r in gate] == ["a.md:3"]
    assert rep["thinking"]["model"] == 0 and rep["thinking"]["source"] == 1 and rep["counts"]["samples"] == 1
    assert rep["thinking"]["author_share"] == 1.0


def test_unreachable_endpoint_is_one_clear_error(tmp_path):
    with pytest.raises(TeacherError, match=r"teacher endpoint http://127.0.0.1:9/v1/chat/completions failed"):
        EndpointTeacher("http://127.0.0.1:9/v1", timeout=5).reasoning("问？", "答。")
    src = tmp_path / "s"
    src.mkdir()
    (src / "a.md").write_text("# t\n\n问：为什么？\n答：因为如此。\n", encoding="utf-8")
    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": "x"},
            "output": {"path": "y"},
            "thinking": {"generate": "model", "teacherModel": "http://127.0.0.1:9/v1"},
        }
    )
    with pytest.raises(DatasetBuildError, match="check thinking.teacherModel"):
        build_dataset(spec, src, tmp_path / "o", progress=False, tokenizer=CharTok())
