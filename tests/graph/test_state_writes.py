"""What a prompt cannot do, a Python caller of the compiled graph cannot do either.

Issue 21's breaks 2 to 5, reproduced with LangGraph's own API on the SQLite checkpointer: a
caller who can write any state channel (``update_state`` with ``as_node``, ``Command(update=...,
goto=...)``, a run from an earlier checkpoint, ``{"__overwrite__": ...}`` past a reducer). Each
test judges the domain's backend (refunds, e-mails, tickets), never the thread's own account, and
checks that the thread is still readable afterwards. The guarantees hold because what they depend
on lives in the thread guard (``stores.guard``), beside the intent ledger, not in the checkpoint.
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from graph.state import Plan, Receipt, Step, Verdict
from keel.app import Decision, KeelApp
from tests.conftest import BILLING_REQUEST, REFUND_REQUEST
from tools.spec import ToolEvent

TICKET_REQUEST = "Close ticket T-77 and tell the customer"
SEPA_REQUEST = (
    "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge"
)


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def _room_for_another_refund(backend: DemoBackend) -> None:
    """Double every refunded charge, so the refund's scope (no more than what is left of the
    charge) cannot be what stops a second refund: only the guarantees under test can."""
    with backend._tx() as conn:
        conn.execute(
            "UPDATE charges SET amount_cents = amount_cents * 2"
            " WHERE id IN (SELECT charge_id FROM refunds)"
        )


def _readable(app: KeelApp, thread_id: str) -> str:
    """The thread still answers LangGraph and Keel; its status."""
    assert app.graph.get_state(_config(thread_id)).values
    return app.show(thread_id).status


def test_a_finished_thread_sent_back_to_execute_with_its_results_erased_sends_nothing_again(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Break 2, first variant: ``results`` overwritten past its reducer, the cursor at -1."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-goto")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"
    assert (len(backend.refunds()), len(backend.outbox())) == (1, 1)
    _room_for_another_refund(backend)

    app.graph.invoke(
        Command(update={"results": {"__overwrite__": []}, "cursor": -1}, goto="execute"),
        _config("t-goto"), context=app.context, durability="sync",
    )  # fmt: skip
    assert (len(backend.refunds()), len(backend.outbox())) == (1, 1)
    assert _readable(app, "t-goto") in ("escalated", "done")


def test_every_cursor_a_caller_sets_on_a_finished_thread_acts_no_second_time(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The same through every index: a valid one meets the ledger, an invalid one is refused."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-any")
    app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    _room_for_another_refund(backend)
    for cursor in (0, 1, -1, -2, 2, 99):
        app.graph.invoke(
            Command(update={"results": {"__overwrite__": []}, "cursor": cursor}, goto="execute"),
            _config("t-any"), context=app.context, durability="sync",
        )  # fmt: skip
        assert (len(backend.refunds()), len(backend.outbox())) == (1, 1), cursor
        _readable(app, "t-any")


def test_a_fork_before_execute_with_a_negative_cursor_pays_the_refund_once(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Break 2, second variant: ``update_state`` on the checkpoint before ``execute`` (as the
    approval node, cursor -2), then a run from the new checkpoint."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-fork")
    app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    assert len(backend.refunds()) == 1
    _room_for_another_refund(backend)
    history = list(app.graph.get_state_history(_config("t-fork")))
    before_execute = [s for s in history if s.next == ("execute",)][-1]  # the first step's
    forked = app.graph.update_state(before_execute.config, {"cursor": -2}, as_node="approve")
    app.graph.invoke(None, forked, context=app.context, durability="sync")
    assert len(backend.refunds()) == 1
    assert len(backend.outbox()) == 1
    _readable(app, "t-fork")


def test_a_run_from_the_checkpoint_before_execute_pays_the_refund_once(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Time travel without a write: the same checkpoint, the same task, run again."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-again")
    app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    _room_for_another_refund(backend)
    history = list(app.graph.get_state_history(_config("t-again")))
    before_execute = [s for s in history if s.next == ("execute",)][-1]
    app.graph.invoke(None, before_execute.config, context=app.context, durability="sync")
    assert (len(backend.refunds()), len(backend.outbox())) == (1, 1)
    _readable(app, "t-again")


def test_erasing_the_evidence_at_the_approval_does_not_erase_the_taint(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Break 3: the tainted ticket closure, its evidence emptied and marked approved by a write."""
    waiting = app.run(TICKET_REQUEST, thread_id="t-taint")
    assert waiting.status == "awaiting_approval"
    app.graph.update_state(
        _config("t-taint"),
        {"evidence": [], "review": "approved", "status": "running"},
        as_node="approve",
    )
    app.graph.invoke(None, _config("t-taint"), context=app.context, durability="sync")
    assert backend.get_ticket("T-77")["status"] == "open"
    assert backend.outbox() == []
    assert _readable(app, "t-taint") != "done"


