"""A scripted OpenAI-compatible chat-completions server (stdlib only), for tests of the teacher path.

Usage: python tests/data/scripted_openai_server.py SCRIPT_JSON PORT_FILE LOG_JSONL
SCRIPT_JSON: {"questions": "<reply to a question-proposal request>",
              "answers": {"<question>": "<reply to the request that answers it>", ...}}
Which request is which comes from the system prompt the client sends (trainer/thinktune/data/prompts/): the
proposal prompt asks to 提出…问题, the answer prompt to 回答问题. An answer request for a question not in the
script gets a non-JSON reply. Serves POST /v1/chat/completions on 127.0.0.1 and a free port, which it writes
to PORT_FILE once listening; every request's messages are appended to LOG_JSONL so a test can check what the
teacher was shown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from openai_server import serve  # the sibling script's handler (this script's folder is on sys.path)


def reply_for(script: dict, msgs: list[dict]) -> str:
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    user = next((m["content"] for m in msgs if m["role"] == "user"), "")
    if "提出训练用的问题" in system:
        return script["questions"]
    if "回答问题" in system:
        asked = user.rsplit("问题：", 1)[-1].strip()
        return script["answers"].get(asked, "这个问题我不太清楚。")
    return ""


def main() -> None:
    script = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    serve(lambda msgs: reply_for(script, msgs), Path(sys.argv[2]), log=Path(sys.argv[3]))


if __name__ == "__main__":
    main()
