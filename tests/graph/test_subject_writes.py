"""What a thread is about is the request the thread guard recorded, never the state's ``entities``:
a caller who writes ``entities`` cannot move a scope onto another customer's data.

The support desk's scopes (``customer_in_request``, ``ticket_in_request``,
``refund_within_charge``, ``recipient_is_the_customer``) read the thread's subjects, and the
validator reads the records of the request's entities. A Python caller of the compiled graph (an
operator on a server) writes ``entities`` naming another customer and invoice, with a plan for
them: the validator and, behind it, the gate refuse; nothing reaches the other customer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from graph.state import Plan, Receipt, Step, approval_digest
from keel.app import Decision, KeelApp
from stores.guard import plan_digest
from tests.conftest import BILLING_REQUEST, REFUND_REQUEST
from tools.permissions import PermissionGate

OTHER = {"customer_id": "C-1002", "invoice_id": "INV-2002", "ticket_id": "T-78"}
"""Grace Hopper, her invoice and another customer's ticket: not the thread's (REFUND_REQUEST is
Ada's, C-1001 and INV-2001, and names no ticket)."""

WRITTEN: dict[str, dict[str, str]] = {
    "another customer": OTHER,
    # Taken away: the refund's scope checks the charge's invoice only when the thread names one.
    "none": {},
}

STEPS: dict[str, Step] = {
    "refund_within_charge": Step(
        tool="refund_charge", args={"charge_id": "CH-3003", "amount": 120.0, "reason": "duplicate"},
        purpose="Refund Grace's charge", effect="irreversible",
    ),
    "recipient_is_the_customer": Step(
        tool="send_email",
        args={"to": "grace@example.com", "subject": "Your refund", "body": "We refunded you."},
        purpose="Tell Grace", effect="irreversible",
    ),
    "customer_in_request": Step(
        tool="update_billing_email",
        args={"customer_id": "C-1002", "email": "attacker@evil.example"},
        purpose="Move Grace's invoices", effect="write",
    ),
    "ticket_in_request": Step(
        tool="close_ticket", args={"ticket_id": "T-78", "resolution": "closed by the desk"},
        purpose="Close Katherine's ticket", effect="write",
    ),
}  # fmt: skip
"""One step per scope that reads the thread's subjects, each aimed at the other customer."""


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


def _untouched(backend: DemoBackend) -> None:
    """Nothing reached the other customers: no refund of Grace's charge, no e-mail to her, her
    billing address as seeded, Katherine's ticket open."""
    assert [r for r in backend.refunds() if r["charge_id"] != "CH-3002"] == []  # Ada's
    assert [m for m in backend.outbox() if m["recipient"] != "ada@example.com"] == []
    assert {"billing e-mail of C-1002 is accounts@hopper.example", "ticket T-78 is open"} <= (
        backend.snapshot()
    )


def _receipt(app: KeelApp, thread_id: str, step: Step) -> Receipt:
    gate = app.context.tools.gate
    assert isinstance(gate, PermissionGate)
    now = datetime.now(UTC)
    return gate.signer.sign(Receipt(
        tool=step.tool, digest=approval_digest(step.tool, step.args), thread_id=thread_id,
        approved_by="ann", approved_at=now.isoformat(),
        expires_at=(now + timedelta(hours=1)).isoformat(), manifest_version=gate.version,
    ))  # fmt: skip


@pytest.mark.parametrize("written", sorted(WRITTEN))
@pytest.mark.parametrize("scope", sorted(STEPS))
def test_the_gate_refuses_a_step_on_the_customer_a_caller_wrote_into_entities(
    app: KeelApp, backend: DemoBackend, scope: str, written: str
) -> None:
    """The gate alone: the plan is one the validator passed (as it did, reading the state's
    entities) and a reviewer approved; only the scope stands between it and the other
    customers' data, whether the caller names them or takes the thread's own away."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-subject")
    assert waiting.status == "awaiting_approval"
    step = STEPS[scope]
    plan = Plan(intent="act for the customer in entities", steps=[step])
    assert app.context.guard is not None
    app.context.guard.record_validated_plan("t-subject", plan_digest(plan))
    receipt = _receipt(app, "t-subject", step)
    app.graph.update_state(
        _config("t-subject"),
        {"entities": WRITTEN[written], "plan": plan, "cursor": 0,
         "approvals": {receipt.digest: receipt},
         "review": "approved", "status": "running"},
        as_node="approve",
    )  # fmt: skip
    app.graph.invoke(None, _config("t-subject"), context=app.context, durability="sync")
    _untouched(backend)
    assert backend.refunds() == backend.outbox() == []
    [result] = [r for r in app.show("t-subject").results if r.tool == step.tool]
    assert result.denied and f"out of scope '{scope}'" in (result.error or ""), result


def test_a_plan_for_the_customer_a_caller_wrote_into_entities_is_refused_before_approval(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The validator: it reads the records of the request the guard recorded, so a refund and an
    e-mail for Grace, sent back to it with her ids in ``entities``, never reach an approval that
    a reviewer could click through, and nothing reaches her."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-validate")
    assert waiting.status == "awaiting_approval"
    # Ada's plan, its arguments turned to Grace (the runbook it cites unchanged).
    honest = app.graph.get_state(_config("t-validate")).values["plan"]
    refund, email = honest.steps
    assert (refund.tool, email.tool) == ("refund_charge", "send_email")
    grace = {
        "refund_charge": {"charge_id": "CH-3003", "amount": 120.0},
        "send_email": {
            "to": "grace@example.com",
            "subject": "Refund for INV-2002",
            "body": "We refunded 120.00 EUR on INV-2002.",
        },
    }
    plan = honest.model_copy(update={"steps": [
        s.model_copy(update={"args": {**s.args, **grace[s.tool]}}) for s in honest.steps
    ]})  # fmt: skip
    # Written as the planner's output: the validator checks it next.
    app.graph.update_state(
        _config("t-validate"), {"entities": OTHER, "plan": plan, "status": "running"},
        as_node="plan",
    )  # fmt: skip
    app.graph.invoke(None, _config("t-validate"), context=app.context, durability="sync")
    for _ in range(3):
        # Whatever the thread asks now, a reviewer approves it (asked again when the actions
        # changed since the first approval request, approved again).
        if not app.graph.get_state(_config("t-validate")).interrupts:
            break
        app.resume("t-validate", Decision(kind="approve", reviewer="ann"))
    _untouched(backend)
    # Planned again from the request the guard recorded: Ada's refund, as she asked.
    assert app.show("t-validate").status == "done"
    assert [r["charge_id"] for r in backend.refunds()] == ["CH-3002"]


def test_a_billing_change_for_the_customer_a_caller_wrote_into_entities_is_refused(
    app: KeelApp, backend: DemoBackend
) -> None:
    """A write needs no approval: the validator and the gate are all there is."""
    done = app.run(BILLING_REQUEST.replace("C-1002", "C-1001"), thread_id="t-billing")
    assert done.status == "done"
    honest = app.graph.get_state(_config("t-billing")).values["plan"]
    [step] = honest.steps
    moved = step.model_copy(update={"args": STEPS["customer_in_request"].args})
    plan = honest.model_copy(update={"steps": [moved]})
    app.graph.update_state(
        _config("t-billing"),
        {"entities": {"customer_id": "C-1002"}, "plan": plan, "status": "running", "cursor": 0},
        as_node="plan",
    )  # fmt: skip
    app.graph.invoke(None, _config("t-billing"), context=app.context, durability="sync")
    assert "billing e-mail of C-1002 is accounts@hopper.example" in backend.snapshot()
    assert app.graph.get_state(_config("t-billing")).values


def test_the_records_that_vouch_for_arguments_are_the_recorded_requests(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The planner reads the records of the request's entities through trusted tools, and the
    guard keeps them as what vouches for an argument (``tools.provenance``): with Grace's ids
    written into ``entities`` before it plans again, her address would vouch for an e-mail to
    her. The planner reads the recorded request's records instead."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-records")
    assert waiting.status == "awaiting_approval"
    app.graph.update_state(
        _config("t-records"), {"entities": OTHER, "status": "running"}, as_node="retrieve"
    )
    app.graph.invoke(None, _config("t-records"), context=app.context, durability="sync")
    assert app.context.guard is not None
    recorded = json.dumps(app.context.guard.records("t-records"))
    assert "ada@example.com" in recorded
    assert "grace@example.com" not in recorded and "INV-2002" not in recorded
    _untouched(backend)
