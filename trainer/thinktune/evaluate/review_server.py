"""``thinktune review serve``: the expert review page on a local web server.

The page (``review_static/``) shows one test item at a time: the question, the reference answer (its reasoning
collapsed), and the answers of the fine-tuned and the base model as "A" and "B" in an order that
:func:`thinktune.evaluate.review.blind_order` fixes per reviewer and item, so the reviewer does not know which is
which. For each answer the reviewer scores accuracy, fluency and professionalism 1-5, answers the domain rubric
(yes/no) and may comment; per item they pick the better answer (A, B or a tie). Every change is sent at once and
stored by :class:`thinktune.evaluate.review.ReviewStore` (SQLite) before the page shows it as saved, so closing
the browser loses nothing; several reviewers use the same server, each under their name. The browser only ever
sees the letters: the server maps them to models when it stores a value.

``thinktune review import review.sqlite`` aggregates the store like a sheet (thinktune.evaluate.review).
"""

from __future__ import annotations

import json
import mimetypes
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from thinktune.evaluate.review import (
    CRITERIA,
    RUBRIC,
    SCORE_MAX,
    SCORE_MIN,
    ReviewStore,
    ReviewValueError,
    blind_order,
    review_items,
)

STATIC = Path(__file__).with_name("review_static")
MAX_BODY = 64 * 1024
MAX_REVIEWER = 64
SLOTS = "ABCDEFGH"


class ReviewRequestError(ValueError):
    """A request the page should not have sent; answered 400 with this message."""


