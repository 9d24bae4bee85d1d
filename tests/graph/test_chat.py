"""Chat clients with no Keel-specific code: messages in, an AI message out, HITL panel answers.

The compiled graph in-process on the real SQLite checkpointer (strict serializer), driven the way a
LangGraph server drives it: ``graph.invoke`` with the thread's config, chat ``messages`` as input
and Agent Chat UI's exact resume payloads (from ``buildDecisionFromState`` and "Approve All" /
"Submit all" in langchain-ai/agent-chat-ui: ``{"decisions": [...]}``, no digest, no reviewer). The
planner is the offline runbook planner; no model is involved. An engine's authenticated user is
put where Aegra and LangGraph's server put it, ``config["configurable"]["langgraph_auth_user"]``
(``EngineUser`` below has the fields of Aegra 0.11's ``User`` model).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict

from domains.support_desk.backend import DemoBackend
from graph.builder import build_graph
from graph.state import Receipt, Reviewer, approval_digest
from graph.status import thread_status
from graph.wire import approval_request_of
from keel.app import Decision, KeelApp
from keel.settings import Settings
from observability.tracing import run_config
from stores.backends import open_checkpointer
from tests.conftest import REFUND_REQUEST

APPROVE_ALL = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
"""Agent Chat UI's "Approve All" for the refund's two actions (the refund, the e-mail)."""


class EngineUser(BaseModel):
    """The shape of Aegra 0.11's ``aegra_api.models.auth.User`` (identity, is_authenticated, and
    extra fields an auth hook adds)."""

    model_config = ConfigDict(extra="allow")

    identity: str
    is_authenticated: bool = True
    permissions: list[str] = []
    display_name: str | None = None


ANONYMOUS = EngineUser(identity="anonymous", is_authenticated=False)
"""Aegra's user when no auth handler is configured."""


def _config(thread_id: str, user: object | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if user is not None:
        configurable["langgraph_auth_user"] = user
    return {"configurable": configurable}


def _say(text: str) -> dict[str, Any]:
    """What Agent Chat UI submits for a typed message (content as text blocks)."""
    return {"messages": [{"type": "human", "content": [{"type": "text", "text": text}]}]}


class Chat:
    """One thread driven as a chat client drives it: input, then resume commands."""

    def __init__(self, app: KeelApp, user: object | None = None) -> None:
        self.app = app
        self.thread_id = str(uuid.uuid4())
        self.user = user
        self.pending_digests: list[str] = []

    def send(self, payload: Any, user: object | None = None) -> dict[str, Any]:
        config = _config(self.thread_id, user if user is not None else self.user)
        out = self.app.graph.invoke(payload, config, context=self.app.context, durability="sync")
        assert isinstance(out, dict)
        return out

    def answer(self, resume: Any, user: object | None = None) -> dict[str, Any]:
        return self.send(Command(resume=resume), user)

    def state(self) -> Any:
        return self.app.graph.get_state(_config(self.thread_id))

    def values(self) -> dict[str, Any]:
        return dict(self.state().values)

    def pending(self) -> dict[str, Any]:
        (intr,) = self.state().interrupts
        request = approval_request_of(intr.value)
        assert request is not None
        return dict(request)

    def status(self) -> str:
        return thread_status(self.state()).status


def _outcome(values: dict[str, Any]) -> AIMessage:
    last = values["messages"][-1]
    assert isinstance(last, AIMessage), values["messages"]
    return last


def test_messages_in_and_an_ai_message_out_when_done(app: KeelApp, backend: DemoBackend) -> None:
    chat = Chat(app)
    out = chat.send(_say(REFUND_REQUEST))
    assert chat.status() == "awaiting_approval"
    assert out["status"] == "awaiting_approval"
    assert chat.values()["request"] == REFUND_REQUEST
    pending = chat.pending()
    assert [a["name"] for a in pending["action_requests"]] == ["refund_charge", "send_email"]
    assert backend.refunds() == []

    final = chat.answer(APPROVE_ALL)
    assert final["status"] == "done"
    human, ai = final["messages"]
    assert isinstance(human, HumanMessage)
    assert ai.content == final["answer"]
    # In words a person reads (issue #23), not a tool name and a dict repr.
    assert "Refunded 49.00 of charge CH-3002 (refund RF-" in ai.content, ai.content
    assert ai.additional_kwargs["keel"] == {"status": "done"}
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert len(backend.outbox()) == 1

    # A double-clicked "Approve All": the thread has nothing pending, nothing runs again.
    twice = chat.answer(APPROVE_ALL)
    assert twice["status"] == "done" and len(twice["messages"]) == 2
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


def test_a_plain_request_also_gets_the_transcript(app: KeelApp) -> None:
    chat = Chat(app)
    out = chat.send({"request": "What is our refund window?"})
    assert out["status"] == "done" and "30 days" in out["answer"]
    human, ai = out["messages"]
    assert human.content == "What is our refund window?"
    assert ai is _outcome(out) and ai.content == out["answer"]


def test_an_escalation_ends_with_an_ai_message_carrying_the_account(app: KeelApp) -> None:
    chat = Chat(app)
    out = chat.send(_say("Refund 500 EUR on invoice INV-2002 for customer C-1002"))
    assert out["status"] == "escalated", out.get("answer")
    ai = _outcome(out)
    assert ai.content == out["answer"] and ai.content.startswith("Escalated to a human")
    keel = ai.additional_kwargs["keel"]
    assert keel["status"] == "escalated"
    assert keel["escalation"]["reason"] == out["escalation"].reason


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({}, "no request"),
        ({"messages": []}, "no request"),
        ({"messages": [{"type": "ai", "content": "Hello, how can I help?"}]}, "no human message"),
        (
            {"messages": [{"type": "human", "content": [{"type": "image", "url": "x.png"}]}]},
            "has no text",
        ),
        (
            {"request": REFUND_REQUEST, "messages": [{"type": "human", "content": "close T-1"}]},
            "differ",
        ),
        ({"messages": [{"type": "human", "content": "  "}]}, "has no text"),
    ],
)
def test_input_without_one_clear_request_is_refused_in_the_chat(
    app: KeelApp, backend: DemoBackend, payload: dict[str, Any], why: str
) -> None:
    chat = Chat(app)
    out = chat.send(payload)
    assert out["status"] == "refused" and why in out["answer"]
    assert chat.status() == "refused"  # ended, not stalled
    ai = _outcome(out)
    assert ai.content == out["answer"] and ai.additional_kwargs["keel"] == {"status": "refused"}
    assert backend.refunds() == []