def test_a_rejection_erased_from_the_state_still_holds(app: KeelApp, backend: DemoBackend) -> None:
    """Break 4: after a rejection, ``rejected`` overwritten and the approval asked again."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-reject")
    refused = app.resume(waiting.thread_id, Decision(kind="reject", reason="not a duplicate"))
    assert refused.status == "refused"
    app.graph.update_state(
        _config("t-reject"),
        {"rejected": {"__overwrite__": []}, "review": "invalid"},
        as_node="approve",
    )
    app.graph.invoke(None, _config("t-reject"), context=app.context, durability="sync")
    state = app.graph.get_state(_config("t-reject"))
    # The rejected action is not asked for again; were it asked, an approval would pay nothing.
    if state.interrupts:
        app.resume("t-reject", Decision(kind="approve", reviewer="requester"))
    assert backend.refunds() == []
    assert backend.outbox() == []
    assert _readable(app, "t-reject") == "refused"


def test_a_forged_settlement_event_keeps_the_thread_waiting(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Break 5: a resume with an event the domain never emitted."""
    waiting = app.run(SEPA_REQUEST, thread_id="t-forged")
    outcome = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    assert outcome.status == "awaiting_event" and outcome.waiting is not None
    forged = {"seq": 424242, "type": "refund.settled", "key": outcome.waiting.key,
              "payload": {"refund_id": outcome.waiting.key, "status": "settled"},
              "created_at": "2026-11-25T00:00:00+00:00"}  # fmt: skip
    app.graph.invoke(
        Command(resume={"event": forged}), _config("t-forged"),
        context=app.context, durability="sync",
    )  # fmt: skip
    assert backend.outbox() == []
    assert _readable(app, "t-forged") == "awaiting_event"
    note = app.graph.get_state(_config("t-forged")).interrupts[0].value.get("refused", "")
    assert "424242" in note, note

    # The real one, relayed from the outbox, still wakes it.
    backend.settle_pending_refunds()
    assert app.dispatch_events()[0]["woke"] == ["t-forged"]
    assert app.show("t-forged").status == "done"
    assert len(backend.outbox()) == 1


def test_a_real_event_replayed_by_hand_wakes_nothing_twice(
    app: KeelApp, backend: DemoBackend
) -> None:
    """An event the outbox did emit, but the relay never delivered to this thread (or it woke
    the thread already), is refused too."""
    waiting = app.run(SEPA_REQUEST, thread_id="t-early")
    outcome = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    assert outcome.waiting is not None
    backend.settle_pending_refunds()
    [event] = backend.events_after(0)
    app.graph.invoke(
        Command(resume={"event": event}), _config("t-early"),
        context=app.context, durability="sync",
    )  # fmt: skip
    assert backend.outbox() == []  # emitted, but not delivered by the relay: not yet
    assert app.show("t-early").status == "awaiting_event"
    app.dispatch_events()
    assert app.show("t-early").status == "done"
    assert len(backend.outbox()) == 1


def _as(user: str, thread_id: str) -> dict[str, Any]:
    """A run's config as a serving engine makes it for an authenticated ``user``."""
    auth = {"identity": "keel", "keel_user": user, "is_authenticated": True}
    return {"configurable": {"thread_id": thread_id, "langgraph_auth_user": auth}}


def _approve_all(app: KeelApp, user: str, thread_id: str) -> Any:
    question = app.graph.get_state(_config(thread_id)).interrupts[0].value
    answer = {"decisions": [{"type": "approve", "digest": d} for d in question["digests"]]}
    return app.graph.invoke(
        Command(resume=answer), _as(user, thread_id), context=app.context, durability="sync"
    )


def test_the_requester_cannot_approve_their_own_refund(app: KeelApp, backend: DemoBackend) -> None:
    """Four eyes (the shipped manifest's refunds): the engine's authenticated user who asked is
    refused as its approver, with the reason, and the approval is asked again."""
    app.graph.invoke(
        {"request": REFUND_REQUEST}, _as("ann", "t-4eyes"), context=app.context, durability="sync"
    )
    assert app.context.guard is not None and app.context.guard.requester("t-4eyes") == "ann"
    _approve_all(app, "ann", "t-4eyes")
    state = app.graph.get_state(_config("t-4eyes"))
    assert state.interrupts, "the approval is asked again"
    assert "someone other than its requester (ann)" in state.values["review_note"]
    assert "four eyes" in state.interrupts[0].value["action_requests"][0]["description"]
    assert backend.refunds() == []

    _approve_all(app, "bob", "t-4eyes")
    assert app.show("t-4eyes").status == "done"
    assert len(backend.refunds()) == 1
    receipts = app.graph.get_state(_config("t-4eyes")).values["approvals"]
    assert {r.approved_by for r in receipts.values()} == {"bob"}


