"""Turning a human's answer into receipts: bound to digests, refused when stale or malformed."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.executor import idempotency_key
from graph.approval import approval_request, pending_actions, read_decisions
from graph.context import KeelContext
from graph.state import approval_digest
from keel.settings import Settings
from stores.guard import GuardFacts
from tests.builders import plan

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def ctx(tmp_path: Path) -> KeelContext:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    context = KeelContext.from_settings(settings)
    context.clock = lambda: NOW
    return context


@pytest.fixture
def request_(ctx: KeelContext) -> dict[str, Any]:
    p = plan()
    return approval_request(p, pending_actions(p, {}, ctx.tools, GuardFacts()), ctx.tools, [])


def test_the_request_speaks_the_hitl_schema(request_: dict[str, Any]) -> None:
    assert [a["name"] for a in request_["action_requests"]] == ["refund_charge", "send_email"]
    assert request_["review_configs"][0] == {
        "action_name": "refund_charge",
        "allowed_decisions": ["approve", "edit", "reject"],
    }
    assert request_["digests"][0] == approval_digest("refund_charge", plan().steps[0].args)


def test_approve_gives_one_receipt_per_action(ctx: KeelContext, request_: dict[str, Any]) -> None:
    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}], "reviewer": "ann"}
    update = read_decisions(answer, request_, plan(), "t-1", ctx)
    assert update["review"] == "approved"
    assert set(update["approvals"]) == set(request_["digests"])
    receipt = update["approvals"][request_["digests"][0]]
    assert (receipt.approved_by, receipt.thread_id, receipt.tool) == ("ann", "t-1", "refund_charge")
    assert receipt.approved_for == "executor"  # the gate refuses it to any other agent
    assert receipt.manifest_version == ctx.tools.gate.version  # type: ignore[union-attr]
    assert receipt.signature  # signed: a receipt written into state is not enough


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "yes",
        {"decisions": [{"type": "approve"}]},
        {"decisions": [{"type": "approve"}, {"type": "maybe"}]},
        {"decisions": [{"type": "approve", "digest": "sha256:stale"}, {"type": "approve"}]},
        {
            "decisions": [
                {"type": "edit", "edited_action": {"name": "send_email", "args": {}}},
                {"type": "approve"},
            ]
        },
        {"decisions": [{"type": "edit"}, {"type": "approve"}]},
        # A resume payload answers the question; it cannot add steps or bring its own receipts.
        {"decisions": [{"type": "approve"}, {"type": "approve"}], "approvals": {"x": {}}},
        {"decisions": [{"type": "approve"}, {"type": "approve"}], "steps": [{"tool": "x"}]},
        {"decisions": [{"type": "approve", "args": {"amount": 1}}, {"type": "approve"}]},
    ],
)
def test_anything_else_is_refused(ctx: KeelContext, request_: dict[str, Any], answer: Any) -> None:
    update = read_decisions(answer, request_, plan(), "t-1", ctx)
    assert update["review"] == "invalid"
    assert "approvals" not in update


def test_a_rejection_holds_and_approves_nothing(ctx: KeelContext, request_: dict[str, Any]) -> None:
    answer = {"decisions": [{"type": "reject", "message": "not a duplicate"}, {"type": "approve"}]}
    update = read_decisions(answer, request_, plan(), "t-1", ctx)
    assert update["review"] == "rejected"
    assert update["rejected"] == [request_["digests"][0]]
    assert "approvals" not in update
    assert "not a duplicate" in update["answer"]


def test_an_edit_naming_its_digest_binds_the_receipt_to_the_new_arguments(
    ctx: KeelContext, request_: dict[str, Any]
) -> None:
    """``keel resume --edit`` names the digest it edits: its reviewer typed the exact arguments."""
    edited = {**plan().steps[0].args, "amount": 10.0}
    answer = {
        "decisions": [
            {
                "type": "edit",
                "digest": request_["digests"][0],
                "edited_action": {"name": "refund_charge", "args": edited},
            },
            {"type": "approve"},
        ]
    }
    update = read_decisions(answer, request_, plan(), "t-1", ctx)
    assert update["review"] == "edited"
    assert update["plan"].steps[0].args["amount"] == 10.0
    assert approval_digest("refund_charge", edited) in update["approvals"]
    assert update["approvals"][approval_digest("refund_charge", edited)].edited
    assert request_["digests"][0] not in update["approvals"]


def test_an_edit_without_a_digest_is_a_proposal_not_an_approval(
    ctx: KeelContext, request_: dict[str, Any]
) -> None:
    """Agent Chat UI's edit carries no digest and its fields return text: the edited action is
    put back into the original's types, and approves nothing (not even the other actions of the
    answer, which may depend on it) until they are asked for again."""
    edited = {**plan().steps[0].args, "amount": "10"}
    answer = {
        "decisions": [
            {"type": "edit", "edited_action": {"name": "refund_charge", "args": edited}},
            {"type": "approve"},
        ]
    }
    update = read_decisions(answer, request_, plan(), "t-1", ctx)
    assert update["review"] == "edited"
    assert update["plan"].steps[0].args["amount"] == 10
    # Nothing is approved by this answer: the e-mail is asked for again with the edited refund.
    assert update["approvals"] == {}


def test_idempotency_keys_come_from_business_ids() -> None:
    """The thread and the action's digest, never the step index: a caller can set the cursor
    (-1, -2, a fork), and a new index for the same action must not make a new key (issue 21)."""
    key = idempotency_key("t-1", "sha256:a")
    assert key == idempotency_key("t-1", "sha256:a")
    assert key != idempotency_key("t-1", "sha256:b")
    assert key != idempotency_key("t-2", "sha256:a")
    assert "step" not in inspect.signature(idempotency_key).parameters