def test_a_request_and_the_same_human_message_are_one_request(app: KeelApp) -> None:
    chat = Chat(app)
    payload = {"request": REFUND_REQUEST, **_say(REFUND_REQUEST)}
    assert chat.send(payload)["status"] == "awaiting_approval"


def test_the_panels_rejection_holds_and_ends_refused(app: KeelApp, backend: DemoBackend) -> None:
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    chat.pending_digests = chat.pending()["digests"]
    reason = "not a duplicate: the customer bought two seats"
    # "Submit all 2 decisions" with both rejected (the panel requires a message).
    out = chat.answer({"decisions": [{"type": "reject", "message": reason}] * 2})
    assert out["status"] == "refused" and reason in out["answer"]
    assert _outcome(out).additional_kwargs["keel"]["status"] == "refused"
    assert chat.values()["rejected"] == chat.pending_digests
    assert backend.refunds() == [] and backend.outbox() == []

    # The rejection holds: a chat message afterwards changes nothing and runs nothing.
    again = chat.send(_say("Please just do the refund anyway"))
    assert again["status"] == "refused" and reason in again["answer"]
    assert "already handled its request" in again["messages"][-1].content
    assert chat.status() == "refused"
    assert backend.refunds() == [] and backend.outbox() == []


def test_a_typed_yes_approves_nothing_and_the_question_stays(
    app: KeelApp, backend: DemoBackend
) -> None:
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    digests = chat.pending()["digests"]
    out = chat.send(_say("yes, approve it"))
    assert chat.status() == "awaiting_approval" and out["status"] == "awaiting_approval"
    assert "approves nothing" in out["messages"][-1].content
    assert chat.pending()["digests"] == digests  # asked again, the same actions
    assert backend.refunds() == []
    assert chat.answer(APPROVE_ALL)["status"] == "done"
    assert len(backend.refunds()) == 1


def test_a_finished_thread_takes_no_second_request(app: KeelApp, backend: DemoBackend) -> None:
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    done = chat.answer(APPROVE_ALL)
    again = chat.send(_say(REFUND_REQUEST))
    assert again["status"] == "done" and again["answer"] == done["answer"]
    assert "Start a new thread" in again["messages"][-1].content
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


class WorkerDied(BaseException):
    """Stands for the worker's process dying mid-step (a BaseException: nothing catches it)."""


