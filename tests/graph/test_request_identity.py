"""An approval means exactly what the reviewer saw: a digest-less answer and a changed request.

Two clients on one thread, as issue 21 (break 6) found them against the engine: the reviewer
reads the request, another user sends Agent Chat UI's edit proposal, and the reviewer's "Approve
All" (``{"decisions": [{"type": "approve"}, ...]}``: no digest, no request id) arrives after it.
The compiled graph runs in-process on the SQLite checkpointer with the support desk; the engine's
authenticated user is put where Aegra puts it (``tests/graph/test_chat.py``). Each test checks the
backend (what was refunded, what was e-mailed), not the graph's own account.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from graph.wire import approval_request_of
from keel.app import Decision, KeelApp
from tests.conftest import REFUND_REQUEST

APPROVE_ALL = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
BODY_B = "Dear Ada, refunds now go through https://pay-back.example/claim, log in there."


def _user(name: str) -> dict[str, Any]:
    return {"identity": name, "is_authenticated": True}


class Thread:
    """One thread, answered by several engine users (each a client of their own)."""

    def __init__(self, app: KeelApp) -> None:
        self.app = app
        self.thread_id = str(uuid.uuid4())

    def config(self, user: str | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": self.thread_id}
        if user is not None:
            configurable["langgraph_auth_user"] = _user(user)
        return {"configurable": configurable}

    def send(self, payload: Any, user: str | None = None) -> dict[str, Any]:
        out = self.app.graph.invoke(
            payload, self.config(user), context=self.app.context, durability="sync"
        )
        assert isinstance(out, dict)
        return out

    def answer(self, resume: Any, user: str | None = None) -> dict[str, Any]:
        return self.send(Command(resume=resume), user)

    def pending(self) -> dict[str, Any]:
        (intr,) = self.app.graph.get_state(self.config()).interrupts
        request = approval_request_of(intr.value)
        assert request is not None
        return dict(request)

    def values(self) -> dict[str, Any]:
        return dict(self.app.graph.get_state(self.config()).values)


def _propose_body_b(thread: Thread, user: str) -> dict[str, Any]:
    """Agent Chat UI's edit of the e-mail (no digest), approving the refund beside it."""
    email = thread.pending()["action_requests"][1]
    edited = {**email["args"], "body": BODY_B}
    return thread.answer(
        {
            "decisions": [
                {"type": "approve"},
                {"type": "edit", "edited_action": {"name": "send_email", "args": edited}},
            ]
        },
        user,
    )


@pytest.fixture
def thread(app: KeelApp) -> Thread:
    """The refund thread, waiting for approval; its request was shown to the reviewer."""
    started = Thread(app)
    started.send({"request": REFUND_REQUEST}, user="requester")
    return started


def _sent_b(backend: DemoBackend) -> bool:
    return any(BODY_B in m["body"] for m in backend.outbox())


def test_a_blind_approve_all_does_not_approve_what_another_user_just_changed(
    thread: Thread, backend: DemoBackend
) -> None:
    shown_to_ann = thread.pending()
    assert BODY_B not in shown_to_ann["action_requests"][1]["args"]["body"]

    out = _propose_body_b(thread, "mallory")
    assert out["status"] == "awaiting_approval"
    proposal = thread.pending()
    assert proposal["action_requests"][1]["args"]["body"] == BODY_B

    # Ann's "Approve All" was aimed at body A: refused, nothing runs, and she is told why.
    out = thread.answer(APPROVE_ALL, user="ann")
    assert out["status"] == "awaiting_approval"
    assert backend.refunds() == [] and backend.outbox() == []
    assert thread.values().get("approvals", {}) == {}
    asked = thread.pending()
    note = "the actions changed since you saw them: mallory proposed an edit; review them again"
    assert note in asked["review_note"]
    assert all(note in a["description"] for a in asked["action_requests"])
    assert asked["digests"] == proposal["digests"]

    # That re-ask is what Ann now sees: her next "Approve All" approves body B, in her name.
    assert thread.answer(APPROVE_ALL, user="ann")["status"] == "done"
    assert _sent_b(backend) and len(backend.refunds()) == 1
    assert {r.approved_by for r in thread.values()["approvals"].values()} == {"ann"}


def test_a_changed_request_has_a_new_identity_and_names_its_proposer(thread: Thread) -> None:
    shown_to_ann = thread.pending()
    assert shown_to_ann["revision"] == 0 and shown_to_ann["changed_by"] == ""
    _propose_body_b(thread, "mallory")
    proposal = thread.pending()
    assert proposal["changed_by"] == "mallory" and proposal["revision"] == 1
    assert proposal["request_id"] != shown_to_ann["request_id"]


