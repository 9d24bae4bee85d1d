"""The model's real HTTP path: the planner's ``ChatOpenAI`` against a local OpenAI-style server.

The server (loopback, started here) answers chat completions the way a real endpoint does and
misbehaves: the plan as a ``submit_plan`` tool call in OpenAI's wire format (or, for a model that
ignores tools, as JSON text), 429 with Retry-After, 500, too slow for the client's timeout, or a
malformed tool call. It refuses, as OpenAI does, a history where a tool call has no tool message
answering it. The real ``langchain-openai`` client's tool-call parsing and retries, Keel's timeout,
the repair loop, the fallback model and finally the runbook planner all run; the outcome names the
planner that produced the plan and the flight record shows each model call and how it answered.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from keel.app import Decision, KeelApp, Outcome
from keel.settings import Settings
from observability.record_events import ModelCall, PlanMade, RecordEvent, RunStarted
from stores.flight_record import SqliteFlightRecord
from tests.conftest import REFUND_REQUEST
from tests.integration.openai_stub import openai_compatible

SUBMIT_PLAN_CHOICE = {"type": "function", "function": {"name": "submit_plan"}}


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


Answer = tuple[int, dict[str, str], dict[str, Any] | None]


def _message(content: str | None, arguments: str | None = None) -> dict[str, Any]:
    """An assistant message: text, or one ``submit_plan`` call with these raw arguments."""
    if arguments is None:
        return {"role": "assistant", "content": content}
    call = {"id": "call_plan", "type": "function",
            "function": {"name": "submit_plan", "arguments": arguments}}  # fmt: skip
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _unanswered_tool_call(messages: list[dict[str, Any]]) -> str | None:
    """The id of a tool call no ``tool`` message answers (OpenAI answers such a history 400)."""
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            answered = {n.get("tool_call_id") for n in messages[i + 1 :] if n["role"] == "tool"}
            if call["id"] not in answered:
                return str(call["id"])
    return None


class Endpoint:
    """What the server has been asked, per model name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> Answer:
        model = body["model"]
        with self.lock:
            self.calls[model] += 1
            self.requests[model].append(body)
            n = self.calls[model]
        if (orphan := _unanswered_tool_call(body["messages"])) is not None:
            return 400, {}, {"error": {"message": f"tool_call_id {orphan} has no tool message",
                                       "type": "invalid_request_error"}}  # fmt: skip
        prompt = "\n".join(str(m.get("content") or "") for m in body["messages"])
        offered = {t["function"]["name"] for t in body.get("tools", [])}
        plan = _plan(prompt)
        good = _message(None, plan) if "submit_plan" in offered else _message(plan)
        if model == "flaky":  # rate-limited, then a server error, then fine
            if n == 1:
                return 429, {"retry-after-ms": "10"}, None
            if n == 2:
                return 500, {}, None
            return 200, {}, good
        if model == "slow":
            time.sleep(2.0)
            return 200, {}, good
        if model == "garbled":  # a tool call cut off mid-arguments; the repair request gets a plan
            return 200, {}, (_message(None, plan[: len(plan) // 2]) if n == 1 else good)
        if model == "texty":  # a server that ignores the tools and answers in text
            return 200, {}, _message("Here is the plan:\n```json\n" + plan + "\n```")
        if model.startswith("down"):
            return 500, {}, None
        return 200, {}, good


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Endpoint]]:
    state = Endpoint()
    with openai_compatible(state.answer) as url:
        yield url, state


def _run(
    settings: Settings, base_url: str, primary: str, fallback: str | None
) -> tuple[Outcome, list[RecordEvent]]:
    """Run the refund with these models, approve it; the outcome and the run's flight record."""
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
        done = app.resume(waiting.thread_id, Decision(kind="approve"))
    store = SqliteFlightRecord(tuned.records_db)
    try:
        return done, store.events(done.run_id or "")
    finally:
        store.close()


def _path(events: list[RecordEvent]) -> tuple[tuple[str | None, str | None], list[str], str]:
    """What the record says ran: (primary, fallback), each model call as ``model:how`` (``tool``,
    ``text``, ``bad-tool`` or ``error:Kind``) and the planner that made the plan."""
    [started] = [e.payload for e in events if isinstance(e.payload, RunStarted)][:1]
    calls = []
    for e in events:
        p = e.payload
        if isinstance(p, ModelCall):
            how = (f"error:{p.error_kind}" if p.error else "bad-tool" if p.invalid_tool_calls
                   else "tool" if p.tool_calls else "text")  # fmt: skip
            calls.append(f"{p.model}:{how}")
    [made] = [e.payload for e in events if isinstance(e.payload, PlanMade)]
    return (started.planner_model, started.fallback_model), calls, made.planner


def _asked_for_a_tool_call(request: dict[str, Any]) -> bool:
    tools = request.get("tools", [])
    return (
        [t["function"]["name"] for t in tools] == ["submit_plan"]
        and "steps" in tools[0]["function"]["parameters"]["properties"]
        and request.get("tool_choice") == SUBMIT_PLAN_CHOICE
    )


def test_the_client_retries_429_and_500_then_plans_through_a_tool_call(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done, events = _run(settings, url, "flaky", None)
    assert done.status == "done" and done.planner == "model:flaky"
    assert server.calls["flaky"] == 3  # 429, 500, then the answer: the client's own retries
    assert all(_asked_for_a_tool_call(r) for r in server.requests["flaky"])
    # One model call (the client's retries are inside it), answered with the submit_plan call.
    assert _path(events) == (("flaky", None), ["flaky:tool"], "model:flaky")
    [call] = [e.payload for e in events if isinstance(e.payload, ModelCall)]
    assert [c["name"] for c in call.tool_calls] == ["submit_plan"]
    assert call.tool_calls[0]["args"]["steps"][0]["args"]["charge_id"] == "CH-3002"
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


def test_a_model_past_the_timeout_hands_over_to_the_fallback_model(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done, events = _run(settings, url, "slow", "good")
    assert done.planner == "model:good" and done.status == "done"
    assert server.calls["slow"] == 3  # the first try and the client's two retries, each cut off
    assert _path(events) == (
        ("slow", "good"),
        ["slow:error:OpenAITimeoutError", "good:tool"],
        "model:good",
    )
    assert len(backend.refunds()) == 1


def test_a_malformed_tool_call_is_repaired(
    endpoint: tuple[str, Endpoint], settings: Settings
) -> None:
    url, server = endpoint
    done, events = _run(settings, url, "garbled", None)
    assert done.planner == "model:garbled" and done.status == "done"
    assert server.calls["garbled"] == 2
    assert _path(events) == (("garbled", None), ["garbled:bad-tool", "garbled:tool"],
                             "model:garbled")  # fmt: skip
    # The repair request answers the broken call with a tool message, then asks again.
    repair = server.requests["garbled"][1]["messages"]
    assert [m["role"] for m in repair[-3:]] == ["assistant", "tool", "user"]
    assert repair[-2]["tool_call_id"] == "call_plan"
    assert _asked_for_a_tool_call(server.requests["garbled"][1])


def test_a_server_that_answers_in_text_is_still_read(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, _ = endpoint
    done, events = _run(settings, url, "texty", None)
    assert done.planner == "model:texty" and done.status == "done"
    assert _path(events) == (("texty", None), ["texty:text"], "model:texty")
    assert len(backend.refunds()) == 1


def test_when_every_model_fails_the_runbook_planner_plans(
    endpoint: tuple[str, Endpoint], settings: Settings, backend: DemoBackend
) -> None:
    url, server = endpoint
    done, events = _run(settings, url, "down", "down-too")
    assert done.planner == "runbook (model failed)" and done.status == "done"
    assert server.calls["down"] == 3 and server.calls["down-too"] == 3
    assert _path(events) == (
        ("down", "down-too"),
        ["down:error:OpenAIAPIError", "down-too:error:OpenAIAPIError"],
        "runbook (model failed)",
    )
    assert len(backend.refunds()) == 1
