"""The engine client (``keel.engine``): interrupts read as their types, and the same approval
answer ``KeelApp.resume`` sends (``graph.approval.approval_answer``), through a recording client."""

from __future__ import annotations

from typing import Any

import pytest

from graph.approval import Decision, approval_answer
from graph.wire import ApprovalRequest
from keel.engine import EngineError, answer_approval, pending_approval, waiting_for_event
from keel.errors import BadRequest

REQUEST: ApprovalRequest = {
    "action_requests": [
        {"name": "refund_charge", "args": {"charge_id": "CH-3002", "amount": 49.0}},
        {"name": "send_email", "args": {"to": "ada@example.com", "body": "Refunded 49.00"}},
    ],
    "review_configs": [
        {"action_name": "refund_charge", "allowed_decisions": ["approve", "edit", "reject"]},
        {"action_name": "send_email", "allowed_decisions": ["approve", "edit", "reject"]},
    ],
    "digests": ["sha256:refund", "sha256:email"],
    "steps": [0, 1],
    "manifest_version": "1",
    "tainted_evidence": [],
}
WAIT = {"kind": "await_event", "event": "bank.settled", "key": "RF-1", "step": 0, "why": "..."}


class Client:
    """What the engine client reads (``threads.get_state``) and writes (``runs.create``)."""

    def __init__(self, *values: Any) -> None:
        self.values = values
        self.created: list[dict[str, Any]] = []
        self.threads = self
        self.runs = self

    def get_state(self, thread_id: str) -> dict[str, Any]:
        return {"interrupts": [{"id": str(i), "value": v} for i, v in enumerate(self.values)]}

    def create(self, thread_id: str, assistant: str, **kwargs: Any) -> dict[str, Any]:
        self.created.append(kwargs)
        return {"run_id": "r-1"}


def test_an_interrupt_is_an_approval_or_an_event_wait_by_its_type_not_by_a_key() -> None:
    lookalike = {"action_requests": [], "digests": [], "kind": "await_event"}
    assert pending_approval(Client(lookalike), "t-1") is None
    assert not waiting_for_event(Client(lookalike), "t-1")
    assert pending_approval(Client(WAIT, REQUEST), "t-1") == REQUEST
    assert waiting_for_event(Client(REQUEST, WAIT), "t-1")
    assert not waiting_for_event(Client(REQUEST), "t-1")


@pytest.mark.parametrize(
    "decision",
    [
        Decision(kind="approve", reviewer="rita"),
        Decision(kind="reject", reason="not this customer", reviewer="rita"),
        Decision(kind="edit", edit={"amount": 10.0}, reviewer="rita"),
    ],
)
def test_the_engine_client_sends_the_answer_keel_app_sends(decision: Decision) -> None:
    client = Client(REQUEST)
    request = pending_approval(client, "t-1")
    assert request is not None
    answer_approval(client, "t-1", request, decision)
    sent = client.created[0]["command"]["resume"]
    assert sent == approval_answer(REQUEST, decision)
    assert [d["digest"] for d in sent["decisions"]] == REQUEST["digests"]
    assert sent["reviewer"] == "rita"


def test_the_shorthand_decisions_are_the_same_answer() -> None:
    client = Client(REQUEST)
    answer_approval(client, "t-1", REQUEST, "reject", reviewer="rita", message="no")
    assert client.created[0]["command"]["resume"] == approval_answer(
        REQUEST, Decision(kind="reject", reason="no", reviewer="rita")
    )
    with pytest.raises(EngineError):
        answer_approval(client, "t-1", {"digests": ["sha256:refund"]}, "approve")


def test_an_edit_changes_the_one_action_that_has_the_arguments_and_approves_the_rest() -> None:
    answer = approval_answer(REQUEST, Decision(kind="edit", edit={"amount": 10.0}))
    assert answer["decisions"] == [
        {
            "type": "edit",
            "digest": "sha256:refund",
            "edited_action": {
                "name": "refund_charge",
                "args": {"charge_id": "CH-3002", "amount": 10.0},
            },
        },
        {"type": "approve", "digest": "sha256:email"},
    ]
    assert "reviewer" not in answer
    for bad in (
        Decision(kind="edit", edit={}),
        Decision(kind="edit", edit={"nothing": 1}),
        Decision(kind="edit", edit={"amount": 1}, action=5),
        Decision(kind="edit", edit={"amount": 1}, action=1),
    ):
        with pytest.raises(BadRequest):
            approval_answer(REQUEST, bad)
