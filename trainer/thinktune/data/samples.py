"""The Sample model (one training conversation) and the Reject record (anything that did not make it)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from thinktune.data.thinking import render_assistant

SAMPLE_TYPES = ("qa", "code", "thinking", "section")


@dataclass
class Sample:
    type: str  # qa | code | thinking | section
    style: str  # marker | faq_list | question_heading | section | code
    system: str
    question: str
    answer: str
    source_file: str
    source_line: int
    end_line: int
    heading: str = ""
    reasoning: str = ""
    thinking_method: str = ""  # source | template | model ('' until decided)
    generated_thinking: bool = False
    # provenance of the question and answer: the author's text, or a teacher model's (teacher_questions.py)
    generated_question: bool = False
    generated_answer: bool = False
    thinking_blocks: int = 0
    thinking_depth: int = 0
    thinking_line: int = 0
    quality: dict = field(default_factory=dict)
    terms: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_tokens: int = 0

    @property
    def source(self) -> str:
        return f"{self.source_file}:{self.source_line}"

    @property
    def id(self) -> str:
        h = hashlib.sha1(f"{self.source}|{self.style}|{self.question}".encode()).hexdigest()[:12]
        return f"{self.source_file}:{self.source_line}:{self.style}:{h}"

    def assistant(self) -> str:
        return render_assistant(self.reasoning, self.answer)

    def messages(self) -> list[dict[str, str]]:
        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": self.question})
        msgs.append({"role": "assistant", "content": self.assistant()})
        return msgs

    def row(self) -> dict:
        """One row of train/val/test.json: LLaMA Factory reads ``messages``; the rest is metadata it drops."""
        return {
            "messages": self.messages(),
            "id": self.id,
            "type": self.type,
            "style": self.style,
            "terms": list(self.terms),
            "source": self.source,
            "source_file": self.source_file,
            "source_line": int(self.source_line),
            "heading": self.heading,
            "generated_thinking": bool(self.generated_thinking),
            "generated_question": bool(self.generated_question),
            "generated_answer": bool(self.generated_answer),
            "thinking_method": self.thinking_method,
            "thinking_quality": float(self.quality.get("score", 0.0)),
            "n_tokens": int(self.n_tokens),
            "warnings": list(self.warnings),
        }


@dataclass
class Reject:
    source_file: str
    line: int
    reason: str
    fix: str = ""
    kind: str = "sample"  # sample | document | thinking | thinking_quality | duplicate | teacher_question
    col: int | None = None
    sample: dict | None = None  # question/answer excerpt or messages, for the reader

    @property
    def source(self) -> str:
        return f"{self.source_file}:{self.line}" + (f":{self.col}" if self.col else "")

    def record(self) -> dict:
        d = asdict(self)
        d["source"] = self.source
        return {k: v for k, v in d.items() if v is not None}
