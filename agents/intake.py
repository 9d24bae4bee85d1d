"""Intake: take the request (plain ``request`` or a chat client's ``messages``), refuse what cannot
be one, and pick out the business ids it names.

A thread takes one request. A chat client that writes to a thread again gets an answer in the
chat and nothing else changes: a thread waiting for an approval or an event asks again, a finished
one says so. A typed "yes" never approves anything; approvals come only through the interrupt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from agents.budgeted_context import tokens
from graph.context import KeelContext, context_of, guarded_thread
from graph.reviewer import reviewer_of
from graph.state import REFUSED_KEY, IntakeView, StateUpdate, ThreadStatus

REQUEST_MESSAGE_ID = "keel-request"
"""The id of the human message intake adds when the request came as plain ``request``."""


class Asked(NamedTuple):
    """What the caller asked: the request's text, or why there is none."""

    text: str | None
    refusal: str | None = None


def refusal_reason(request: object, max_chars: int) -> str | None:
    """Why a request cannot be taken at all, or None when it can.

    Example:
        >>> refusal_reason("   ", 2000)
        'the request is empty'
    """
    if not isinstance(request, str) or not request.strip():
        return "the request is empty"
    if len(request) > max_chars:
        return f"the request is {len(request)} characters long; the limit is {max_chars}"
    if len(re.findall(r"[^\W\d_]{2,}", request)) < 2:
        return "the request has no words to act on"
    return None


def message_text(message: AnyMessage) -> str:
    """The text of a message: its string content, or its text blocks joined (chat clients send
    ``[{"type": "text", "text": ...}]``; images and files carry no request)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = [
        block if isinstance(block, str) else str(block.get("text", ""))
        for block in content
        if isinstance(block, str) or block.get("type") == "text"
    ]
    return "\n".join(p for p in parts if p)


def last_human(messages: Sequence[AnyMessage]) -> HumanMessage | None:
    return next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)


def asked(request: object, messages: Sequence[AnyMessage]) -> Asked:
    """The request a caller sent: ``request``, or the last human message of ``messages``.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> asked(None, [HumanMessage("ship order ORD-7")]).text
        'ship order ORD-7'
        >>> asked("ship it", [HumanMessage("cancel the order")]).refusal
        "the input's request and its last human message differ; send one"
    """
    human = last_human(messages)
    if human is not None and human.additional_kwargs.get(REFUSED_KEY):
        return Asked(None, f"the last human message {unreadable(human)}")
    said = message_text(human).strip() if human is not None else None
    if request is not None and not isinstance(request, str):
        return Asked(None, "the request must be text")
    if request is None and human is None:
        if messages:
            return Asked(None, "the messages hold no human message to act on")
        return Asked(None, "no request: send 'request' or a human message in 'messages'")
    if request is not None and said is not None and request.strip() != said:
        return Asked(None, "the input's request and its last human message differ; send one")
    if request is not None:
        return Asked(request)
    if not said:
        return Asked(None, "the last human message has no text")
    return Asked(said)


def unreadable(message: AnyMessage) -> str:
    """Why a message put in place of an unreadable one was refused (``graph.state``'s reducer
    keeps such a message empty, with the reason), worded to follow "the message"."""
    reason = str(message.additional_kwargs.get(REFUSED_KEY, ""))
    return reason.removeprefix("the message ") or "could not be read"


def follow_up_note(status: ThreadStatus, *, unsure: bool = False) -> str:
    """The chat answer to a message on a thread that already took its request; ``unsure``:
    the thread was escalated with actions that may have happened, checked again now."""
    if status == "awaiting_approval":
        return (
            "This thread is waiting for your approval of the actions shown. Answer it with "
            "approve, edit or reject; a chat message approves nothing."
        )
    if status == "awaiting_event":
        return "This thread is waiting for an event (see its wait); it goes on when it arrives."
    if status == "running":
        return (
            "This thread's run stopped mid-way, before it finished, and a message does not "
            "continue it: it is handed to a human, with what was done and what was not."
        )
    if status == "escalated" and unsure:
        return "Checking again what this thread's unsure actions did; the account follows."
    return (
        f"This thread already handled its request (status: {status}). Start a new thread for a "
        "new request."
    )


def record_requester(runtime: Runtime[KeelContext], config: RunnableConfig) -> str | None:
    """Name the thread's requester in the thread guard: the user the serving engine
    authenticated for this run (``graph.reviewer``), read from the run's config, never from the
    state or the input. The first write wins; with no authenticated user (a local run) nothing
    is written, and four-eyes grants have nobody to compare a reviewer with."""
    user = reviewer_of(config, None)
    guarded = guarded_thread(runtime)
    if not user.authenticated or guarded is None:
        return None
    guard, thread_id = guarded
    return guard.record_requester(thread_id, user.name)


def intake(state: IntakeView, config: RunnableConfig, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    messages = state.get("messages", [])
    status = state.get("status")
    if status is not None:
        human = last_human(messages)
        escalation = state.get("escalation")
        unsure = escalation is not None and bool(escalation.unsure)
        note = follow_up_note(status, unsure=unsure)
        if human is not None and human.additional_kwargs.get(REFUSED_KEY):
            note = f"Your last message {unreadable(human)}; nothing was taken from it. {note}"
        reply = AIMessage(
            note,
            id=f"keel-reply-{human.id if human is not None else len(messages)}",
            name="keel",
        )
        return {"turn": "cut_short" if status == "running" else "follow_up", "messages": [reply]}
    turn: StateUpdate = {"turn": "request"}
    record_requester(runtime, config)
    if state.get("request") is not None and last_human(messages) is None:
        # Chat clients show the transcript: the plain request becomes its first message.
        turn["messages"] = [HumanMessage(str(state["request"]), id=REQUEST_MESSAGE_ID)]
    text, reason = asked(state.get("request"), messages)
    if reason is None:
        reason = refusal_reason(text, ctx.settings.max_request_chars)
    budget = ctx.settings.planner_budget_tokens
    if reason is None and text is not None and tokens(text) > budget // 2:
        reason = (
            f"the request needs about {tokens(text)} tokens; half the planner's "
            f"budget ({ctx.settings.planner_budget_tokens}) is the most a request may take"
        )
    if reason is not None or text is None:
        return turn | {"status": "refused", "answer": f"Refused: {reason}.", "planner": "none"}
    request = text.strip()
    if (guarded := guarded_thread(runtime)) is not None:
        # What vouches for an argument's value (``tools.provenance``) is this text as recorded
        # here, outside the checkpoint: a caller who writes ``request`` later adds nothing to it.
        guard, thread_id = guarded
        guard.record_request(thread_id, request)
    return turn | {
        "request": request,
        "entities": ctx.domain.extract_entities(request),
        "status": "running",
        "replans": 0,
        "cursor": 0,
    }
