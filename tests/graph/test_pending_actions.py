"""What still needs approval is the plan check's finding in the state (``pending_actions``): a
caller who writes that channel can neither take an action out of an approval nor break the thread
(the approval node works it out again against the thread guard)."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from graph.wire import approval_request_of
from keel.app import Decision, KeelApp
from tests.conftest import REFUND_REQUEST


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def test_the_plan_check_writes_what_needs_approval_and_the_request_shows_it(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST, thread_id="t-pending")
    assert waiting.status == "awaiting_approval"
    values = app.graph.get_state(_config("t-pending")).values
    assert values["pending_actions"] == [0, 1]
    assert [p.name for p in waiting.pending or []] == ["refund_charge", "send_email"]


def test_pending_actions_emptied_at_the_approval_still_asks_for_every_action(
    app: KeelApp, backend: DemoBackend
) -> None:
    app.run(REFUND_REQUEST, thread_id="t-emptied")
    app.graph.invoke(
        Command(update={"pending_actions": []}, goto="approve"), _config("t-emptied"),
        context=app.context, durability="sync",
    )  # fmt: skip
    interrupts = app.graph.get_state(_config("t-emptied")).interrupts
    request = approval_request_of(interrupts[0].value)
    assert request is not None
    assert [a["name"] for a in request["action_requests"]] == ["refund_charge", "send_email"]
    assert backend.refunds() == [] and backend.outbox() == []


@pytest.mark.parametrize("written", [None, 7, "01", [True, 1], [5, -1]])
def test_pending_actions_of_any_shape_leave_the_thread_answerable(
    app: KeelApp, backend: DemoBackend, written: object
) -> None:
    """Not a list, or indexes out of the plan: the approval asks for what the guard says is
    pending, and the reviewer's answer settles the thread once."""
    thread = f"t-shape-{written!r}"
    app.run(REFUND_REQUEST, thread_id=thread)
    app.graph.invoke(
        Command(update={"pending_actions": written}, goto="approve"), _config(thread),
        context=app.context, durability="sync",
    )  # fmt: skip
    shown = app.show(thread)
    assert shown.status == "awaiting_approval"
    assert [p.name for p in shown.pending or []] == ["refund_charge", "send_email"]
    assert app.resume(thread, Decision(kind="approve", reviewer="ann")).status == "done"
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


def test_a_step_refused_out_of_turn_is_not_skipped_once_approved(
    app: KeelApp, backend: DemoBackend
) -> None:
    """A caller's goto=execute at the approval runs the refund before its receipt: the gate
    refuses it. The reviewer then approves both actions: the e-mail saying the refund was made
    must not go out without the refund."""
    app.run(REFUND_REQUEST, thread_id="t-out-of-turn")
    app.graph.invoke(
        Command(goto="execute"), _config("t-out-of-turn"), context=app.context, durability="sync"
    )
    assert backend.refunds() == [] and backend.outbox() == []
    outcome = app.resume("t-out-of-turn", Decision(kind="approve", reviewer="ann"))
    assert backend.outbox() == [] and backend.refunds() == []
    assert outcome.status == "escalated"
    assert "refund_charge" in (outcome.answer or "") and "never made" in (outcome.answer or "")


def test_a_write_refused_out_of_turn_in_a_tainted_thread_is_not_skipped_once_approved(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The same in the shape taint gives it: the ticket's text makes its closure need a receipt;
    refused out of turn, it must not leave the e-mail saying it was closed to go out alone."""
    app.run("Close ticket T-77 and tell the customer", thread_id="t-ticket-out-of-turn")
    app.graph.invoke(
        Command(goto="execute"), _config("t-ticket-out-of-turn"), context=app.context,
        durability="sync",
    )  # fmt: skip
    outcome = app.resume("t-ticket-out-of-turn", Decision(kind="approve", reviewer="ann"))
    assert backend.get_ticket("T-77")["status"] == "open"
    assert backend.outbox() == []
    assert "close_ticket" in (outcome.answer or "") and "never made" in (outcome.answer or "")
    assert "no verdict says why" not in (outcome.answer or "")
