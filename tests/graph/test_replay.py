"""Deterministic replay: the same decisions from the record alone, nothing live touched, and a
changed gate, validator or prompt shown as the first decision that comes out differently."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langgraph.types import Command

from agents import prompts
from domains.support_desk.backend import DemoBackend
from domains.support_desk.domain import SupportDesk
from graph.context import KeelContext
from keel.app import Decision, KeelApp, Outcome
from keel.errors import BadRequest
from keel.settings import Settings
from observability.replay import decisions, first_divergence, replay_run
from stores.guard import SqliteGuard
from tests.conftest import BILLING_REQUEST, EMAIL_PATTERN, REFUND_REQUEST
from tools.permissions import PermissionGate
from tools.spec import CallRequest, ToolRegistry


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _approved(app: KeelApp, request: str = REFUND_REQUEST) -> Outcome:
    outcome = app.run(request)
    while outcome.status == "awaiting_approval":
        outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="alice"))
    assert outcome.run_id is not None
    return outcome


def test_replay_reproduces_every_decision_and_touches_nothing_live(
    app: KeelApp, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _approved(app)
    assert done.status == "done"
    before = {p: _digest(p) for p in (settings.domain_db, settings.intent_db)}

    def live(*_: Any, **__: Any) -> Any:
        raise AssertionError("replay called a live backend")

    for method in ("get_invoice", "list_charges", "get_customer", "refund_charge", "send_email"):
        monkeypatch.setattr(DemoBackend, method, live)
    report = replay_run(app, done.run_id or "")
    assert report.same, report.first_divergence
    assert report.first_divergence is None and report.error is None
    assert report.recorded_status == report.replayed_status == "done"
    assert report.served_tool_calls >= 8
    assert report.redacted_events == 0  # the default settings redact nothing a demo run holds
    assert {p: _digest(p) for p in before} == before


@pytest.mark.parametrize("fault_profile", ["transient", "outage", "drift"])
def test_replay_reproduces_runs_under_faults(settings: Settings, fault_profile: str) -> None:
    faulty = settings.model_copy(
        update={"faults": fault_profile, "fault_seed": 3, "tool_timeout_s": 0.1}
    )
    with KeelApp.open(faulty, KeelContext.from_settings(faulty)) as app:
        outcome = _approved(app)
        report = replay_run(app, outcome.run_id or "")
    assert report.same, report.first_divergence
    assert report.replayed_status == outcome.status


@pytest.mark.parametrize("answer", ["json", "tool_call"])
def test_replay_of_a_model_planned_run_serves_the_model_from_the_record(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    chunk = next(e.chunk_id for e in hits if e.kind == "runbook")
    plan = {"intent": "refund_duplicate_charge", "steps": [{
        "tool": "refund_charge", "purpose": "refund the duplicate", "evidence": [chunk],
        "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}}]}  # fmt: skip
    reply = (
        AIMessage(content=json.dumps(plan))
        if answer == "json"
        else AIMessage(content="", tool_calls=[{"name": "submit_plan", "args": plan, "id": "c1"}])
    )
    model = FakeMessagesListChatModel(responses=[reply])
    with KeelApp.open(settings, KeelContext.from_settings(settings, planner_model=model)) as app:
        outcome = _approved(app)
        assert outcome.planner.startswith("model:")
        report = replay_run(app, outcome.run_id or "")
        assert report.same and report.served_model_calls == 1 and report.changed_prompts == []

        # A changed prompt: the recorded answer is served again, and the change is reported.
        monkeypatch.setattr(prompts, "PLANNER_SYSTEM", prompts.PLANNER_SYSTEM + "\nBe terse.")
        changed = replay_run(app, outcome.run_id or "")
    assert changed.changed_prompts == [0]


def test_a_redacted_run_replays_with_its_placeholders_and_says_so(settings: Settings) -> None:
    private = settings.model_copy(update={"sensitive_patterns": [EMAIL_PATTERN]})
    with KeelApp.open(private, KeelContext.from_settings(private)) as app:
        done = _approved(app, BILLING_REQUEST)
        assert done.status == "done"
        report = replay_run(app, done.run_id or "")
    # The record holds "... to [redacted]": the runbook planner finds no address to plan with,
    # so the replay diverges at the plan, and the report counts the placeholders it served.
    assert not report.same and report.redacted_events > 0
    d = report.first_divergence
    assert d is not None and d.recorded is not None and d.replayed is not None
    assert d.recorded.kind == d.replayed.kind == "plan"
    assert d.recorded.detail["intent"] == "update_billing_email"
    assert d.replayed.detail["steps"] == []
    assert report.error is None and report.misses == []


@dataclass
class DenyRefunds(PermissionGate):
    """The manifest's gate, except that nobody may refund."""

    @property
    def version(self) -> str:
        return "test-deny-refunds"

    def check(self, request: CallRequest, tools: ToolRegistry) -> tuple[str, str] | None:
        if request.spec.name == "refund_charge":
            return ("test.no-refunds", "refunds are not granted to anyone")
        return super().check(request, tools)


