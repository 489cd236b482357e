"""The teacher path against real OpenAI-compatible HTTP server processes.

tests/data/openai_server.py serves the tiny random Qwen3 through transformers: its output is nonsense, so the
quality gate must reject every generated thinking and every extra question, each traced in rejects.jsonl;
the author's own thinking is kept. tests/data/scripted_openai_server.py returns canned replies: grounded
extra questions with real reasoning are kept (marked teacher-generated), hallucinated, restating, duplicate
and surplus ones are rejected with their reason and counted in the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from thinktune.data.build import DatasetBuildError, build_dataset
from thinktune.data.teacher import EndpointTeacher, TeacherError, messages, parse_answer, parse_questions
from thinktune.data.teacher_questions import similarity
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


def serve(args: list[str], port_file: Path):
    """Start a server script; yield its base URL once it has written its port; stop it afterwards."""
    proc = subprocess.Popen([sys.executable, *args])
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


@pytest.fixture(scope="module")
def endpoint(tiny, tmp_path_factory):
    port_file = tmp_path_factory.mktemp("srv") / "port"
    yield from serve(
        [str(ROOT / "tests" / "data" / "openai_server.py"), str(tiny), str(port_file), "32"], port_file
    )


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


# --- extra questions per chunk ------------------------------------------------------------------------------

CHUNK = (
    "盐是为每个口令单独生成的随机值，与口令一起输入杂凑函数。相同的口令配上不同的盐，会得到不同的杂凑值，"
    "因此攻击者无法用一张预先计算好的彩虹表同时破解所有账户。盐本身不需要保密，通常与杂凑值一起存放在数据库中。"
    "盐的长度一般至少为 16 字节，并由密码学安全的随机数生成器产生。"
)
DOC = f"# 口令存储\n\n## 加盐\n\n{CHUNK}\n\n问：为什么要加盐？\n答：加盐让相同口令得到不同杂凑值，彩虹表因此失效。\n"
GOOD = {
    "盐应该由什么生成，长度至少多少？": {
        "thinking": "分析：问题问的是盐由什么产生、长度要求是多少，需要从原文中找到盐的生成方式和长度的说明。\n"
        "推理步骤：\n1. 原文说盐是为每个口令单独生成的随机值，所以它必须难以预测。\n"
        "2. 原文进一步要求盐由密码学安全的随机数生成器产生。\n3. 关于长度，原文给出的下限是 16 字节。\n"
        "验证：两点都直接来自原文的最后一句，没有引入原文之外的说法，结论回答了问题的两个部分。",
        "answer": "盐应当由密码学安全的随机数生成器产生，长度一般至少为 16 字节。",
    },
    "彩虹表为什么对加盐的口令失效？": {
        "thinking": "分析：问题要说明彩虹表为什么失效，关键是彩虹表依赖什么前提。\n推理步骤：\n"
        "1. 彩虹表是预先计算好的，它假设相同的口令总是得到相同的杂凑值。\n"
        "2. 原文指出每个口令配有单独生成的盐，相同的口令配上不同的盐会得到不同的杂凑值。\n"
        "3. 因此一张预先计算好的表无法同时对应所有账户。\n验证：这个推理只用了原文中盐与杂凑值的关系，结论回答了为什么失效。",
        "answer": "因为每个口令都有自己的盐，相同口令的杂凑值各不相同，预先计算好的彩虹表无法同时破解所有账户。",
    },
}
BAD = {
    # names and numbers the chunk never mentions
    "盐和 PBKDF2 的迭代次数应如何设置？": {
        "thinking": "分析：问题问 PBKDF2 的参数。\n推理步骤：\n1. PBKDF2 需要迭代次数。\n2. 推荐 600000 次。\n"
        "验证：因此选 600000 次。",
        "answer": "PBKDF2 的迭代次数应设为 600000 次，并使用 HMAC-SHA256 作为伪随机函数；Argon2id 比它更好。",
    },
    # claims in plain Chinese that the chunk does not make
    "盐需要多久更换一次？": {
        "thinking": "分析：问题问盐的更换周期。\n推理步骤：\n1. 盐会过期。\n2. 所以要定期更换。\n验证：因此每月更换。",
        "answer": "盐应当定期更换，每个月重新生成一次。旧盐必须立即销毁，否则管理员可以反推出口令。",
    },
    # the thinking is the answer again
    "盐需要保密吗？": {
        "thinking": "盐本身不需要保密，通常与杂凑值一起存放在数据库中。",
        "answer": "盐本身不需要保密，通常与杂凑值一起存放在数据库中。",
    },
}
DUPLICATE = "为什么需要加盐？"  # the author asks 为什么要加盐？ in the same section
SURPLUS = "盐存放在哪里？"  # the 7th proposal when 6 are asked for
PROPOSED = [*GOOD][:1] + [DUPLICATE] + [*BAD] + [*GOOD][1:] + [SURPLUS]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    d = tmp_path_factory.mktemp("scripted")
    answers = {q: json.dumps(a, ensure_ascii=False) for q, a in {**GOOD, **BAD}.items()}
    answers[SURPLUS] = json.dumps({"thinking": "分析：", "answer": "数据库。"}, ensure_ascii=False)
    script = {
        "questions": "```json\n" + json.dumps({"questions": PROPOSED}, ensure_ascii=False) + "\n```",
        "answers": answers,
    }
    (d / "script.json").write_text(json.dumps(script, ensure_ascii=False), encoding="utf-8")
    args = [
        str(ROOT / "tests" / "data" / "scripted_openai_server.py"),
        str(d / "script.json"),
        str(d / "port"),
    ]
    for url in serve([*args, str(d / "log.jsonl")], d / "port"):
        yield url, d / "log.jsonl"


def extra_build(tmp_path: Path, teacher: str, n: int, generate: str = "template", name: str | None = None):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "salt.md").write_text(DOC, encoding="utf-8")
    thinking = {"generate": generate, "teacherModel": teacher, "extraQuestionsPerChunk": n}
    if name:
        thinking["teacherModelName"] = name
    spec = DatasetBuildSpec.model_validate(
        {
            "source": {"path": str(src)},
            "output": {"path": str(tmp_path / "o")},
            "thinking": thinking,
            "validation": {"cutoffLen": 100000},
        }
    )
    rep = build_dataset(spec, src, tmp_path / "o", progress=False, tokenizer=CharTok())
    data = [
        r for n_ in ("train", "val", "test") for r in json.loads((tmp_path / "o" / f"{n_}.json").read_text())
    ]
    rej = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    return rep, data, rej


def test_scripted_teacher_keeps_grounded_questions_and_rejects_the_rest(scripted, tmp_path):
    url, log = scripted
    rep, data, rej = extra_build(tmp_path, url, 6)
    teacher_rows = [r for r in data if r["style"] == "teacher"]
    assert sorted(r["messages"][-2]["content"] for r in teacher_rows) == sorted(GOOD)
    for r in teacher_rows:
        assert r["generated_question"] and r["generated_answer"] and r["generated_thinking"]
        assert r["thinking_method"] == "model" and r["source"] == "salt.md:3"
        reasoning, answer = r["messages"][-1]["content"].removeprefix("<think>\n").split("\n</think>\n\n")
        assert (reasoning, answer) == (
            GOOD[r["messages"][-2]["content"]]["thinking"],
            GOOD[r["messages"][-2]["content"]]["answer"],
        )
    # the author's own samples are not marked as the teacher's
    authored = [r for r in data if r["style"] != "teacher"]
    assert authored and not any(r["generated_question"] or r["generated_answer"] for r in authored)

    mine = [r for r in rej if r["kind"] == "teacher_question"]
    by_q = {r["sample"]["question"]: r["reason"] for r in mine}
    assert set(by_q) == {DUPLICATE, SURPLUS, *BAD}
    assert by_q[DUPLICATE].startswith(
        "teacher question rejected: duplicate of the author's question: '为什么要加盐？'"
    )
    assert (
        by_q[SURPLUS] == "teacher question rejected: beyond extraQuestionsPerChunk: 7 proposed, 6 asked for"
    )
    for q in ("盐和 PBKDF2 的迭代次数应如何设置？", "盐需要多久更换一次？"):
        assert by_q[q].startswith("teacher question rejected: answer not grounded in the chunk: 0% supported")
    assert by_q["盐需要保密吗？"].startswith(
        "teacher question rejected: thinking rejected by the quality gate"
    )
    assert "restates the answer" in by_q["盐需要保密吗？"]

    tq = rep["teacher_questions"]
    assert tq == {
        "per_chunk": 6,
        "chunks": 1,
        "proposed": 7,
        "passed_gate": 2,
        "kept": 2,
        "rejected": {
            "beyond extraQuestionsPerChunk": 1,
            "duplicate of the author's question": 1,
            "answer not grounded in the chunk": 2,
            "thinking rejected by the quality gate": 1,
        },
    }
    assert rep["rejects_by_reason"]["teacher question rejected: answer not grounded in the chunk"] == 2
    # what the teacher was shown: the chunk and the author's question in the proposal; the chunk with each answer
    reqs = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    proposal = next(m for m in reqs if "提出训练用的问题" in m[0]["content"])
    assert CHUNK in proposal[1]["content"] and "- 为什么要加盐？" in proposal[1]["content"]
    assert "最多 6 个" in proposal[1]["content"] and "加盐" in proposal[1]["content"]
    answered = [m for m in reqs if "回答问题" in m[0]["content"]]
    assert len(answered) == 5 and all(CHUNK in m[1]["content"] for m in answered)


def test_reply_parsing_and_question_similarity():
    assert parse_questions('好的：\n{"questions": ["甲？", " ", "乙？"]}') == ["甲？", "乙？"]
    assert parse_questions('["甲？"]') == ["甲？"] and parse_questions("甲？乙？") is None
    assert parse_answer('{"thinking": "想", "answer": "答"}') == ("想", "答")
    assert parse_answer("<think>\n想\n</think>\n\n答") == ("想", "答")
    assert parse_answer("答", reasoning="想") == ("想", "答") and parse_answer("胡言乱语") is None
    assert (
        similarity("为什么要加盐？", "为什么需要加盐？")
        >= 0.7
        > similarity("为什么要加盐？", "彩虹表为什么对加盐的口令失效？")
    )


def test_tiny_model_extra_questions_are_all_rejected(endpoint, tmp_path):
    rep, data, rej = extra_build(tmp_path, endpoint, 2, name="tiny")
    assert data and not any(r["generated_question"] or r["generated_answer"] for r in data)
    mine = [r for r in rej if r["kind"] == "teacher_question"]
    tq = rep["teacher_questions"]
    assert tq["chunks"] == 1 and tq["kept"] == 0 and tq["passed_gate"] == 0
    assert sum(tq["rejected"].values()) == len(mine) >= 1
    assert all(
        r["source"] == "salt.md:3" and r["reason"].startswith("teacher question rejected: ") for r in mine
    )


def test_unreachable_teacher_for_extra_questions_is_one_clear_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "salt.md").write_text(DOC, encoding="utf-8")
    (tmp_path / "dsb.yaml").write_text(
        "apiVersion: thinktune.io/v1alpha1\nkind: DatasetBuild\nmetadata: {name: t}\nspec:\n"
        "  source: {path: src}\n  output: {path: out}\n"
        "  thinking: {teacherModel: 'http://127.0.0.1:9/v1', extraQuestionsPerChunk: 2}\n",
        encoding="utf-8",
    )
    cli = Path(sys.executable).parent / "thinktune"
    r = subprocess.run(
        [str(cli), "dataset", "build", "-f", str(tmp_path / "dsb.yaml"), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        timeout=300,
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in (r.stderr + r.stdout).splitlines() if "teacher endpoint" in ln]
    assert len(lines) == 1 and "http://127.0.0.1:9/v1/chat/completions failed" in lines[0]
    assert "check thinking.teacherModel" in lines[0]


def test_extra_questions_need_a_teacher():
    with pytest.raises(ValueError, match="teacherModel is required when thinking.extraQuestionsPerChunk"):
        DatasetBuildSpec.model_validate(
            {"source": {"path": "x"}, "output": {"path": "y"}, "thinking": {"extraQuestionsPerChunk": 1}}
        )
