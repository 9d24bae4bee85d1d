"""Contract: a domain's acting request through the whole graph.

Nothing irreversible happens before a human approves exactly the call that runs; a rejection
holds (nothing happens, and the thread cannot be talked into it afterwards); an approved run
leaves exactly the effects the domain declares; the recorded run replays to the same decisions.
"""

from __future__ import annotations

from typing import Any

import pytest

from graph.domain import Showcase
from graph.state import approval_digest
from keel.app import Decision, KeelApp, Outcome
from keel.errors import NoPendingApproval
from keel.settings import Settings
from observability.replay import replay_run
from tests.contract.spec import Contract


def snapshot(domain: Showcase, settings: Settings) -> set[str]:
    """The domain's observable facts (``snapshot`` is what the suite asks of a domain object)."""
    taker: Any = domain
    facts: set[str] = taker.snapshot(settings)
    return facts


def finish(app: KeelApp, domain: Showcase, outcome: Outcome, then: str | None) -> Outcome:
    """Approve every pending action, and when the thread waits for an event, let the world move
    on with the domain's own command and deliver the events, until the thread stops."""
    for _ in range(10):
        if outcome.status == "awaiting_approval":
            outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="alice"))
        elif outcome.status == "awaiting_event" and then is not None:
            domain.commands()[then].run(app.settings)
            app.dispatch_events()
            outcome = app.show(outcome.thread_id)
        else:
            return outcome
    raise AssertionError(f"thread {outcome.thread_id} did not settle: {outcome.status}")


def test_nothing_irreversible_runs_before_approval_and_the_approved_run_does_what_it_declares(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract
) -> None:
    before = snapshot(domain, settings)
    first = app.run(contract.acting.request)
    assert first.status == "awaiting_approval", first.answer or first.escalation
    assert first.pending, "the approval names the actions it is for"
    irreversible = {n for n in app.context.tools.names()
                    if app.context.tools[n].effect == "irreversible"}  # fmt: skip
    assert {p.name for p in first.pending} <= irreversible | {
        n for n in app.context.tools.names() if app.context.tools[n].effect == "write"
    }
    assert contract.acting.kill_after in {p.name for p in first.pending}
    # Waiting for a human: no irreversible call has been made.
    assert not [r for r in first.results if r.tool in irreversible]
    done = finish(app, domain, first, contract.acting.then)
    assert done.status == "done", done.escalation
    assert snapshot(domain, settings) - before == set(contract.acting.effects)


def test_a_rejection_holds(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract
) -> None:
    before = snapshot(domain, settings)
    first = app.run(contract.acting.request)
    assert first.status == "awaiting_approval"
    rejected = app.resume(first.thread_id, Decision(kind="reject", reason="not now", reviewer="bo"))
    assert rejected.status in ("refused", "escalated"), rejected.status
    irreversible = {n for n in app.context.tools.names()
                    if app.context.tools[n].effect == "irreversible"}  # fmt: skip
    assert not [r for r in rejected.results if r.tool in irreversible and r.ok]
    # The thread cannot be approved after the fact.
    with pytest.raises(NoPendingApproval):
        app.resume(first.thread_id, Decision(kind="approve", reviewer="mallory"))
    assert snapshot(domain, settings) == before


def test_each_irreversible_call_ran_under_a_receipt_bound_to_its_exact_arguments(
    app: KeelApp, domain: Showcase, contract: Contract
) -> None:
    first = app.run(contract.acting.request)
    assert first.status == "awaiting_approval" and first.pending
    config = {"configurable": {"thread_id": first.thread_id}}
    assert not app.graph.get_state(config).values.get("approvals"), "no receipt before a human"
    shown = {p.digest: p for p in first.pending}
    done = finish(app, domain, first, contract.acting.then)
    receipts = app.graph.get_state(config).values.get("approvals", {})
    tools = app.context.tools
    ran = [r for r in done.results if r.ok and tools[r.tool].effect == "irreversible"]
    assert ran
    for result in ran:
        digest = approval_digest(result.tool, result.args)
        assert result.digest == digest and digest in shown, result.tool
        assert receipts[digest].tool == result.tool and receipts[digest].digest == digest
        assert receipts[digest].approved_by == "alice"


def test_a_recorded_run_replays_to_the_same_decisions(
    app: KeelApp, domain: Showcase, contract: Contract
) -> None:
    done = finish(app, domain, app.run(contract.acting.request), contract.acting.then)
    assert done.status == "done" and done.run_id is not None
    report = replay_run(app, done.run_id)
    assert report.same, report.first_divergence
    assert report.error is None and report.misses == []
    assert report.recorded_status == report.replayed_status == "done"
    assert report.served_tool_calls > 0


def test_the_answer_says_in_words_what_each_action_did_and_where_to_look(
    app: KeelApp, domain: Showcase, contract: Contract
) -> None:
    """The chat's answer: one line per write or irreversible action, in the domain's words (no
    tool name, no dict repr), then the thread and the command that explains it. The structured
    results stay in the outcome."""
    done = finish(app, domain, app.run(contract.acting.request), contract.acting.then)
    assert done.status == "done"
    acted = [r for r in done.results if r.ok and app.context.tools[r.tool].effect != "read"]
    assert acted and all(r.output for r in acted), "the structured results stay"
    lines = done.answer.splitlines()
    assert lines[0] == "Done:"
    assert len([line for line in lines if line.startswith("- ")]) == len(acted), done.answer
    for result in acted:
        assert result.tool not in done.answer, done.answer
    assert "{" not in done.answer and "'" not in done.answer.replace("’", ""), done.answer
    assert lines[-1].startswith(f"Thread {done.thread_id}: `keel explain {done.thread_id}`")
