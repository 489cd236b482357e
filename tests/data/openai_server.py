"""A minimal OpenAI-compatible chat-completions server (stdlib http.server + transformers), for tests.

Usage: python tests/data/openai_server.py MODEL_DIR PORT_FILE [MAX_NEW_TOKENS]
Serves POST /v1/chat/completions with the local model (greedy decoding) on 127.0.0.1 and a free port, which it
writes to PORT_FILE once it is ready. The tiny random test model writes nonsense, which is the point: the
dataset build's quality gate has to reject it. `serve` is the one request handler that
scripted_openai_server.py (canned replies) uses too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(reply: Callable[[list[dict]], str], port_file: Path, log: Path | None = None) -> None:
    """Answer every chat-completions request with reply(messages); append each request's messages to `log`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_error(404, "only /v1/chat/completions")
                return
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if log is not None:
                with log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(req["messages"], ensure_ascii=False) + "\n")
            body = json.dumps(
                {
                    "object": "chat.completion",
                    "model": req.get("model", "default"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply(req["messages"])}}
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


def main() -> None:
    from thinktune.data.teacher import LocalTeacher  # transformers: only for this server, not for `serve`

    model_dir, port_file = sys.argv[1], Path(sys.argv[2])
    teacher = LocalTeacher(model_dir, max_new_tokens=int(sys.argv[3]) if len(sys.argv) > 3 else 48)
    serve(teacher.generate, port_file)


if __name__ == "__main__":
    main()
