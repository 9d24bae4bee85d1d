"""A local OpenAI-compatible chat-completions server: the model boundary of the HTTP tests.

The caller supplies the model (``answer``: the request body in; the status, extra headers and
the assistant message out, or ``None`` for a server error); this wraps it in the API's response
shape, with token usage at about four characters a token, on a free loopback port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], dict[str, Any] | None]
"""The HTTP status, extra headers, and the assistant message (an error body when the status is
not 200; None for a plain server error)."""


def completion(body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` answering ``body`` with ``message``."""
    prompt_tokens = len(json.dumps(body["messages"])) // 4
    completion_tokens = len(json.dumps(message)) // 4
    return {
        "id": "chatcmpl-local", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


@contextmanager
def openai_compatible(answer: Callable[[dict[str, Any]], Reply], port: int = 0) -> Iterator[str]:
    """Serve ``answer`` on loopback (``port`` 0: a free one); yields the base URL (``.../v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, message = answer(body)
            if message is None:
                payload = {"error": {"message": f"status {status}", "type": "server_error"}}
            else:
                payload = completion(body, message) if status == 200 else message
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout under test)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
