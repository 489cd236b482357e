"""The Qwen3-4B-Thinking-2507 chat template, shipped with thinktune so nothing needs a hub.

The Jinja text lives in ``resources/qwen3_thinking_2507.jinja`` (Qwen's template, Apache-2.0). Two behaviours
matter for training a thinking model and are asserted by the tests:

* the generation prompt ends ``<|im_start|>assistant\\n<think>\\n`` -- the model's own output therefore
  starts inside the reasoning and contains only ``</think>``;
* assistant turns *before* the last user query lose their reasoning (only the answer is rendered), while
  turns after it render ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.

LLaMA Factory's ``qwen3`` template stops at ``assistant\\n`` instead (see notes/llamafactory.md §1), so the
training prompt and the inference prompt differ by the ``<think>\\n`` pre-fill; we keep the official template
on the tokenizer because exported models are served with it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

TEMPLATE_FILE = Path(__file__).parent / "resources" / "qwen3_thinking_2507.jinja"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# What the official template appends for add_generation_prompt=True.
GENERATION_PROMPT = "<|im_start|>assistant\n<think>\n"


@cache
def qwen3_thinking_chat_template() -> str:
    """Return the Jinja source of the Qwen3-Thinking-2507 chat template."""
    try:
        text = TEMPLATE_FILE.read_text(encoding="utf-8")
    except FileNotFoundError as exc:  # a broken install (package data not shipped) is the only way here
        raise FileNotFoundError(
            f"chat template {TEMPLATE_FILE} is missing from the thinktune package; reinstall thinktune "
            "(the wheel must include trainer/thinktune/resources/*.jinja)"
        ) from exc
    # The official template string has no trailing newline; the file does (editors add one).
    return text.removesuffix("\n")
