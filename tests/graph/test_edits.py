"""Edits that change what a step states: derived again and shown again, or refused with why.

Issue 21: with Agent Chat UI, editing the refund's amount from 49 to 10 made a 10.00 refund and
an e-mail telling the customer 49.00 EUR was refunded; an edit the validator refused vanished
without a word. The compiled graph in-process on the SQLite checkpointer with the support desk
and the runbook planner; the chat panel's payloads are Agent Chat UI's (values as text, no
digest), ``keel resume --edit`` is ``KeelApp.resume`` with an edit (digest-bound) and the CLI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from graph.wire import approval_request_of
from keel.app import Decision, KeelApp
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tests.conftest import REFUND_REQUEST

APPROVE_ALL = {"decisions": [{"type": "approve"}, {"type": "approve"}]}


class Panel:
    """Agent Chat UI on one thread: one user, no engine authentication (``langgraph dev``)."""

    def __init__(self, app: KeelApp) -> None:
        self.app = app
        self.config: dict[str, Any] = {"configurable": {"thread_id": str(uuid.uuid4())}}

    def send(self, payload: Any) -> dict[str, Any]:
        out = self.app.graph.invoke(
            payload, self.config, context=self.app.context, durability="sync"
        )
        assert isinstance(out, dict)
        return out

    def pending(self) -> dict[str, Any]:
        (intr,) = self.app.graph.get_state(self.config).interrupts
        request = approval_request_of(intr.value)
        assert request is not None
        return dict(request)

    def edit_refund(self, **changes: str) -> dict[str, Any]:
        refund = self.pending()["action_requests"][0]
        args = {**refund["args"], **changes}
        edit = {"type": "edit", "edited_action": {"name": "refund_charge", "args": args}}
        return self.send(Command(resume={"decisions": [edit, {"type": "approve"}]}))


def _one_refund_of_10_and_an_email_that_says_so(backend: DemoBackend) -> None:
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 10.0)]
    (mail,) = backend.outbox()
    assert "10.00 EUR" in mail["body"]
    assert "49" not in mail["body"]  # nothing says the whole duplicate was refunded


def test_the_panels_partial_refund_refunds_10_and_says_10(
    app: KeelApp, backend: DemoBackend
) -> None:
    panel = Panel(app)
    panel.send({"request": REFUND_REQUEST})
    assert panel.edit_refund(amount="10")["status"] == "awaiting_approval"
    asked = panel.pending()["action_requests"]
    refund, email = asked
    assert refund["args"]["amount"] == 10.0
    assert "10.00 EUR" in refund["description"]
    assert "amount 49.0 -> 10.0" in panel.pending()["review_note"]  # what the edit changed
    step = app.graph.get_state(panel.config).values["plan"].steps[0]
    assert "49" not in step.purpose and "49" not in step.postcondition  # derived again
    assert "10.00 EUR" in email["args"]["body"] and "49" not in email["args"]["body"]
    assert backend.refunds() == [] and backend.outbox() == []
    assert panel.send(Command(resume=APPROVE_ALL))["status"] == "done"
    _one_refund_of_10_and_an_email_that_says_so(backend)


def test_keel_resume_edit_refunds_10_and_says_10(app: KeelApp, backend: DemoBackend) -> None:
    waiting = app.run(REFUND_REQUEST)
    edited = app.resume(waiting.thread_id, Decision(kind="edit", edit={"amount": 10}))
    assert edited.status == "awaiting_approval" and edited.pending is not None
    (email,) = edited.pending  # the refund was approved as typed; the e-mail is new
    assert "10.00 EUR" in email.args["body"] and "amount 49.0 -> 10" in email.description
    assert backend.refunds() == [] and backend.outbox() == []
    done = app.resume(waiting.thread_id, Decision(kind="approve"))
    assert done.status == "done"
    _one_refund_of_10_and_an_email_that_says_so(backend)


def test_keel_resume_edit_on_the_command_line(
    keel: Callable[..., tuple[int, Any, str]], home: Path
) -> None:
    code, waiting, _ = keel("run", REFUND_REQUEST, "--json")
    assert code == 0 and waiting["status"] == "awaiting_approval"
    code, edited, _ = keel("resume", waiting["thread_id"], "--edit", '{"amount": 10}', "--json")
    assert code == 0 and edited["status"] == "awaiting_approval"
    assert [p["name"] for p in edited["pending"]] == ["send_email"]
    code, done, _ = keel("resume", waiting["thread_id"], "--approve", "--json")
    assert code == 0 and done["status"] == "done"
    _one_refund_of_10_and_an_email_that_says_so(DemoBackend(home / "support_desk.sqlite"))


def test_an_edit_the_validator_refuses_is_explained_when_asked_again(
    app: KeelApp, backend: DemoBackend
) -> None:
    panel = Panel(app)
    panel.send({"request": REFUND_REQUEST})
    out = panel.edit_refund(charge_id="CH-XX")  # a malformed charge id
    assert out["status"] == "awaiting_approval"
    asked = panel.pending()
    assert asked["action_requests"][0]["args"]["charge_id"] == "CH-3002"  # the plan as it was
    note = asked["review_note"]
    assert note.startswith("the edit by unknown was refused:") and "CH-XX" in note
    assert all(note in a["description"] for a in asked["action_requests"])
    assert backend.refunds() == [] and backend.outbox() == []
    # Answered, the note goes: the next request would not carry it.
    assert panel.send(Command(resume=APPROVE_ALL))["status"] == "done"
    assert app.graph.get_state(panel.config).values["review_note"] == ""


def test_an_edit_above_the_charge_is_refused_with_the_rule(
    app: KeelApp, backend: DemoBackend
) -> None:
    panel = Panel(app)
    panel.send({"request": REFUND_REQUEST})
    panel.edit_refund(amount="5000")
    note = panel.pending()["review_note"]
    assert "was refused" in note and "exceeds" in note
    assert backend.refunds() == []


def _model_plan(chunk: str, amount: float, says: float) -> str:
    return json.dumps(
        {
            "intent": "refund_duplicate_charge",
            "steps": [
                {
                    "tool": "refund_charge",
                    "purpose": f"Refund {amount:.2f} EUR of the duplicate",
                    "evidence": [chunk],
                    "args": {"charge_id": "CH-3002", "amount": amount, "reason": "duplicate"},
                },
                {
                    "tool": "send_email",
                    "purpose": "Tell the customer",
                    "evidence": [chunk],
                    "args": {
                        "to": "ada@example.com",
                        "subject": "Refund for INV-2001",
                        "body": f"We refunded {says:.2f} EUR on invoice INV-2001.",
                    },
                },
            ],
        }
    )


def _model_app(settings: Settings, *replies: str) -> KeelApp:
    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    chunk = next(e.chunk_id for e in hits if e.kind == "runbook")
    model = FakeMessagesListChatModel(
        responses=[AIMessage(r.replace("CHUNK", chunk)) for r in replies]
    )
    return KeelApp.open(settings, KeelContext.from_settings(settings, planner_model=model))


def test_a_model_planner_derives_the_edit_again(settings: Settings, backend: DemoBackend) -> None:
    """The model is told the edit as a constraint and plans again; here it says 10.00."""
    with _model_app(
        settings, _model_plan("CHUNK", 49.0, 49.0), _model_plan("CHUNK", 10.0, 10.0)
    ) as app:
        panel = Panel(app)
        panel.send({"request": REFUND_REQUEST})
        panel.edit_refund(amount="10")
        email = panel.pending()["action_requests"][1]
        assert "10.00 EUR" in email["args"]["body"]
        assert panel.send(Command(resume=APPROVE_ALL))["status"] == "done"
    assert [r["amount"] for r in backend.refunds()] == [10.0]


def test_a_model_plan_that_still_states_the_old_amount_refuses_the_edit(
    settings: Settings, backend: DemoBackend
) -> None:
    """Derived again, the model's e-mail still says 49.00: the edit is refused with that reason,
    and the model's plan made again (the third reply) is asked for."""
    with _model_app(
        settings,
        _model_plan("CHUNK", 49.0, 49.0),
        _model_plan("CHUNK", 10.0, 49.0),
        _model_plan("CHUNK", 49.0, 49.0),
    ) as app:
        panel = Panel(app)
        panel.send({"request": REFUND_REQUEST})
        panel.edit_refund(amount="10")
        asked = panel.pending()
        assert "was refused" in asked["review_note"] and "still states 49.0" in asked["review_note"]
        assert asked["action_requests"][0]["args"]["amount"] == 49.0
    assert backend.refunds() == [] and backend.outbox() == []
