"""Teacher models: thinking for samples without an author's ``<thinking>`` (thinking.generate=model), and extra
questions per chunk answered with thinking (thinking.extraQuestionsPerChunk, see teacher_questions.py).

``thinking.teacherModel`` is either an OpenAI-compatible endpoint (``http(s)://host:port/v1``: vLLM, Ollama,
llama.cpp server, any hosted API; the request goes to ``{base}/chat/completions``) or a local transformers
model (a path or hub id). The prompts are Chinese and live in ``prompts/`` next to this file; the user prompt
carries the source chunk so the teacher is grounded in it. What a teacher writes is never trusted: the build
runs it through the same quality gate as rule-based thinking (restatement, structure, grounding, terms).
Proposed questions and answers are asked for as JSON (``{"questions": [...]}``, ``{"thinking": ..., "answer":
...}``); a thinking model's separate reasoning (vLLM ``reasoning_content``, or ``<think>…</think>`` before the
content) is taken as the thinking.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

from thinktune.data.thinking import clean_generated

PROMPTS = Path(__file__).parent / "prompts"
API_KEY_ENV = "THINKTUNE_TEACHER_API_KEY"  # bearer token for hosted endpoints (optional)


class TeacherError(Exception):
    """The teacher cannot be reached or answers with something other than a chat completion."""


@cache
def prompt(name: str) -> str:
    return (PROMPTS / f"{name}.txt").read_text(encoding="utf-8").strip()


def messages(question: str, answer: str, source: str | None = None) -> list[dict[str, str]]:
    user = prompt("thinking_user").format(source=source or answer, question=question, answer=answer)
    return [{"role": "system", "content": prompt("thinking_system")}, {"role": "user", "content": user}]


def question_messages(chunk: str, heading: str, author_questions: list[str], n: int) -> list[dict[str, str]]:
    asked = "\n".join(f"- {q}" for q in author_questions) or "（无）"
    user = prompt("questions_user").format(
        heading=heading or "（无）", chunk=chunk, author_questions=asked, n=n
    )
    return [{"role": "system", "content": prompt("questions_system")}, {"role": "user", "content": user}]


def answer_messages(question: str, chunk: str, heading: str) -> list[dict[str, str]]:
    user = prompt("answer_user").format(heading=heading or "（无）", chunk=chunk, question=question)
    return [{"role": "system", "content": prompt("answer_system")}, {"role": "user", "content": user}]


_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def _json_value(text: str):
    """The JSON object/array in a reply: the whole text, a ```json fence, or the outermost {...} / [...]."""
    candidates = [text.strip()] + [m.group(1).strip() for m in _JSON_FENCE.finditer(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        a, b = text.find(open_), text.rfind(close)
        if 0 <= a < b:
            candidates.append(text[a : b + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    return None


def parse_questions(text: str) -> list[str] | None:
    """The questions of a proposal reply (``{"questions": [...]}`` or a bare list); None when it has none."""
    value = _json_value(clean_generated(text))
    if isinstance(value, dict):
        value = value.get("questions", value.get("问题"))
    if not isinstance(value, list):
        return None
    return [q.strip() for q in value if isinstance(q, str) and q.strip()]


def parse_answer(content: str, reasoning: str = "") -> tuple[str, str] | None:
    """(thinking, answer) of an answer reply, or None when it holds no answer. The thinking is the server's
    separate reasoning, else ``<think>…</think>`` before the content, else the JSON ``thinking`` field."""
    value = _json_value(clean_generated(content) if "</think>" in content else content)
    if isinstance(value, dict) and isinstance(value.get("answer", value.get("答案")), str):
        thinking = value.get("thinking", value.get("思考过程", ""))
        return (reasoning or (thinking if isinstance(thinking, str) else "")).strip(), str(
            value.get("answer", value.get("答案"))
        ).strip()
    if "</think>" in content:
        head, tail = content.split("</think>", 1)
        return clean_generated(head), tail.strip()
    if reasoning and content.strip():
        return reasoning.strip(), content.strip()
    return None


class ChatTeacher:
    """What both teachers do with a chat reply (``chat`` returns the content and any separate reasoning)."""

    def chat(self, msgs: list[dict[str, str]], max_tokens: int) -> tuple[str, str]:
        raise NotImplementedError

    def reasoning(self, question: str, answer: str, source: str | None = None) -> str:
        content, reasoning = self.chat(messages(question, answer, source), self.max_tokens)
        # servers of thinking models may return the reasoning separately (vLLM: reasoning_content)
        return clean_generated(reasoning or content)

    def propose_questions(self, chunk: str, heading: str, author_questions: list[str], n: int) -> tuple:
        """(questions or None when the reply holds no question list, the raw reply for the reject record)."""
        content, _ = self.chat(question_messages(chunk, heading, author_questions, n), self.max_tokens)
        return parse_questions(content), content

    def answer(self, question: str, chunk: str, heading: str) -> tuple:
        """((thinking, answer) or None when the reply holds no answer, the raw reply)."""
        content, reasoning = self.chat(answer_messages(question, chunk, heading), 2 * self.max_tokens)
        return parse_answer(content, reasoning), content


class EndpointTeacher(ChatTeacher):
    """Any OpenAI-compatible ``/v1/chat/completions`` server."""

    def __init__(self, base_url: str, model: str = "default", max_tokens: int = 512, timeout: float = 120):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_tokens, self.timeout = model, max_tokens, timeout

    def chat(self, msgs: list[dict[str, str]], max_tokens: int) -> tuple[str, str]:
        body = {"model": self.model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0}
        headers = {"Content-Type": "application/json"}
        if os.environ.get(API_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data = json.loads(r.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TeacherError(
                f"teacher endpoint {self.url} failed: {exc}; check thinking.teacherModel and that the "
                "server is up"
            ) from exc
        try:
            msg = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise TeacherError(f"teacher endpoint {self.url} did not return a chat completion") from exc
        return msg.get("content") or "", msg.get("reasoning_content") or ""


class LocalTeacher(ChatTeacher):
    """A local causal LM (transformers AutoModelForCausalLM)."""

    def __init__(self, name_or_path: str, max_new_tokens: int = 384):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForCausalLM.from_pretrained(name_or_path)
        self.model.eval()
        self.max_new_tokens = self.max_tokens = max_new_tokens

    def generate(self, msgs: list[dict[str, str]], max_new_tokens: int | None = None) -> str:
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in msgs) + "\n\n"
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                do_sample=False,
                min_new_tokens=min(8, max_new_tokens or self.max_new_tokens),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def chat(self, msgs: list[dict[str, str]], max_tokens: int) -> tuple[str, str]:
        return self.generate(msgs, max_tokens), ""


def make_teacher(teacher_model: str, model_name: str | None = None):
    """The teacher named by ``thinking.teacherModel`` (endpoint URL, or local path / hub id)."""
    if teacher_model.startswith(("http://", "https://")):
        return EndpointTeacher(teacher_model, model_name or "default")
    return LocalTeacher(teacher_model)