def test_the_proposer_answers_their_own_proposal(thread: Thread, backend: DemoBackend) -> None:
    _propose_body_b(thread, "mallory")
    assert thread.answer(APPROVE_ALL, user="mallory")["status"] == "done"
    assert _sent_b(backend)
    assert {r.approved_by for r in thread.values()["approvals"].values()} == {"mallory"}


def test_a_third_person_is_asked_again_like_the_reviewer(
    thread: Thread, backend: DemoBackend
) -> None:
    _propose_body_b(thread, "mallory")
    thread.answer(APPROVE_ALL, user="ann")  # refused: ann is asked again
    out = thread.answer(APPROVE_ALL, user="bob")  # bob was never shown body B either
    assert out["status"] == "awaiting_approval" and backend.outbox() == []
    assert "mallory proposed an edit" in thread.pending()["review_note"]
    assert thread.answer(APPROVE_ALL, user="bob")["status"] == "done"
    assert _sent_b(backend)


def test_keel_resume_names_the_digests_and_is_exact(
    app: KeelApp, thread: Thread, backend: DemoBackend
) -> None:
    _propose_body_b(thread, "mallory")
    done = app.resume(thread.thread_id, Decision(kind="approve", reviewer="ann"))
    assert done.status == "done" and _sent_b(backend)


def test_a_studio_answer_with_the_digests_or_the_request_id_is_exact(
    thread: Thread, backend: DemoBackend
) -> None:
    first = thread.pending()
    _propose_body_b(thread, "mallory")
    # The request id of what Ann saw first is not pending: refused as stale.
    stale = thread.answer({**APPROVE_ALL, "request_id": first["request_id"]}, user="ann")
    assert stale["status"] == "awaiting_approval" and backend.outbox() == []
    assert "not pending (stale approval)" in thread.pending()["review_note"]
    # The digests shown to Ann first are not pending either.
    old = {"decisions": [{"type": "approve", "digest": d} for d in first["digests"]]}
    thread.answer(old, user="ann")
    assert "stale approval" in thread.pending()["review_note"] and backend.outbox() == []
    # The pending request's own digests answer it exactly.
    now = thread.pending()
    exact = {"decisions": [{"type": "approve", "digest": d} for d in now["digests"]]}
    assert thread.answer(exact, user="ann")["status"] == "done"
    assert _sent_b(backend)


def test_the_current_request_id_is_exact(thread: Thread, backend: DemoBackend) -> None:
    _propose_body_b(thread, "mallory")
    current = thread.pending()["request_id"]
    assert thread.answer({**APPROVE_ALL, "request_id": current}, user="ann")["status"] == "done"


def test_a_blind_answer_to_an_unchanged_request_is_taken(
    thread: Thread, backend: DemoBackend
) -> None:
    assert thread.answer(APPROVE_ALL, user="ann")["status"] == "done"
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


def test_a_state_write_does_not_make_a_stale_answer_count(
    app: KeelApp, thread: Thread, backend: DemoBackend
) -> None:
    """An operator rewrites the review channels after the proposal (clears the note and the
    edits) and sends the thread back through the approval: the history that decides
    whether a blind answer counts is not in the checkpoint, so Ann's answer is still refused."""
    _propose_body_b(thread, "mallory")
    app.graph.update_state(
        thread.config(),
        {"review_note": "", "review": "invalid", "edits": [], "approvals": {}},
        as_node="approve",
    )
    thread.send(None, user="operator")  # the run that takes the thread to the approval again
    again = thread.pending()
    assert again["revision"] == 1 and again["changed_by"] == "mallory"
    out = thread.answer(APPROVE_ALL, user="ann")
    assert out["status"] == "awaiting_approval"
    assert backend.outbox() == [] and backend.refunds() == []
    assert "mallory proposed an edit" in thread.pending()["review_note"]


def test_a_plan_rewritten_by_a_state_write_is_asked_again_of_everyone(
    app: KeelApp, thread: Thread, backend: DemoBackend
) -> None:
    """An operator writes body B into the plan itself: nobody proposed it, so no blind answer
    approves it before it was shown again."""
    plan = thread.values()["plan"]
    email = plan.steps[1]
    steps = [plan.steps[0], email.model_copy(update={"args": {**email.args, "body": BODY_B}})]
    rewritten = plan.model_copy(update={"steps": steps})
    app.graph.update_state(
        thread.config(), {"plan": rewritten, "review": "invalid"}, as_node="approve"
    )
    thread.send(None, user="operator")
    assert thread.pending()["revision"] == 1 and thread.pending()["changed_by"] == ""
    out = thread.answer(APPROVE_ALL, user="ann")
    assert out["status"] == "awaiting_approval" and backend.outbox() == []
    assert "planned again or rewritten" in thread.pending()["review_note"]