class ReviewApp:
    """The review page's data: items from predictions.jsonl, scores in the store, letters <-> models."""

    def __init__(self, predictions: str | Path, store_path: str | Path):
        self.items = review_items(predictions)
        if not self.items:
            raise ReviewRequestError(f"{predictions} has no predictions to review")
        self.by_id = {i["id"]: i for i in self.items}
        self.store = ReviewStore(store_path)
        self.store_path = Path(store_path)

    @staticmethod
    def reviewer_name(value: Any) -> str:
        name = str(value or "").strip()
        if not name or len(name) > MAX_REVIEWER:
            raise ReviewRequestError(f"reviewer must be a name of 1-{MAX_REVIEWER} characters")
        return name

    def slots(self, item: dict[str, Any], reviewer: str) -> dict[str, str]:
        """{letter: model} for this reviewer and item."""
        return dict(zip(SLOTS, blind_order(item["id"], reviewer, list(item["answers"])), strict=False))

    def payload(self, reviewer: str) -> dict[str, Any]:
        """Everything the page shows to ``reviewer``, with their saved values, under letters only."""
        reviewer = self.reviewer_name(reviewer)
        saved: dict[tuple[str, str], dict[str, str]] = {}
        for _, item_id, model, field, value in self.store.fields(reviewer):
            saved.setdefault((item_id, model), {})[field] = value
        items = []
        for item in self.items:
            slots = self.slots(item, reviewer)
            letter_of = {m: s for s, m in slots.items()}
            pref = saved.get((item["id"], ""), {}).get("preference")
            items.append(
                {
                    "id": item["id"],
                    "question": item["question"],
                    "referenceThinking": item["referenceThinking"],
                    "referenceAnswer": item["referenceAnswer"],
                    "answers": [
                        {"slot": s, **item["answers"][m], "saved": saved.get((item["id"], m), {})}
                        for s, m in slots.items()
                    ],
                    "preference": letter_of.get(pref, pref),
                }
            )
        return {
            "reviewer": reviewer,
            "criteria": list(CRITERIA),
            "scoreMin": SCORE_MIN,
            "scoreMax": SCORE_MAX,
            "rubric": [{"key": k, "label": label} for k, label in RUBRIC],
            "items": items,
            "store": str(self.store_path),
        }

    def save(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store one field: {reviewer, item, slot ("A".. or "" for the preference), field, value}."""
        reviewer = self.reviewer_name(body.get("reviewer"))
        item = self.by_id.get(str(body.get("item", "")))
        if item is None:
            raise ReviewRequestError(f"unknown item {body.get('item')!r}")
        slots = self.slots(item, reviewer)
        field, value, slot = str(body.get("field", "")), body.get("value"), str(body.get("slot") or "")
        if field == "preference":
            if value not in (None, "", "tie") and value not in slots:
                raise ReviewRequestError(f"preference must be one of {', '.join(slots)} or tie")
            model, value = "", slots.get(value, value)
        elif slot in slots:
            model = slots[slot]
        else:
            raise ReviewRequestError(
                f"item {item['id']} has no answer {slot!r} (answers: {', '.join(slots)})"
            )
        try:
            at = self.store.save(reviewer, item["id"], model, field, value)
        except ReviewValueError as e:
            raise ReviewRequestError(str(e)) from None
        return {"saved": at}


def _handler(app: ReviewApp) -> type[BaseHTTPRequestHandler]:
    static = {p.name: p for p in STATIC.iterdir() if p.is_file()}

    class Handler(BaseHTTPRequestHandler):
        server_version = "thinktune-review"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # one line per score would drown the URL the reviewer needs; errors go back to the page

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(
                status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8"
            )

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            name = "index.html" if url.path in ("/", "/index.html") else url.path.removeprefix("/static/")
            if url.path == "/api/items":
                try:
                    self._json(200, app.payload(parse_qs(url.query).get("reviewer", [""])[0]))
                except ReviewRequestError as e:
                    self._json(400, {"error": str(e)})
            elif name in static and (url.path.startswith("/static/") or name == "index.html"):
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                self._send(200, static[name].read_bytes(), f"{ctype}; charset=utf-8")
            else:
                self._json(404, {"error": f"no such page {url.path}"})

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if urlparse(self.path).path != "/api/save":
                self._json(404, {"error": f"no such endpoint {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"request over {MAX_BODY} bytes"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ReviewRequestError("send a JSON object")
                self._json(200, app.save(body))
            except (ReviewRequestError, json.JSONDecodeError) as e:
                self._json(400, {"error": str(e)})

    return Handler


def make_server(
    predictions: str | Path, store: str | Path, *, host: str = "127.0.0.1", port: int = 8765
) -> tuple[ThreadingHTTPServer, ReviewApp]:
    """A bound server (port 0: any free port; ``server.server_address`` says which) and its app."""
    app = ReviewApp(predictions, store)
    server = ThreadingHTTPServer((host, port), _handler(app))
    server.daemon_threads = True
    return server, app


def start_in_thread(predictions: str | Path, store: str | Path, **kw) -> tuple[ThreadingHTTPServer, str]:
    """Serve in a background thread (tests, notebooks); returns (server, base URL). ``server.shutdown()`` stops."""
    server, _ = make_server(predictions, store, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


def serve(predictions: str | Path, store: str | Path, *, host: str = "127.0.0.1", port: int = 8765) -> int:
    """``thinktune review serve``: serve until Ctrl-C. Bad input is one line on stderr and exit code 2."""
    predictions = Path(predictions)
    if not predictions.is_file():
        print(
            f"error: {predictions} does not exist; pass the predictions.jsonl that `thinktune evaluate` "
            "writes (under <job output>/eval/)",
            file=sys.stderr,
        )
        return 2
    try:
        server, _ = make_server(predictions, store, host=host, port=port)
    except (ReviewRequestError, json.JSONDecodeError) as e:
        print(f"error: {predictions}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot listen on {host}:{port} ({e.strerror}); pick another --port", file=sys.stderr)
        return 2
    bound_host, bound_port = server.server_address[:2]
    print(
        f"review page: http://{bound_host}:{bound_port}/  (scores go to {store}; Ctrl-C stops; then "
        f"`thinktune review import {store}`)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
