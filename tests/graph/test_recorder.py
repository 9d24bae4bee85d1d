"""The flight recorder on the compiled graph: every node, call, decision and approval, keyed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage

from graph.context import KeelContext
from keel.app import Decision, KeelApp
from keel.settings import Settings
from observability.record_events import RecordEvent
from observability.views import explain, render_tree, trace_tree
from tests.conftest import BILLING_ADDRESS as ADDRESS
from tests.conftest import BILLING_REQUEST, EMAIL_PATTERN, REFUND_REQUEST
from tools.spec import ToolEvent

NODE_PATH_BEFORE_APPROVAL = ["intake", "retrieve", "plan", "check_plan", "approve"]


class Seen:
    """An independent witness: its own listener on the registry."""

    def __init__(self) -> None:
        self.events: list[ToolEvent] = []

    def __call__(self, event: ToolEvent) -> None:
        self.events.append(event)


@pytest.fixture
def seen(app: KeelApp) -> Seen:
    witness = Seen()
    app.context.tools.listeners.append(witness)
    return witness


def _events(app: KeelApp, run_id: str | None) -> list[RecordEvent]:
    assert app.recorder is not None and run_id is not None
    return app.recorder.flight_record.events(run_id)


def _kinds(events: list[RecordEvent], kind: str) -> list[RecordEvent]:
    return [e for e in events if e.kind == kind]


def test_a_run_with_an_approval_is_recorded_completely(app: KeelApp, seen: Seen) -> None:
    waiting = app.run(REFUND_REQUEST)
    done = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="alice"))
    assert waiting.run_id is not None and done.run_id == waiting.run_id
    events = _events(app, done.run_id)

    assert {e.thread_id for e in events} == {waiting.thread_id}
    assert [e.segment for e in _kinds(events, "run_started")] == [0, 1]
    assert [e.payload.status for e in _kinds(events, "run_ended")] == [  # type: ignore[union-attr]
        "awaiting_approval", "done",
    ]  # fmt: skip
    entered = [e.node for e in _kinds(events, "node_entered")]
    assert entered[:5] == NODE_PATH_BEFORE_APPROVAL
    # The resume: each step, its result check and the answer run inside ``execute``.
    assert entered[5:] == ["approve", "execute"]
    assert len(entered) == len(_kinds(events, "node_left"))

    # Every tool call the registry told, and nothing else, in the same order.
    recorded = [e.payload.call for e in _kinds(events, "tool_call")]  # type: ignore[union-attr]
    assert recorded == seen.events and len(recorded) >= 8
    # ... each attributed to the node that made it, with that node's step.
    made_in = {(e.payload.call.agent, e.node) for e in _kinds(events, "tool_call")}  # type: ignore[union-attr]
    assert made_in == {("planner", "plan"), ("validator", "check_plan"), ("executor", "execute")}
    assert all(e.step is not None for e in _kinds(events, "tool_call"))

    # The approval asked and the answer given.
    [asked] = _kinds(events, "approval_requested")
    assert asked.payload.request["digests"] == [p.digest for p in waiting.pending or []]  # type: ignore[union-attr]
    [answered] = _kinds(events, "approval_answered")
    assert answered.payload.answer["reviewer"] == "alice"  # type: ignore[union-attr]

    # Retrieval: the evidence the state holds is what the record says was kept.
    [retrieval] = _kinds(events, "retrieval")
    kept = [c["chunk_id"] for c in retrieval.payload.evidence]  # type: ignore[union-attr]
    assert kept == [e.chunk_id for e in done.evidence]
    assert retrieval.payload.filtered  # type: ignore[union-attr]

    # Plan, verdicts and the refund's idempotency key.
    [plan] = _kinds(events, "plan")
    assert plan.payload.planner == "runbook"  # type: ignore[union-attr]
    assert [v.payload.ok for v in _kinds(events, "verdict")] == [True, True, True]  # type: ignore[union-attr]
    # The result check's verdicts are recorded by the node that runs it, one per step.
    verdicts = [(v.node, v.payload.stage, v.payload.step) for v in _kinds(events, "verdict")]  # type: ignore[union-attr]
    assert verdicts == [
        ("check_plan", "plan", None), ("execute", "result", 0), ("execute", "result", 1),
    ]  # fmt: skip
    refund = next(c for c in recorded if c.tool == "refund_charge")
    assert refund.idempotency_key == done.results[0].idempotency_key
    assert _kinds(events, "clock")


def test_every_checkpoint_in_the_record_is_one_of_the_thread(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST)
    app.resume(waiting.thread_id, Decision(kind="approve"))
    events = _events(app, waiting.run_id)
    history = {row["checkpoint_id"] for row in app.history(waiting.thread_id)}
    saved = [e.payload.checkpoint_id for e in _kinds(events, "checkpoint")]  # type: ignore[union-attr]
    assert set(saved) == history
    # Node events carry the checkpoint they started from.
    for event in _kinds(events, "node_entered"):
        assert event.checkpoint_id in history


def _approved_run(app: KeelApp, request: str) -> list[RecordEvent]:
    outcome = app.run(request)
    while outcome.status == "awaiting_approval":
        outcome = app.resume(outcome.thread_id, Decision(kind="approve"))
    assert outcome.status == "done"
    return _events(app, outcome.run_id)


def _stored_payloads(settings: Settings) -> list[str]:
    """Every event as the record file holds it: the serialized payload of each row."""
    with sqlite3.connect(settings.records_db) as raw:
        return [row[0] for row in raw.execute("SELECT payload FROM events ORDER BY seq")]


def test_sensitive_data_never_reaches_the_record_in_any_string(settings: Settings) -> None:
    private = settings.model_copy(
        update={"sensitive_fields": ["email", "to"], "sensitive_patterns": [EMAIL_PATTERN]}
    )
    with KeelApp.open(private, KeelContext.from_settings(private)) as app:
        events = _approved_run(app, BILLING_REQUEST)
    stored = _stored_payloads(private)
    assert len(stored) == len(events) > 20
    leaking = [(e.seq, e.kind, e.node) for e, row in zip(events, stored, strict=True)
               if ADDRESS in row or ADDRESS in e.model_dump_json()]  # fmt: skip
    assert leaking == []
    # Redacted, not dropped: the request, the plan and the call are there with placeholders.
    started = _kinds(events, "run_started")[0].payload
    assert started.request == "Please update the billing e-mail of C-1002 to [redacted]"  # type: ignore[union-attr]
    calls = [e.payload.call for e in _kinds(events, "tool_call")]  # type: ignore[union-attr]
    update = next(c for c in calls if c.tool == "update_billing_email")
    assert update.args == {"customer_id": "C-1002", "email": "[redacted]"}
    assert update.ok and update.digest.startswith("sha256:")


def test_a_value_seen_under_a_sensitive_field_is_hidden_in_the_rest_of_the_run(
    settings: Settings,
) -> None:
    private = settings.model_copy(update={"sensitive_fields": ["email", "to"]})
    with KeelApp.open(private, KeelContext.from_settings(private)) as app:
        events = _approved_run(app, BILLING_REQUEST)
    calls = [e.payload.call for e in _kinds(events, "tool_call")]  # type: ignore[union-attr]
    update = next(c for c in calls if c.tool == "update_billing_email")
    assert update.args["email"] == "[redacted]"
    # Redaction by field knows the address from the intake's entities on: the answer, the
    # steps' purposes, the retrieval query and the end of the run no longer show it. Before
    # that, the request itself was recorded as typed (hiding it there takes a pattern); a
    # node's entry names the channels it got, not their values.
    leaking = [(e.kind, e.node) for e in events if ADDRESS in e.model_dump_json()]
    assert leaking == [("run_started", None)]
    entered = _kinds(events, "node_entered")[0].payload
    assert "request" in entered.channels and entered.inputs == {}  # type: ignore[union-attr]
    [ended] = _kinds(events, "run_ended")
    assert "[redacted]" in ended.payload.answer  # type: ignore[union-attr]


def test_a_resume_in_another_process_hides_what_the_first_segment_saw(settings: Settings) -> None:
    private = settings.model_copy(update={"sensitive_fields": ["charge_id"]})
    with KeelApp.open(private, KeelContext.from_settings(private)) as first:
        waiting = first.run(REFUND_REQUEST)
    assert waiting.status == "awaiting_approval"
    # A new app, as `keel resume` in another process: its redactor has learned nothing yet,
    # and the human's answer names the charge in free text before any event of this segment
    # has it under `charge_id`.
    no = Decision(kind="reject", reason="CH-3002 is the original charge", reviewer="alice")
    with KeelApp.open(private, KeelContext.from_settings(private)) as second:
        done = second.resume(waiting.thread_id, no)
        events = _events(second, done.run_id)
    assert {e.segment for e in events} == {0, 1} and _kinds(events, "tool_call")
    assert [e.kind for e in events if "CH-300" in e.model_dump_json()] == []
    [answered] = _kinds(events, "approval_answered")
    messages = {d["message"] for d in answered.payload.answer["decisions"]}  # type: ignore[union-attr]
    assert messages == {"[redacted] is the original charge"}


@pytest.fixture
def model_app(settings: Settings) -> Iterator[KeelApp]:
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    chunk = next(e.chunk_id for e in hits if e.kind == "runbook")
    plan = {"intent": "refund_duplicate_charge", "steps": [{
        "tool": "refund_charge", "purpose": "refund the duplicate", "evidence": [chunk],
        "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}}]}  # fmt: skip
    reply = AIMessage(
        content=json.dumps(plan),
        usage_metadata={"input_tokens": 700, "output_tokens": 60, "total_tokens": 760},
    )
    model = FakeMessagesListChatModel(responses=[reply])
    with KeelApp.open(settings, KeelContext.from_settings(settings, planner_model=model)) as app:
        yield app


def test_a_model_call_is_recorded_with_its_prompt_output_and_tokens(model_app: KeelApp) -> None:
    outcome = model_app.run(REFUND_REQUEST)
    [call] = _kinds(_events(model_app, outcome.run_id), "model_call")
    p = call.payload
    assert p.role == "planner" and call.node == "plan"  # type: ignore[union-attr]
    assert [m["role"] for m in p.prompt] == ["system", "human"]  # type: ignore[union-attr]
    assert REFUND_REQUEST in p.prompt[1]["content"]  # type: ignore[union-attr]
    assert json.loads(p.output)["intent"] == "refund_duplicate_charge"  # type: ignore[union-attr]
    assert (p.input_tokens, p.output_tokens) == (700, 60)  # type: ignore[union-attr]


def test_trace_is_a_tree_of_segments_nodes_and_calls(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST)
    app.resume(waiting.thread_id, Decision(kind="approve"))
    tree = trace_tree(_events(app, waiting.run_id))
    assert [s.label.split(":")[1].split()[0] for s in tree.children] == ["run", "resume"]
    nodes = [n.label.split()[0] for n in tree.children[0].children if n.kind == "node"]
    assert nodes == NODE_PATH_BEFORE_APPROVAL
    execute = next(n for n in tree.children[1].children if n.label.startswith("execute"))
    assert execute.checkpoint_id is not None
    assert any(c.kind == "tool_call" and "refund_charge" in c.label for c in execute.children)
    text = render_tree(tree)
    assert "├─ intake [step 1]" in text and "│  " in text and "approval requested" in text


def test_explain_a_rejection_names_the_reviewer_and_the_plan_evidence(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST)
    app.resume(waiting.thread_id, Decision(kind="reject", reason="not a duplicate", reviewer="bob"))
    why = explain(_events(app, waiting.run_id))
    assert why.status == "refused"
    assert "rejected by bob" in why.why
    assert [s["tool"] for s in why.plan] == ["refund_charge", "send_email"]
    assert why.evidence and all(e.get("trust_tier") for e in why.evidence)
    assert why.filtered
    answered = [h for h in why.human_decisions if "answered_by" in h]
    assert answered[0]["decisions"][0] == {"type": "reject", "message": "not a duplicate"}


def test_explain_an_escalation_under_an_outage_names_the_failures(settings: Settings) -> None:
    down = settings.model_copy(update={"faults": "outage", "tool_timeout_s": 0.1})
    with KeelApp.open(down, KeelContext.from_settings(down)) as app:
        outcome = app.run(REFUND_REQUEST)
        if outcome.status == "awaiting_approval":
            outcome = app.resume(outcome.thread_id, Decision(kind="approve"))
        why = explain(_events(app, outcome.run_id))
    assert why.status == outcome.status
    failing = [f for f in why.failures if f["what"].startswith("tool")]
    assert failing or outcome.status == "done"
    if outcome.status == "escalated":
        assert why.escalation is not None and why.why.startswith("Escalated")


def test_a_run_without_recording_writes_no_record(settings: Settings) -> None:
    off = settings.model_copy(update={"record": False})
    with KeelApp.open(off, KeelContext.from_settings(off)) as app:
        outcome = app.run(REFUND_REQUEST)
    # The run still has an id (LangSmith traces carry it); nothing is written.
    assert app.recorder is None and outcome.status == "awaiting_approval"
    assert not off.records_db.exists()


def test_explain_a_denial_names_the_rule_and_the_escalation(settings: Settings) -> None:
    from evals.record_eval import DenyTool

    context = KeelContext.from_settings(settings)
    context.tools.gate = DenyTool.around(context.tools.gate, "get_customer")
    with KeelApp.open(settings, context) as app:
        outcome = app.run(REFUND_REQUEST)
        events = _events(app, outcome.run_id)
    denied = [e for e in _kinds(events, "tool_call") if e.payload.call.decision == "denied"]  # type: ignore[union-attr]
    why = explain(events)
    assert denied and len(why.denials) == len(denied)
    assert {(d["tool"], d["rule"]) for d in why.denials} == {("get_customer", "eval.deny")}
    assert why.status == outcome.status == "escalated"
    assert why.why.startswith("Escalated") and why.escalation is not None


def test_a_record_store_that_fails_loses_events_not_the_run(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A record store that stops answering (a Postgres outage, a full disk) must not fail a run
    or its irreversible step: the refund is made once, and the loss is a warning in the log."""
    from domains.support_desk.backend import DemoBackend
    from keel.app import OpenedStores
    from keel.errors import StoreUnavailable
    from stores.flight_record import SqliteFlightRecord

    class Failing(SqliteFlightRecord):
        offered = 0

        def append(self, event: RecordEvent) -> int:
            Failing.offered += 1
            raise StoreUnavailable(
                "KEEL_POSTGRES_URL=postgresql://db/keel", "flight recorder: gone"
            )

    def failing(stores: OpenedStores) -> OpenedStores:
        return OpenedStores(stores.checkpointer, stores.ledger, stores.inbox, stores.tools,
                      Failing(":memory:"), stores.leases)  # fmt: skip

    with KeelApp.open(settings, wrap_stores=failing) as app:
        waiting = app.run(REFUND_REQUEST)
        assert waiting.status == "awaiting_approval"
        assert app.resume(waiting.thread_id, Decision(kind="approve")).status == "done"
        assert app.recorder is not None and app.recorder.flight_record.count() == 0
    refunds = DemoBackend(settings.domain_db).refunds()
    assert [(r["charge_id"], r["amount"]) for r in refunds] == [("CH-3002", 49.0)]
    # One warning for the first loss and one count per segment (the run, the resume), and the
    # store is offered one event per segment, not each of the dozens a segment emits.
    lost = [r for r in caplog.records if r.getMessage() == "record_event_lost"]
    counted = [r for r in caplog.records if r.getMessage() == "record_events_lost"]
    assert len(lost) == len(counted) == Failing.offered == 2
    assert all(r.keel["lost"] > 1 for r in counted)  # type: ignore[attr-defined]