def test_the_requester_is_who_the_engine_authenticated_first(
    app: KeelApp, backend: DemoBackend
) -> None:
    """A later run by someone else (a chat message on the thread) does not become the requester,
    and a local run (no engine) names nobody, so four eyes cannot apply there."""
    app.graph.invoke(
        {"request": REFUND_REQUEST}, _as("ann", "t-first"), context=app.context, durability="sync"
    )
    app.graph.invoke(
        {"messages": [{"type": "human", "content": "any news?"}]}, _as("mallory", "t-first"),
        context=app.context, durability="sync",
    )  # fmt: skip
    assert app.context.guard is not None
    assert app.context.guard.requester("t-first") == "ann"
    local = app.run(REFUND_REQUEST, thread_id="t-local")
    assert app.context.guard.requester("t-local") is None
    assert app.resume(local.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"


def test_an_approved_write_run_again_from_an_earlier_checkpoint_is_not_made_again(
    app: KeelApp, backend: DemoBackend
) -> None:
    """A receipt works once for a write too (the tainted ticket closure): the same approved
    action, run again from the checkpoint before it, is found done in the ledger."""
    waiting = app.run(TICKET_REQUEST, thread_id="t-write")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"
    assert backend.get_ticket("T-77")["status"] == "closed"
    with backend._tx() as conn:  # someone reopens it: a second close would show
        conn.execute("UPDATE tickets SET status = 'open' WHERE id = 'T-77'")
    history = list(app.graph.get_state_history(_config("t-write")))
    for before_execute in [s for s in history if s.next == ("execute",)]:
        app.graph.invoke(None, before_execute.config, context=app.context, durability="sync")
        forked = app.graph.update_state(
            before_execute.config, {"results": {"__overwrite__": []}}, as_node="approve"
        )
        app.graph.invoke(None, forked, context=app.context, durability="sync")
    assert backend.get_ticket("T-77")["status"] == "open"
    assert len(backend.outbox()) == 1
    _readable(app, "t-write")


def test_an_approved_write_whose_attempt_runs_again_ends_as_the_first_did(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The same attempt run again after its call answered (a worker killed after the write and
    before its checkpoint; here, the checkpoint before it run again) is told the write was done,
    and the thread ends done, not refused for a receipt it used itself."""
    waiting = app.run(TICKET_REQUEST, thread_id="t-again-write")
    app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    history = list(app.graph.get_state_history(_config("t-again-write")))
    first = [s for s in history if s.next == ("execute",)][-1]
    app.graph.invoke(None, first.config, context=app.context, durability="sync")
    state = app.graph.get_state(_config("t-again-write")).values
    assert state["status"] == "done", state.get("answer")
    assert state["results"][0].via == "intent ledger (done earlier)"
    assert len(backend.outbox()) == 1


def test_a_thread_forked_before_its_plan_check_after_a_rejection_is_refused_by_the_validator(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The checkpoint before the rejection holds no ``rejected``: the validator reads the guard."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-recheck")
    app.resume(waiting.thread_id, Decision(kind="reject", reason="not a duplicate"))
    history = list(app.graph.get_state_history(_config("t-recheck")))
    before_check = [s for s in history if s.next == ("check_plan",)][-1]
    assert not before_check.values.get("rejected")
    app.graph.invoke(None, before_check.config, context=app.context, durability="sync")
    state = app.graph.get_state(_config("t-recheck"))
    assert not state.interrupts  # never asked for again
    verdict = state.values["plan_verdict"]
    assert any("a reviewer rejected this exact action" in r for r in verdict.reasons), verdict
    assert backend.refunds() == [] and backend.outbox() == []
    assert _readable(app, "t-recheck") in ("escalated", "refused")


def test_an_approval_asked_again_after_the_evidence_was_erased_still_shows_the_taint(
    app: KeelApp,
) -> None:
    """The approval node reads the taint from the guard: the tainted write is still asked for,
    with the evidence that tainted it."""
    app.run(TICKET_REQUEST, thread_id="t-shown")
    first = app.graph.get_state(_config("t-shown")).interrupts[0].value
    app.graph.update_state(
        _config("t-shown"), {"evidence": [], "review": "invalid"}, as_node="approve"
    )
    app.graph.invoke(None, _config("t-shown"), context=app.context, durability="sync")
    again = app.graph.get_state(_config("t-shown")).interrupts[0].value
    assert [a["name"] for a in again["action_requests"]] == [
        a["name"] for a in first["action_requests"]
    ]
    assert "close_ticket" in [a["name"] for a in again["action_requests"]]
    assert again["tainted_evidence"] and [e["chunk_id"] for e in again["tainted_evidence"]] == [
        e["chunk_id"] for e in first["tainted_evidence"]
    ]


def test_a_wait_written_away_from_the_state_still_holds_the_thread(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Break 5 without a resume: ``waiting`` cleared by a state write as the waiting node, so the
    event check never runs. The wait is the guard's, recorded when the refund answered: nothing
    after the refund runs before its event woke the thread."""
    waiting = app.run(SEPA_REQUEST, thread_id="t-unwait")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).waiting
    app.graph.update_state(
        _config("t-unwait"), {"waiting": None, "status": "running"}, as_node="await_event"
    )
    app.graph.invoke(None, _config("t-unwait"), context=app.context, durability="sync")
    assert backend.outbox() == []
    assert len(backend.refunds()) == 1
    assert _readable(app, "t-unwait") != "done"


def _plan_written_past_the_validator(app: KeelApp, thread_id: str, email: str, how: str) -> None:
    """A client's own plan (a billing change within the executor's grants: no receipt needed)
    and an ok verdict, written past the validator: a state write as the approval node (whose
    router sends an approved review to the executor), or a command that goes to the executor."""
    plan = Plan(
        intent="change_billing_email",
        steps=[Step(tool="update_billing_email", args={"customer_id": "C-1001", "email": email},
                    purpose="send the invoices elsewhere", effect="write", evidence=["x"])],
    )  # fmt: skip
    values = {"plan": plan, "plan_verdict": Verdict(stage="plan", ok=True), "cursor": 0,
              "review": "approved", "status": "running"}  # fmt: skip
    if how == "update_state":
        app.graph.update_state(_config(thread_id), values, as_node="approve")
        payload: Any = None
    else:
        payload = Command(update=values, goto="execute")
    app.graph.invoke(payload, _config(thread_id), context=app.context, durability="sync")


@pytest.mark.parametrize("how", ["update_state", "command"])
def test_a_plan_written_past_the_validator_runs_no_step(
    app: KeelApp, backend: DemoBackend, how: str
) -> None:
    """Issue 21's first remaining hole: a plan and an ok verdict written by a client skip the
    validator; the executor runs only steps of a plan the validator passed in this thread (the
    guard's record), so the write is refused, on record, and the thread escalates with the
    reason."""
    thread_id = f"t-unchecked-{how}"
    before = backend.get_customer("C-1001")["billing_email"]
    waiting = app.run(REFUND_REQUEST, thread_id=thread_id)
    assert waiting.status == "awaiting_approval"
    told: list[ToolEvent] = []
    app.context.tools.listeners.append(told.append)
    _plan_written_past_the_validator(app, thread_id, "mallory@evil.example", how)
    assert backend.get_customer("C-1001")["billing_email"] == before
    assert backend.refunds() == [] and backend.outbox() == []
    denials = [e for e in told if e.decision == "denied"]  # recorded as the gate's are
    assert [(e.tool, e.rule) for e in denials] == [("update_billing_email", "validated-plan")]
    # With the command, the approval's pending task runs again beside the goto: the written
    # plan holds nothing that needs a human (the approval node works that out from the guard,
    # not from the state's ``pending_actions``), so the thread goes on to the same refusal.
    assert _readable(app, thread_id) == "escalated"
    outcomes = app.graph.get_state(_config(thread_id)).values["results"]
    # The command's goto and the approval's route each reach the executor: the second finds the
    # cursor past the written plan and runs nothing either.
    assert len(outcomes) == (1 if how == "update_state" else 2)
    assert all(o.denied for o in outcomes)
    outcome = outcomes[0]
    assert outcome.denied and "not in a plan the validator passed" in (outcome.error or "")
    assert "not in a plan the validator passed" in (app.show(thread_id).answer or "")


def test_a_validated_plan_written_back_still_runs(app: KeelApp, backend: DemoBackend) -> None:
    """The check is the plan's identity, not who wrote it: the plan the validator passed, written
    back as a copy (an operator's time travel) after its approval, runs as before."""
    app.run(REFUND_REQUEST, thread_id="t-same")
    question = app.graph.get_state(_config("t-same")).interrupts[0].value
    answer = {"decisions": [{"type": "approve", "digest": d} for d in question["digests"]],
              "reviewer": "ann"}  # fmt: skip
    app.graph.invoke(
        Command(resume=answer), _config("t-same"), context=app.context, durability="sync",
        interrupt_before=["execute"],
    )  # fmt: skip
    plan = app.graph.get_state(_config("t-same")).values["plan"]
    copy = Plan.model_validate(plan.model_dump(mode="json"))
    app.graph.update_state(_config("t-same"), {"plan": copy}, as_node="approve")
    app.graph.invoke(None, _config("t-same"), context=app.context, durability="sync")
    assert app.show("t-same").status == "done"
    assert (len(backend.refunds()), len(backend.outbox())) == (1, 1)


def _forged(receipt: Receipt) -> dict[str, Any]:
    return {**receipt.model_dump(mode="json"), "approved_by": "mallory", "signature": "f" * 64}


@pytest.mark.parametrize(
    ("overwrite", "forged"),
    [(False, True), (True, True), (False, False)],
    ids=["merged", "overwritten", "not-a-receipt"],
)
def test_receipts_written_as_dicts_are_no_receipts(
    app: KeelApp, backend: DemoBackend, overwrite: bool, forged: bool
) -> None:
    """Issue 21's second remaining hole: receipts written as plain dicts (what a JSON client
    writes; past the reducer with ``__overwrite__`` too) are treated as no receipt: the call is
    denied with the reason, never an AttributeError on every run."""
    thread_id = f"t-dicts-{overwrite}-{forged}"
    waiting = app.run(REFUND_REQUEST, thread_id=thread_id)
    question = app.graph.get_state(_config(thread_id)).interrupts[0].value
    shaped = Receipt(tool="x", digest="d", thread_id=thread_id, approved_by="mallory",
                     approved_at="2026-11-10T09:00:00+00:00",
                     expires_at="2999-01-01T00:00:00+00:00")  # fmt: skip
    written: dict[str, Any] = {
        d: _forged(shaped.model_copy(update={"digest": d, "tool": a["name"]}))
        if forged
        else {"not": "a receipt"}
        for d, a in zip(question["digests"], question["action_requests"], strict=True)
    }
    approvals = {"__overwrite__": written} if overwrite else written
    app.graph.update_state(
        _config(thread_id), {"approvals": approvals, "review": "approved", "status": "running"},
        as_node="approve",
    )  # fmt: skip
    for _ in range(2):  # a second run is no crash either
        app.graph.invoke(None, _config(thread_id), context=app.context, durability="sync")
        state = app.graph.get_state(_config(thread_id))
        assert not [t.error for t in state.tasks if t.error is not None]
    assert backend.refunds() == [] and backend.outbox() == []
    assert _readable(app, waiting.thread_id) == "escalated"
    [outcome] = app.graph.get_state(_config(thread_id)).values["results"]
    said = "signature is not Keel's" if forged else "needs a human's approval"
    assert outcome.denied and said in (outcome.error or ""), outcome.error


@pytest.mark.parametrize(
    "request_text", [REFUND_REQUEST, TICKET_REQUEST, BILLING_REQUEST],
    ids=["refund", "ticket", "billing"],
)  # fmt: skip
def test_the_account_after_the_results_were_erased_says_what_the_ledger_did(
    app: KeelApp, backend: DemoBackend, request_text: str
) -> None:
    """Break 2's attack (``results`` erased past the reducer, the executor sent back with the
    cursor at -1) escalates the thread; its account says what was really done, from the
    ledger and the backend, never "not done" for an action the ledger holds as done, nor for a
    write the ledger never held (a billing change within the grants): that one may have been."""
    outcome = app.run(request_text, thread_id="t-account")
    if outcome.status == "awaiting_approval":
        outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="ann"))
    assert outcome.status == "done"
    app.graph.invoke(
        Command(update={"results": {"__overwrite__": []}, "cursor": -1}, goto="execute"),
        _config("t-account"), context=app.context, durability="sync",
    )  # fmt: skip
    escalation = app.show("t-account").escalation
    assert escalation is not None
    plan = app.graph.get_state(_config("t-account")).values["plan"]
    acted = [s.tool for s in plan.steps if s.effect != "read"]
    assert not escalation.left, escalation
    if request_text == BILLING_REQUEST:
        assert not escalation.done and len(escalation.unsure) == len(acted) == 1, escalation
        assert "record of its steps was rewritten" in escalation.unsure[0]
    else:
        assert len(escalation.done) == len(acted) and not escalation.unsure, escalation
