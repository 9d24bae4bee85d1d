"""The interrupts' wire formats: LangChain's HITL types, extended, and told apart by type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents.middleware import human_in_the_loop as langchain_hitl
from langchain.agents.middleware.human_in_the_loop import HITLRequest, HITLResponse
from pydantic import TypeAdapter

from graph import wire
from graph.approval import approval_request, pending_actions, read_decisions
from graph.context import KeelContext
from graph.wire import approval_request_of, event_wait_of
from keel.settings import Settings
from stores.guard import GuardFacts
from tests.builders import evidence, plan


@pytest.fixture
def ctx(tmp_path: Path) -> KeelContext:
    return KeelContext.from_settings(Settings(home=tmp_path, _env_file=None))  # type: ignore[call-arg]


def test_the_approval_request_is_a_langchain_hitl_request_with_keels_additions(
    ctx: KeelContext,
) -> None:
    p = plan()
    request = approval_request(p, pending_actions(p, {}, ctx.tools, GuardFacts()), ctx.tools, [])
    # LangChain's own type reads it (extra keys ignored: Keel's additions ride along) ...
    hitl = TypeAdapter(HITLRequest).validate_python(request)
    assert hitl["action_requests"] == request["action_requests"]
    # ... and Keel's type, closed, reads all of it; it is not an event wait.
    assert approval_request_of(request) == request
    assert event_wait_of(request) is None


def _shape(schema: Any) -> Any:
    """A JSON schema without its prose: what a client sees of a type, not how it is documented."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema


@pytest.mark.parametrize(
    "name",
    [
        "Action",
        "ActionRequest",
        "DecisionType",
        "ReviewConfig",
        "HITLRequest",
        "ApproveDecision",
        "EditDecision",
        "RejectDecision",
        "RespondDecision",
        "HITLResponse",
    ],
)
def test_keels_copy_of_the_hitl_schema_is_langchains(name: str) -> None:
    """graph/wire.py declares LangChain's HITL types instead of importing ``langchain.agents``
    (a cold start's fifth of a second); each must keep LangChain's exact shape."""
    ours = TypeAdapter(getattr(wire, name)).json_schema()
    theirs = TypeAdapter(getattr(langchain_hitl, name)).json_schema()
    assert _shape(ours) == _shape(theirs)


def test_an_event_wait_is_not_an_approval_and_a_stray_value_is_neither() -> None:
    wait = {"kind": "await_event", "event": "refund.settled", "key": "RF-1", "step": 1, "why": "w"}
    assert event_wait_of(wait) == wait and approval_request_of(wait) is None
    for stray in ({"kind": "await_event", "event": "x"}, {"action_requests": []}, "yes", None):
        assert event_wait_of(stray) is None and approval_request_of(stray) is None


def test_a_studio_answer_without_digests_is_taken(ctx: KeelContext) -> None:
    """What Agent Chat UI sends: LangChain's HITLResponse, an edit naming the tool. An edit that
    changes nothing approves the action shown (its digest is the one pending)."""
    p = plan()
    request = approval_request(p, pending_actions(p, {}, ctx.tools, GuardFacts()), ctx.tools, [])
    first = request["action_requests"][0]
    answer: HITLResponse = {
        "decisions": [
            {"type": "edit", "edited_action": {"name": first["name"], "args": first["args"]}},
            {"type": "approve"},
        ]
    }
    update = read_decisions(answer, request, p, "t-1", ctx)
    assert update["review"] == "approved" and set(update["approvals"]) == set(request["digests"])


def test_an_unchanged_edit_from_the_chat_panel_approves_even_a_float(ctx: KeelContext) -> None:
    """The panel returns every value as JavaScript writes it: 49.0 comes back as "49". That is
    the value shown, so the action shown is approved, not proposed again."""
    p = plan()
    request = approval_request(p, pending_actions(p, {}, ctx.tools, GuardFacts()), ctx.tools, [])
    first = request["action_requests"][0]
    assert any(isinstance(v, float) and v.is_integer() for v in first["args"].values())
    as_text = {
        k: v
        if isinstance(v, str)
        else json.dumps(int(v) if isinstance(v, float) and v.is_integer() else v)
        for k, v in first["args"].items()
    }
    answer: HITLResponse = {
        "decisions": [
            {"type": "edit", "edited_action": {"name": first["name"], "args": as_text}},
            {"type": "approve"},
        ]
    }
    update = read_decisions(answer, request, p, "t-1", ctx)
    assert update["review"] == "approved" and set(update["approvals"]) == set(request["digests"])


@pytest.mark.parametrize(
    "decision",
    [
        {"type": "respond", "message": "done it myself"},  # LangChain's, but not Keel's
        {"type": "approve", "digest": 7},
        {"type": "edit", "edited_action": {"args": {}}},  # LangChain's Action names the tool
    ],
)
def test_a_decision_outside_keels_types_is_refused(ctx: KeelContext, decision: Any) -> None:
    p = plan()
    request = approval_request(p, pending_actions(p, {}, ctx.tools, GuardFacts()), ctx.tools, [])
    update = read_decisions({"decisions": [decision, {"type": "approve"}]}, request, p, "t", ctx)
    assert update["review"] == "invalid" and "approvals" not in update


def test_tainted_evidence_travels_typed(ctx: KeelContext) -> None:
    p = plan()
    dirty = [evidence(chunk_id="forum:1", source="forum", kind="note", trust_tier="untrusted")]
    pending = pending_actions(p, {}, ctx.tools, GuardFacts(), dirty)
    request = approval_request(p, pending, ctx.tools, dirty)
    assert approval_request_of(request) == request
    assert request["tainted_evidence"][0]["trust_tier"] == dirty[0].trust_tier
