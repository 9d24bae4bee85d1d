"""Answers a person reads in a chat (issue #23): what was done in words, one line per action with
the facts that matter, what was not done and why, who rejected (or that the server cannot say),
and where to look. The structured results stay in the state."""

from __future__ import annotations

import uuid
from typing import Any

from graph.state import Escalation, Reviewer
from keel.app import KeelApp
from tests.conftest import REFUND_REQUEST

REJECT_ALL = {"decisions": [{"type": "reject", "message": "the customer withdrew the claim"}] * 2}


def _invoke(app: KeelApp, thread_id: str, payload: Any) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread_id}}
    out = app.graph.invoke(payload, config, context=app.context, durability="sync")
    assert isinstance(out, dict)
    return out


def _command(resume: Any) -> Any:
    from langgraph.types import Command

    return Command(resume=resume)


def test_a_refund_is_answered_in_words_with_the_facts_that_matter(app: KeelApp) -> None:
    thread_id = str(uuid.uuid4())
    _invoke(app, thread_id, {"request": REFUND_REQUEST})
    out = _invoke(app, thread_id, _command({"decisions": [{"type": "approve"}] * 2}))
    assert out["status"] == "done"
    assert out["answer"].splitlines()[:3] == [
        "Done:",
        f"- Refunded 49.00 of charge CH-3002 (refund {out['results'][-2].output['refund_id']}, "
        "settled)",
        f"- E-mailed ada@example.com: “{out['plan'].steps[-1].args['subject']}” "
        f"(message {out['results'][-1].output['message_id']})",
    ]
    assert f"keel explain {thread_id}" in out["answer"]
    assert "refund_id" not in out["answer"] and "{" not in out["answer"]
    # The structured results are still there for programs.
    assert out["results"][-2].output["charge_id"] == "CH-3002"


def test_a_rejection_with_no_user_says_so_plainly_and_lists_what_was_not_done(
    app: KeelApp,
) -> None:
    """``langgraph dev`` without auth passes no user and Agent Chat UI names no reviewer."""
    thread_id = str(uuid.uuid4())
    _invoke(app, thread_id, {"request": REFUND_REQUEST})
    out = _invoke(app, thread_id, _command(REJECT_ALL))
    assert out["status"] == "refused"
    answer = out["answer"]
    assert "unknown" not in answer, answer
    assert answer.startswith("Rejected by a reviewer this server cannot name"), answer
    assert "the customer withdrew the claim" in answer
    assert "- Refund 49.00 of charge CH-3002: rejected" in answer.splitlines()
    assert "- E-mail ada@example.com: “" in answer
    assert answer.splitlines()[-1].startswith(f"Thread {thread_id}: `keel explain")


def test_a_named_reviewer_is_named(app: KeelApp) -> None:
    thread_id = str(uuid.uuid4())
    _invoke(app, thread_id, {"request": REFUND_REQUEST})
    out = _invoke(app, thread_id, _command({**REJECT_ALL, "reviewer": "alice"}))
    assert out["answer"].startswith("Rejected by alice: the customer withdrew the claim")
    values = app.graph.get_state({"configurable": {"thread_id": thread_id}}).values
    assert values["reviewed_by"] == Reviewer(name="alice", authenticated=False)


def test_an_escalation_says_what_was_not_done_and_why_in_words(app: KeelApp) -> None:
    thread_id = str(uuid.uuid4())
    request = "Refund 500 EUR on invoice INV-2002 for customer C-1002"
    out = _invoke(app, thread_id, {"request": request})
    assert out["status"] == "escalated", out["answer"]
    assert out["answer"].startswith("Escalated to a human: ")
    assert "{" not in out["answer"] and "Not done:" in out["answer"]
    assert isinstance(out["escalation"], Escalation)
    assert out["answer"].splitlines()[-1].startswith(f"Thread {thread_id}: `keel explain")
