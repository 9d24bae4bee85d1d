"""The validator's deterministic checks of plan steps and of the demo domain's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.runtime import Runtime

from agents.validator import check_plan, step_problems
from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from graph.context import KeelContext
from graph.state import PlanCheckView, approval_digest
from keel.settings import Settings
from tests.builders import REFUND_RECORDS, email_step, evidence, plan, refund_step
from tools.spec import ToolRegistry

KNOWN = {"runbook-duplicate-charge:abc"}


@pytest.fixture
def tools(tmp_path: Path) -> ToolRegistry:
    backend = DemoBackend(tmp_path / "demo.sqlite")
    backend.seed()
    return ToolRegistry(demo_tools(backend))


def test_a_good_step_has_no_problems(tools: ToolRegistry) -> None:
    assert step_problems(0, refund_step(), tools, KNOWN) == []


def test_unknown_tool(tools: ToolRegistry) -> None:
    assert step_problems(0, refund_step(tool="wire_money"), tools, KNOWN) == [
        "step 1 (wire_money): no such tool"
    ]


def test_smuggled_argument(tools: ToolRegistry) -> None:
    step = refund_step(args={**refund_step().args, "approved": True})
    problems = step_problems(0, step, tools, KNOWN)
    assert any("approved" in p and "Extra inputs" in p for p in problems)


def test_wrong_type_and_bad_id(tools: ToolRegistry) -> None:
    step = refund_step(args={"charge_id": "3002", "amount": "lots", "reason": "dup"})
    problems = step_problems(0, step, tools, KNOWN)
    assert any(p.startswith("step 1 (refund_charge): charge_id") for p in problems)
    assert any(p.startswith("step 1 (refund_charge): amount") for p in problems)


def test_a_plan_may_not_downgrade_an_effect(tools: ToolRegistry) -> None:
    problems = step_problems(0, refund_step(effect="read"), tools, KNOWN)
    assert problems == ["step 1 (refund_charge): effect is irreversible, the plan says read"]


def test_a_side_effect_must_cite_evidence(tools: ToolRegistry) -> None:
    problems = step_problems(0, refund_step(evidence=["made-up:1"]), tools, KNOWN)
    assert problems == ["step 1 (refund_charge): cites no retrieved evidence"]


def test_domain_rule_refund_never_exceeds_the_charge() -> None:
    too_much = refund_step(args={"charge_id": "CH-3002", "amount": 60.0, "reason": "dup"})
    reasons = SupportDesk().plan_rules(plan(too_much), REFUND_RECORDS)
    assert reasons == [
        "step 1 (refund_charge): refund 60.0 exceeds the 49.00 left on charge CH-3002"
    ]


def test_domain_rule_refund_counts_what_was_refunded_already() -> None:
    charges = REFUND_RECORDS["charges"]["charges"]
    refunded = [charges[0], {**charges[1], "refunded": 49.0}]
    records = {**REFUND_RECORDS, "charges": {"invoice_id": "INV-2001", "charges": refunded}}
    assert SupportDesk().plan_rules(plan(refund_step()), records) != []


def test_domain_rule_refund_only_on_the_invoice_charges() -> None:
    other = refund_step(args={"charge_id": "CH-3003", "amount": 1.0, "reason": "dup"})
    assert SupportDesk().plan_rules(plan(other), REFUND_RECORDS) == [
        "step 1 (refund_charge): charge CH-3003 is not on the invoice"
    ]


def test_domain_rule_email_only_to_the_customer_on_record() -> None:
    leak = email_step(args={"to": "x@leak.example", "subject": "s", "body": "b"})
    assert SupportDesk().plan_rules(plan(leak), REFUND_RECORDS) == [
        "step 1 (send_email): x@leak.example is not the customer on record"
    ]


def test_the_runbook_plan_meets_the_rules() -> None:
    assert SupportDesk().plan_rules(plan(), REFUND_RECORDS) == []


def test_a_rejected_action_proposed_again_is_refused_and_its_twin_is_not(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings)
    runtime = Runtime(context=KeelContext.from_settings(settings))
    rejected = approval_digest("refund_charge", refund_step().args)
    state: PlanCheckView = {
        "plan": plan(),
        "entities": {"customer_id": "C-1001", "invoice_id": "INV-2001"},
        "evidence": [evidence()],
        "rejected": [rejected],
    }
    verdict = check_plan(state, runtime)["plan_verdict"]
    assert not verdict.ok
    assert verdict.reasons == ["step 1 (refund_charge): a reviewer rejected this exact action"]
    # The same plan with no rejection on record passes: the rejection alone refused it.
    assert check_plan({**state, "rejected": []}, runtime)["plan_verdict"].ok


def test_a_plan_that_repeats_an_action_exactly_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings)
    runtime = Runtime(context=KeelContext.from_settings(settings))
    state: PlanCheckView = {
        "plan": plan(refund_step(), refund_step(), email_step()),
        "entities": {"customer_id": "C-1001", "invoice_id": "INV-2001"},
        "evidence": [evidence()],
    }
    verdict = check_plan(state, runtime)["plan_verdict"]
    assert verdict.reasons == ["step 2 (refund_charge) repeats step 1 exactly"]


def test_an_email_may_announce_only_work_done_or_planned_before_it() -> None:
    refund_mail = email_step(
        args={"to": "ada@example.com", "subject": "Refund for INV-2001", "body": "Refunded."}
    )
    assert SupportDesk().plan_rules(plan(refund_step(), refund_mail), REFUND_RECORDS) == []
    assert SupportDesk().plan_rules(plan(refund_mail, refund_step()), REFUND_RECORDS) == [
        "step 1 (send_email): announces a refund on INV-2001, but nothing refunds it"
    ]
    ticket = {"ticket_id": "T-77", "customer_id": "C-1003", "status": "open"}
    records = {**REFUND_RECORDS, "ticket": ticket}
    closed_mail = email_step(
        args={"to": "ada@example.com", "subject": "Ticket T-77 closed", "body": "Done."}
    )
    assert SupportDesk().plan_rules(plan(closed_mail), records) == [
        "step 1 (send_email): announces ticket T-77 closed, but nothing closes it"
    ]
    closing = refund_step(
        tool="close_ticket", args={"ticket_id": "T-77", "resolution": "fixed"}, effect="write"
    )
    assert SupportDesk().plan_rules(plan(closing, closed_mail), records) == []
    already = {**records, "ticket": {**ticket, "status": "closed"}}
    assert SupportDesk().plan_rules(plan(closed_mail), already) == []


def test_the_plan_check_says_awaiting_approval_exactly_when_the_router_asks_for_one(
    tmp_path: Path,
) -> None:
    """What still needs approval is decided once: a receipt the thread guard holds as used does
    not count, for the status the plan check writes as for the route taken after it."""
    from langgraph.runtime import ExecutionInfo

    from graph.builder import after_plan_check
    from graph.state import KeelState, Receipt

    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings)
    ctx = KeelContext.from_settings(settings)
    info = ExecutionInfo(checkpoint_id="c-1", checkpoint_ns="", task_id="k-1", thread_id="t-1")
    runtime = Runtime(context=ctx, execution_info=info)
    digest = approval_digest("refund_charge", refund_step().args)
    receipt = Receipt(
        tool="refund_charge", digest=digest, thread_id="t-1", approved_by="ann",
        approved_at="2026-01-01T00:00:00+00:00", expires_at="2026-01-01T01:00:00+00:00",
    )  # fmt: skip
    assert ctx.guard is not None
    # As intake does: the records the plan is checked against are the recorded request's.
    ctx.guard.record_request("t-1", "Customer C-1001 paid invoice INV-2001 twice")
    assert ctx.guard.consume_receipt("t-1", digest, attempt="earlier", approved_by="ann")
    ctx.guard.settle_receipt("t-1", digest)  # the receipt was used: a receipt works once
    state: PlanCheckView = {
        "plan": plan(refund_step()),
        "entities": {"customer_id": "C-1001", "invoice_id": "INV-2001"},
        "evidence": [evidence()],
        "approvals": {digest: receipt},
    }
    update = check_plan(state, runtime)
    assert update["plan_verdict"].ok
    after: KeelState = {**state, **update}  # type: ignore[typeddict-item]
    route = after_plan_check(after, runtime)
    assert route == "approve"  # the used receipt approves nothing
    assert update.get("status") == "awaiting_approval"