def test_replay_under_another_gate_shows_the_first_decision_it_changes(app: KeelApp) -> None:
    done = _approved(app)
    gate = app.context.tools.gate
    assert isinstance(gate, PermissionGate)
    stricter = DenyRefunds(**{f.name: getattr(gate, f.name) for f in fields(gate)})
    report = replay_run(app, done.run_id or "", gate=stricter)
    assert not report.same
    d = report.first_divergence
    assert d is not None and d.recorded is not None and d.replayed is not None
    assert d.replayed.kind == "tool_call" and d.replayed.detail["tool"] == "refund_charge"
    assert (d.recorded.detail["decision"], d.replayed.detail["decision"]) == ("allowed", "denied")
    assert report.replay_manifest == "test-deny-refunds"
    assert report.recorded_status == "done" and report.replayed_status != "done"


def test_replay_with_a_changed_validator_diverges_at_its_verdict(
    app: KeelApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = _approved(app)
    monkeypatch.setattr(SupportDesk, "plan_rules", lambda self, plan, records: ["refunds frozen"])
    report = replay_run(app, done.run_id or "")
    d = report.first_divergence
    assert not report.same and d is not None and d.replayed is not None
    assert d.replayed.kind == "verdict" and d.replayed.detail["ok"] is False
    assert report.replayed_status != "done"


def test_first_divergence_names_the_position_and_both_sides(app: KeelApp) -> None:
    done = _approved(app)
    assert app.recorder is not None
    recorded = decisions(app.recorder.flight_record.events(done.run_id or ""))
    assert first_divergence(recorded, recorded) is None
    shorter = first_divergence(recorded, recorded[:-1])
    assert shorter is not None and shorter.index == len(recorded) - 1 and shorter.replayed is None


def test_replay_of_an_unknown_run_is_refused(app: KeelApp) -> None:
    with pytest.raises(BadRequest, match="no recorded run"):
        replay_run(app, "no-such-run")


SEPA_REQUEST = (
    "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge"
)


@pytest.fixture
def guard_calls(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every SQLite thread guard's reads and writes, by whose they are: the live one (the
    intent ledger's file) or another (a replay's own)."""
    calls: dict[str, list[str]] = {"live": [], "other": []}
    for name in ("_db", "record_wake"):
        original = getattr(SqliteGuard, name)

        def spy(self: SqliteGuard, *args: Any, _original: Any = original, _name: str = name,
                **kwargs: Any) -> Any:  # fmt: skip
            calls["live" if self.path == settings.intent_db else "other"].append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SqliteGuard, name, spy)
    return calls


def test_replay_keeps_its_own_thread_guard_and_reads_nothing_of_the_live_one(
    app: KeelApp, guard_calls: dict[str, list[str]]
) -> None:
    """The gate, the validator and the approval node read a guard in replay as in the run (the
    approval history included), a throwaway one: the live guard holds the recorded run's
    receipts, spent, and its approval history is the thread's, not the replay's to write."""
    done = _approved(app)
    guard_calls["live"].clear()
    report = replay_run(app, done.run_id or "")
    assert report.same, report.first_divergence
    assert guard_calls["live"] == [], "replay read or wrote the live thread guard"
    assert guard_calls["other"], "replay ran with no thread guard"


def test_a_replayed_event_wakes_the_thread_through_the_replays_guard(
    app: KeelApp, backend: DemoBackend, settings: Settings, guard_calls: dict[str, list[str]]
) -> None:
    """A bank refund waits for its settlement; the relay delivers it. In replay the thread
    guard checks the wake-up as in the run (delivered by the relay, once), and the verdicts are
    the same: the e-mail goes out after the settlement, not before."""
    waiting = app.run(SEPA_REQUEST, thread_id="t-sepa")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == (
        "awaiting_event"
    )
    backend.settle_pending_refunds()
    assert app.dispatch_events()[0]["woke"] == ["t-sepa"]
    done = app.show("t-sepa")
    assert done.status == "done" and done.run_id is not None
    before = _digest(settings.intent_db)
    report = replay_run(app, done.run_id)
    assert report.same, report.first_divergence
    assert report.recorded_status == report.replayed_status == "done"
    assert guard_calls["other"].count("record_wake") == 1
    assert _digest(settings.intent_db) == before  # the live guard read, never written


def test_a_replayed_made_up_event_is_refused_as_in_the_run(
    app: KeelApp, backend: DemoBackend, settings: Settings
) -> None:
    """A caller resumes the waiting thread with an event the relay never sent: refused in the
    run, and in replay too (the replay's guard holds only what the relay delivered)."""
    waiting = app.run(SEPA_REQUEST, thread_id="t-forged")
    outcome = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
    assert outcome.waiting is not None
    forged = {
        "seq": 1, "type": "refund.settled", "key": outcome.waiting.key,
        "payload": {"status": "settled"}, "created_at": "2026-11-10T09:00:00+00:00",
    }  # fmt: skip
    app.invoke_segment(Command(resume={"event": forged}), "t-forged", "event")
    assert app.show("t-forged").status == "awaiting_event"
    assert backend.outbox() == []
    backend.settle_pending_refunds()
    assert app.dispatch_events()[0]["woke"] == ["t-forged"]
    done = app.show("t-forged")
    assert done.status == "done" and done.run_id is not None
    report = replay_run(app, done.run_id)
    assert report.same, report.first_divergence
    assert report.recorded_status == report.replayed_status == "done"
