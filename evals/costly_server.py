"""A costly model behind a local OpenAI-compatible HTTP server: the model the budgets eval's
engine part (and its integration tests) give the engine's workers (``KEEL_OPENAI_BASE_URL``), so
the real client code (``ChatOpenAI``) and the meter run in the worker processes. Never a real
model.

Each request names its thread in the text, ``(ref BEHAVIOUR-N)``: ``loop`` answers with text
and no plan (600 tokens), ``long`` the same at 8,000 tokens (cut to the request's
``max_completion_tokens`` / ``max_tokens`` when it sends one, as a provider does), ``slow`` is
``loop`` whose first call waits (until :meth:`CostlyServer.release`, or ``slow_s``) so a test can
kill the worker in the middle of it. Usage is reported at four characters a token, and billed
at :data:`evals.budgets_eval.PRICES` in :attr:`CostlyServer.bills` (per ref), whether or not the
client is still there to read the answer, as a provider bills.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents.usage import PriceTable

REF = re.compile(r"\(ref (loop|long|slow)-(\d+)\)")
WANTED = {"loop": 600, "long": 8_000, "slow": 600}


@dataclass
class CostlyServer:
    """What the server billed, per ref (``loop-3``): (tokens, micro-dollars) per call."""

    url: str
    prices: PriceTable
    model: str
    slow_s: float = 60.0
    bills: defaultdict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    started: threading.Event = field(default_factory=threading.Event)
    """Set when a ``slow`` call has arrived and waits."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """Let every waiting ``slow`` call answer."""
        self._released.set()

    def spent(self, ref: str) -> dict[str, int]:
        """What ``ref``'s thread was billed: tokens, calls, micro-dollars."""
        with self.lock:
            calls = list(self.bills.get(ref, []))
        return {
            "tokens": sum(t for t, _ in calls),
            "calls": len(calls),
            "money": sum(c for _, c in calls),
        }

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt_text = json.dumps(body["messages"])
        found = REF.search(prompt_text)
        behaviour, ref = (found.group(1), f"{found.group(1)}-{found.group(2)}") if found else (
            "loop", "unknown"
        )  # fmt: skip
        with self.lock:
            first = not self.bills.get(ref)
        if behaviour == "slow" and first:
            self.started.set()
            self._released.wait(self.slow_s)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        output = min(WANTED[behaviour], cap) if cap else WANTED[behaviour]
        prompt = len(prompt_text) // 4
        cost = self.prices.cost_micros(self.model, input_tokens=prompt, output_tokens=output) or 0
        with self.lock:
            self.bills[ref].append((prompt + output, cost))
        return {
            "id": "chatcmpl-costly", "object": "chat.completion", "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "length" if cap and output == cap else "stop",
                         "message": {"role": "assistant",
                                     "content": "I think the plan is " + "more words " * 50}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": output,
                      "total_tokens": prompt + output},
        }  # fmt: skip


@contextmanager
def costly_server(
    prices: PriceTable, model: str, *, slow_s: float = 60.0
) -> Iterator[CostlyServer]:
    """The server on a free loopback port; yields it (its ``url`` ends in ``/v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = CostlyServer(
        url=f"http://127.0.0.1:{server.server_address[1]}/v1", prices=prices, model=model,
        slow_s=slow_s,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(state.answer(body)).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the worker died waiting: the call is billed all the same

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release()
        server.shutdown()
        server.server_close()