def test_a_message_to_a_run_cut_short_hands_it_to_a_human_and_repeats_nothing(
    app: KeelApp, backend: DemoBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after the refund and before the e-mail. A chat message then arrives:
    LangGraph drops the thread's unfinished task on new input, so the thread must not end as if
    it were finished, and the refund must not run again."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise WorkerDied

    monkeypatch.setattr(DemoBackend, "send_email", dies)
    with pytest.raises(WorkerDied):
        chat.answer(APPROVE_ALL)
    monkeypatch.undo()
    assert len(backend.refunds()) == 1 and backend.outbox() == []
    assert chat.values()["status"] == "running"  # the e-mail's step was never finished

    out = chat.send(_say("any news?"))
    assert out["status"] == "escalated" and chat.status() == "escalated"
    assert "stopped before it finished" in out["escalation"].reason
    # The e-mail's intent was written and the call begun when the worker died: nobody can tell
    # yet whether it went out, so it is reported as such, never as "not done" (issue #23).
    assert any("ada@example.com" in step for step in out["escalation"].unsure)
    assert not any("ada@example.com" in step for step in out["escalation"].left)
    assert "May have happened, being checked:" in out["answer"]
    assert "handed to a human" in out["messages"][-2].content
    assert len(backend.refunds()) == 1 and backend.outbox() == []


def test_the_panels_edit_is_asked_for_again_before_it_runs(
    app: KeelApp, backend: DemoBackend
) -> None:
    """The panel's edit carries no digest and returns values as text: the edited refund is
    validated again and shown again with its own digest, with the e-mail derived again from it
    (it states the edited amount); only an approval of those runs them."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    first = chat.pending()
    refund = first["action_requests"][0]
    edited = {**refund["args"], "amount": "10"}  # what the panel's text field returns
    out = chat.answer(
        {
            "decisions": [
                {"type": "edit", "edited_action": {"name": "refund_charge", "args": edited}},
                {"type": "approve"},
            ]
        }
    )
    assert out["status"] == "awaiting_approval"
    assert backend.refunds() == []
    again = chat.pending()
    assert [a["name"] for a in again["action_requests"]] == ["refund_charge", "send_email"]
    assert again["action_requests"][0]["args"]["amount"] == 10  # typed again
    new_digest = approval_digest("refund_charge", again["action_requests"][0]["args"])
    email = again["action_requests"][1]["args"]
    assert again["digests"] == [new_digest, approval_digest("send_email", email)]
    assert new_digest != first["digests"][0]
    assert "10.00 EUR" in email["body"] and "49.00" not in email["body"]  # derived again
    # Nobody approved anything yet: the e-mail is asked for again with the edited refund.
    assert chat.values().get("approvals", {}) == {}

    final = chat.answer(APPROVE_ALL)
    assert final["status"] == "done"
    assert [r["amount"] for r in backend.refunds()] == [10.0]
    assert len(backend.outbox()) == 1
    assert "10.00 EUR" in backend.outbox()[0]["body"]


def test_an_edit_that_breaks_the_rules_never_runs(app: KeelApp, backend: DemoBackend) -> None:
    """The validator refuses the edited refund (above the charge); the planner plans again and
    the thread asks again for what it would do now: nothing ran on the edit's word."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    refund = chat.pending()["action_requests"][0]
    edited = {**refund["args"], "amount": "5000"}
    out = chat.answer(
        {
            "decisions": [
                {"type": "edit", "edited_action": {"name": "refund_charge", "args": edited}},
                {"type": "approve"},
            ]
        }
    )
    assert out["status"] == "awaiting_approval"
    assert chat.values()["replans"] == 1
    asked = chat.pending()["action_requests"]
    assert [a["name"] for a in asked] == ["refund_charge", "send_email"]
    assert asked[0]["args"]["amount"] == 49.0
    assert backend.refunds() == [] and backend.outbox() == []


def test_a_digest_bound_answer_from_keels_own_client_still_works(
    app: KeelApp, backend: DemoBackend
) -> None:
    outcome = app.run(REFUND_REQUEST)
    edited = app.resume(
        outcome.thread_id, Decision(kind="edit", edit={"amount": 10}, reviewer="ann")
    )
    # The refund was approved with the arguments ann typed; the e-mail, derived again from the
    # edited amount, is what she has not seen yet.
    assert edited.status == "awaiting_approval" and edited.pending is not None
    assert [p.name for p in edited.pending] == ["send_email"]
    assert "10.00 EUR" in edited.pending[0].args["body"]
    done = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="ann"))
    assert done.status == "done"
    assert [r["amount"] for r in backend.refunds()] == [10.0]
    values = app.graph.get_state(_config(outcome.thread_id)).values
    assert {r.approved_by for r in values["approvals"].values()} == {"ann"}
    assert values["reviewed_by"] == Reviewer(name="ann", authenticated=False)
    assert isinstance(values["messages"][-1], AIMessage)


