"""The model's real HTTP path: the planner's ``ChatOpenAI`` against a local OpenAI-style server.

The server (loopback, started here) answers chat completions the way a real endpoint misbehaves:
429 with Retry-After, 500, too slow for the client's timeout, malformed output, or a good plan. The
real ``langchain-openai`` client's retries, Keel's timeout, the repair loop, the fallback model and
finally the runbook planner all run, and the outcome names the planner that produced the plan.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from graph.context import KeelContext
from keel.app import Decision, KeelApp
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST
from tools.demo.backend import DemoBackend


def _plan(prompt: str) -> str:
    """A correct refund plan, citing the runbook chunk the prompt shows."""
    cite = re.search(r"\[(runbook-duplicate-charge:[0-9a-f]+)\]", prompt)
    chunk = cite.group(1) if cite else "none"
    return json.dumps(
        {
            "intent": "refund_duplicate_charge",
            "steps": [
                {"tool": "refund_charge",
                 "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate charge"},
                 "purpose": "refund the duplicate", "evidence": [chunk]},
                {"tool": "send_email",
                 "args": {"to": "ada@example.com", "subject": "Refund for INV-2001",
                          "body": "We refunded the duplicate charge of 49.00 EUR."},
                 "purpose": "tell the customer", "evidence": [chunk]},
            ],
        }
    )  # fmt: skip


class Endpoint:
    """What the server has been asked, per model name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def answer(self, model: str, prompt: str) -> tuple[int, dict[str, str], str | None]:
        with self.lock:
            self.calls[model] += 1
            n = self.calls[model]
        if model == "flaky":  # rate-limited, then a server error, then fine
            if n == 1:
                return 429, {"retry-after-ms": "10"}, None
            if n == 2:
                return 500, {}, None
            return 200, {}, _plan(prompt)
        if model == "slow":
            time.sleep(2.0)
            return 200, {}, _plan(prompt)
        if model == "garbled":  # not JSON at first; the repair request gets a plan
            return 200, {}, ("Sure! Here is the plan you asked for." if n == 1 else _plan(prompt))
        if model.startswith("down"):
            return 500, {}, None
        return 200, {}, _plan(prompt)


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Endpoint]]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
            status, headers, content = state.answer(body["model"], prompt)
            payload: dict[str, Any] = (
                {"error": {"message": f"status {status}", "type": "server_error"}}
                if content is None
                else {
                    "id": "chatcmpl-local", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                }
            )  # fmt: skip
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout under test)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def _run(settings: Settings, base_url: str, primary: str, fallback: str | None) -> Any:
    tuned = settings.model_copy(
        update={
            "openai_base_url": base_url,
            "planner_model": primary,
            "planner_fallback_model": fallback,
            "model_timeout_s": 0.5,
            "model_max_retries": 2,
        }
    )
    with KeelApp.open(tuned, KeelContext.from_settings(tuned)) as app:
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval", waiting
        return app.resume(waiting.thread_id, Decision(kind="approve"))


def test_the_client_retries_429_and_500_then_plans(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done = _run(settings, url, "flaky", None)
    assert done.status == "done" and done.planner == "model:flaky"
    assert server.calls["flaky"] == 3  # 429, 500, then the answer: the client's own retries
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


def test_a_model_past_the_timeout_hands_over_to_the_fallback_model(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done = _run(settings, url, "slow", "good")
    assert done.planner == "model:good" and done.status == "done"
    assert server.calls["slow"] == 3  # the first try and the client's two retries, each cut off
    assert len(backend.refunds()) == 1


def test_a_malformed_answer_is_repaired(endpoint: tuple[str, Endpoint], settings: Settings) -> None:
    url, server = endpoint
    done = _run(settings, url, "garbled", None)
    assert done.planner == "model:garbled" and done.status == "done"
    assert server.calls["garbled"] == 2


def test_when_every_model_fails_the_runbook_planner_plans(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done = _run(settings, url, "down", "down-too")
    assert done.planner == "runbook (model failed)" and done.status == "done"
    assert server.calls["down"] == 3 and server.calls["down-too"] == 3
    assert len(backend.refunds()) == 1
