"""Teacher models that write thinking for samples without an author's ``<thinking>`` (thinking.generate=model).

``thinking.teacherModel`` is either an OpenAI-compatible endpoint (``http(s)://host:port/v1``: vLLM, Ollama,
llama.cpp server, any hosted API; the request goes to ``{base}/chat/completions``) or a local transformers
model (a path or hub id). The prompts are Chinese and live in ``prompts/`` next to this file; the user prompt
carries the source chunk so the teacher is grounded in it. What a teacher writes is never trusted: the build
runs it through the same quality gate as rule-based thinking (restatement, structure, grounding, terms).
"""

from __future__ import annotations

import json
import os
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


class EndpointTeacher:
    """Any OpenAI-compatible ``/v1/chat/completions`` server."""

    def __init__(self, base_url: str, model: str = "default", max_tokens: int = 512, timeout: float = 120):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_tokens, self.timeout = model, max_tokens, timeout

    def reasoning(self, question: str, answer: str, source: str | None = None) -> str:
        body = {
            "model": self.model,
            "messages": messages(question, answer, source),
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
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
        # servers of thinking models may return the reasoning separately (vLLM: reasoning_content)
        text = msg.get("reasoning_content") or msg.get("content") or ""
        return clean_generated(text)


class LocalTeacher:
    """A local causal LM (transformers AutoModelForCausalLM)."""

    def __init__(self, name_or_path: str, max_new_tokens: int = 384):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModelForCausalLM.from_pretrained(name_or_path)
        self.model.eval()
        self.max_new_tokens = max_new_tokens

    def generate(self, msgs: list[dict[str, str]]) -> str:
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in msgs) + "\n\n"
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                min_new_tokens=min(8, self.max_new_tokens),
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def reasoning(self, question: str, answer: str, source: str | None = None) -> str:
        return clean_generated(self.generate(messages(question, answer, source)))


def make_teacher(teacher_model: str, model_name: str | None = None):
    """The teacher named by ``thinking.teacherModel`` (endpoint URL, or local path / hub id)."""
    if teacher_model.startswith(("http://", "https://")):
        return EndpointTeacher(teacher_model, model_name or "default")
    return LocalTeacher(teacher_model)