def test_the_authenticated_user_is_the_reviewer_whatever_the_answer_claims(
    app: KeelApp, backend: DemoBackend
) -> None:
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST), user=EngineUser(identity="requester@example.com"))
    ann = EngineUser(identity="ann@example.com", display_name="Ann")
    out = chat.answer({**APPROVE_ALL, "reviewer": "mallory"}, user=ann)
    assert out["status"] == "done"
    values = chat.values()
    receipts: list[Receipt] = list(values["approvals"].values())
    assert len(receipts) == 2
    assert {r.approved_by for r in receipts} == {"ann@example.com"}
    assert values["reviewed_by"] == Reviewer(
        name="ann@example.com", authenticated=True, claimed="mallory"
    )
    assert len(backend.refunds()) == 1


def test_the_person_named_by_keels_auth_hook_is_the_reviewer(app: KeelApp) -> None:
    """Keel's Aegra hook: ``identity`` is the team (Aegra scopes threads by it, and a reviewer
    must see the thread another user started), the person is in ``keel_user``."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST), user=EngineUser(identity="keel", keel_user="bob"))
    alice = EngineUser(identity="keel", keel_user="alice", display_name="alice")
    chat.answer(APPROVE_ALL, user=alice)
    assert {r.approved_by for r in chat.values()["approvals"].values()} == {"alice"}
    assert chat.values()["reviewed_by"] == Reviewer(name="alice", authenticated=True)


def test_the_authenticated_rejecter_is_named_in_the_answer(app: KeelApp) -> None:
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    answer = {"decisions": [{"type": "reject", "message": "no"}] * 2, "reviewer": "mallory"}
    out = chat.answer(answer, user={"identity": "ann@example.com", "is_authenticated": True})
    assert out["answer"].startswith("Rejected by ann@example.com:")
    assert chat.values()["reviewed_by"].name == "ann@example.com"


@pytest.mark.parametrize(
    ("user", "claim"),
    [
        # Aegra without an auth handler (or one that failed to load): its anonymous user.
        (EngineUser(identity="anonymous", is_authenticated=False), "ann"),
        (EngineUser(identity="anonymous", is_authenticated=False), None),
        # A user the engine could not name.
        ({"identity": ""}, "studio"),
    ],
)
def test_an_unauthenticated_engine_caller_signs_no_receipt(
    app: KeelApp, backend: DemoBackend, user: object, claim: str | None
) -> None:
    """Issue 21, break 1: a refund was approved and paid for ``unauthenticated:anonymous``."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    answer: dict[str, Any] = dict(APPROVE_ALL)
    if claim is not None:
        answer["reviewer"] = claim
    chat.answer(answer, user=user)
    values = chat.values()
    assert not values.get("approvals"), values.get("approvals")
    assert "did not authenticate who answered" in values["review_note"]
    assert thread_status(chat.state()).status == "awaiting_approval"  # asked again
    assert backend.refunds() == [] and backend.outbox() == []


def test_an_engine_user_without_the_reviewer_role_cannot_approve(
    app: KeelApp, backend: DemoBackend
) -> None:
    requester = EngineUser(identity="keel", keel_user="alice", keel_roles=["requester"])
    chat = Chat(app, user=requester)
    chat.send(_say(REFUND_REQUEST))
    chat.answer(dict(APPROVE_ALL))
    assert not chat.values().get("approvals")
    assert "alice may not approve" in chat.values()["review_note"]
    assert backend.refunds() == []
    reviewer = EngineUser(identity="keel", keel_user="rita", keel_roles=["reviewer"])
    chat.answer(dict(APPROVE_ALL), user=reviewer)
    assert {r.approved_by for r in chat.values()["approvals"].values()} == {"rita"}
    assert len(backend.refunds()) == 1


