"""The intent ledger settles an irreversible call once, whatever happens around it."""

from __future__ import annotations

from typing import Any

from agents.executor import _exactly_once
from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from graph.state import ToolOutcome
from keel.settings import Settings
from stores.ledger import SqliteLedger
from tests.builders import approved

EMAIL = {"to": "ada@example.com", "subject": "Refund", "body": "We refunded you."}


def _base(step: int = 1) -> dict[str, Any]:
    return {"step": step, "tool": "send_email", "args": EMAIL, "digest": "sha256:x"}


def _run(ctx: KeelContext, key: str, thread_id: str) -> ToolOutcome:
    """The executor's irreversible path, for a call a human approved in ``thread_id``."""
    grant = approved(ctx.tools, "send_email", EMAIL, thread_id, customer_id="C-1001")
    tools = ctx.tools.for_agent("executor", grant["facts"])
    return _exactly_once(ctx, tools, "send_email", EMAIL, key, grant["approval"], _base())


def test_a_done_intent_is_never_issued_again(settings: Settings, backend: DemoBackend) -> None:
    # E-mail credentials have expired: any real call would fail. The ledger must not call.
    ctx = KeelContext.from_settings(settings.model_copy(update={"faults": "expired"}))
    assert ctx.ledger is not None
    ctx.ledger.begin("k-done", "t-1", 1, "send_email", "sha256:x")
    ctx.ledger.finish("k-done", {"message_id": "MSG-1", "to": "ada@example.com"})
    outcome = _run(ctx, "k-done", "t-1")
    assert outcome.ok and outcome.via == "intent ledger (done earlier)"
    assert backend.outbox() == []


def test_a_pending_intent_asks_the_backend_first(settings: Settings, backend: DemoBackend) -> None:
    backend.send_email(EMAIL["to"], EMAIL["subject"], EMAIL["body"], "k-pending")
    ctx = KeelContext.from_settings(settings)
    assert ctx.ledger is not None
    ctx.ledger.begin("k-pending", "t-1", 1, "send_email", "sha256:x")
    outcome = _run(ctx, "k-pending", "t-1")
    assert outcome.via == "intent ledger (found at the backend)"
    assert len(backend.outbox()) == 1
    assert SqliteLedger(settings.intent_db).for_thread("t-1")[0]["status"] == "done"


def test_a_new_intent_is_written_before_and_settled_after(
    settings: Settings, backend: DemoBackend
) -> None:
    ctx = KeelContext.from_settings(settings)
    outcome = _run(ctx, "k-new", "t-2")
    assert outcome.ok and outcome.via is None
    assert SqliteLedger(settings.intent_db).for_thread("t-2") == [
        {"key": "k-new", "step": 1, "tool": "send_email", "status": "done"}
    ]
    assert len(backend.outbox()) == 1