def test_the_authenticated_reviewer_is_in_the_flight_record(
    app: KeelApp, backend: DemoBackend
) -> None:
    """Recorded as an engine records a run: the recorder's callback in the run's config."""
    assert app.recorder is not None
    chat = Chat(app)
    run_id = str(uuid.uuid4())

    def segment(payload: Any, user: object) -> None:
        assert app.recorder is not None
        recording = app.recorder.start(
            run_id=run_id, thread_id=chat.thread_id, trace_id=str(uuid.uuid4())
        )
        config = run_config(
            thread_id=chat.thread_id,
            run_id=run_id,
            segment=recording.segment,
            trace_id=str(uuid.uuid4()),
            callbacks=[app.recorder.callback()],
            recursion_limit=app.settings.recursion_limit,
        )
        config["configurable"]["langgraph_auth_user"] = user
        try:
            app.graph.invoke(payload, config, context=app.context, durability="sync")
        finally:
            app.recorder.stop()

    segment(_say(REFUND_REQUEST), EngineUser(identity="requester@example.com"))
    segment(Command(resume={**APPROVE_ALL, "reviewer": "mallory"}), EngineUser(identity="ann"))
    assert chat.status() == "done"
    left = [
        e.payload
        for e in app.recorder.flight_record.events(run_id)
        if e.kind == "node_left" and e.node == "approve"
    ]
    outputs = [p.outputs for p in left if getattr(p, "outputs", None)]
    assert len(outputs) == 1, left
    (approval,) = outputs
    assert approval is not None
    assert approval["reviewed_by"]["name"] == "ann" and approval["reviewed_by"]["authenticated"]
    assert {r["approved_by"] for r in approval["approvals"].values()} == {"ann"}
    assert "mallory" not in {r["approved_by"] for r in approval["approvals"].values()}


def test_messages_and_the_reviewer_survive_the_strict_checkpoint(
    settings: Settings, app: KeelApp
) -> None:
    """Read back through a second saver on the same file: real objects, not plain dicts (the
    strict serializer turns a type it does not allow into a dict)."""
    chat = Chat(app)
    chat.send(_say(REFUND_REQUEST))
    chat.answer(APPROVE_ALL, user=EngineUser(identity="ann"))
    with open_checkpointer(settings) as saver:
        values = build_graph(saver).get_state(_config(chat.thread_id)).values
    assert [type(m) for m in values["messages"]] == [HumanMessage, AIMessage]
    assert values["messages"][-1].additional_kwargs["keel"]["status"] == "done"
    assert isinstance(values["reviewed_by"], Reviewer)
    assert all(isinstance(r, Receipt) for r in values["approvals"].values())


def test_the_chat_stream_shows_keels_answer_not_the_planners_model_output(
    settings: Settings,
) -> None:
    """Agent Chat UI streams ``messages``: every chat model call inside a node would appear in
    the chat (here, the planner's JSON plan). The planner's calls are tagged ``nostream``; the
    chat shows the human's message and Keel's answer. The model is a langchain-core fake."""
    import json

    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

    from graph.context import KeelContext
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    chunk = next(e.chunk_id for e in hits if e.kind == "runbook")
    plan = {"intent": "refund_duplicate_charge", "steps": [{
        "tool": "refund_charge", "purpose": "refund the duplicate", "evidence": [chunk],
        "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}}]}  # fmt: skip
    model = FakeMessagesListChatModel(responses=[AIMessage(json.dumps(plan))])
    context = KeelContext.from_settings(settings, planner_model=model)
    with KeelApp.open(settings, context) as app:
        chat = Chat(app)
        streamed = []
        for mode, part in app.graph.stream(
            _say(REFUND_REQUEST),
            _config(chat.thread_id),
            context=app.context,
            durability="sync",
            stream_mode=["messages", "values"],
        ):
            if mode == "messages":
                message, _metadata = part
                streamed.append(message)
        assert chat.values()["planner"].startswith("model:")  # the model did plan
        assert chat.status() == "awaiting_approval"
        approve_all = {"decisions": [{"type": "approve"}] * len(chat.pending()["digests"])}
        streamed += _stream_resume(app, chat, approve_all)
        assert chat.status() == "done"
    assert streamed, "nothing streamed"
    shown = [m for m in streamed if not isinstance(m, HumanMessage)]
    assert [m.id for m in shown] == ["keel-outcome"]
    assert all("refund_duplicate_charge" not in str(m.content) for m in streamed)


def _stream_resume(app: KeelApp, chat: Chat, resume: Any) -> list[Any]:
    out = []
    for mode, part in app.graph.stream(
        Command(resume=resume),
        _config(chat.thread_id),
        context=app.context,
        durability="sync",
        stream_mode=["messages", "values"],
    ):
        if mode == "messages":
            out.append(part[0])
    return out
