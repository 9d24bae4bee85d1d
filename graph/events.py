"""Threads that wait for the world: a step whose effect is still in flight (a parcel the carrier
has not delivered) puts its thread to sleep on an interrupt, and the event that settles it wakes
it.

No worker polls a thread. The thread's ``await_event`` node subscribes it in the inbox and
interrupts; the domain's transactional outbox records the event in the same transaction as the
change it announces; ``dispatch_events`` (``keel events``) relays new outbox events to the threads
subscribed to them by resuming each with ``Command(resume={"event": ...})``. Delivery is
at-least-once and the resume is idempotent: a thread that is no longer waiting for that event is
left alone, and an event that does not match what a thread waits for is refused (it keeps
waiting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import ValidationError

from graph.context import KeelContext, context_of, thread_of
from graph.state import AwaitView, DomainEvent, KeelState
from graph.wire import EventWaitRequest


def await_event(state: AwaitView, runtime: Runtime[KeelContext]) -> dict[str, Any]:
    """Sleep until the awaited event arrives; anything else keeps the thread waiting."""
    ctx = context_of(runtime)
    wait = state.get("waiting")
    assert wait is not None  # routed here only while waiting
    if ctx.inbox is not None:
        ctx.inbox.subscribe(thread_of(runtime), wait)
    request: EventWaitRequest = {"kind": "await_event", **wait.model_dump()}  # type: ignore[typeddict-item]
    answer = interrupt(request)
    raw = answer.get("event") if isinstance(answer, dict) else None
    try:
        event = DomainEvent.model_validate(raw)
    except ValidationError:
        return {"status": "awaiting_event"}  # not an event: ask again
    if (event.type, event.key) != (wait.event, wait.key):
        return {"status": "awaiting_event"}
    return {"waiting": None, "events": [event], "status": "running"}


def after_event(state: KeelState) -> Literal["await_event", "execute", "respond"]:
    if state.get("waiting") is not None:
        return "await_event"
    plan = state.get("plan")
    return "execute" if plan is not None and state.get("cursor", 0) < len(plan.steps) else "respond"


def dispatch_events(
    ctx: KeelContext, resume: Callable[[str, DomainEvent], None], waiting: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Relay the domain's new events to the threads that wait for them.

    Args:
        ctx: the runtime context (domain, settings, inbox).
        resume: resumes one thread with one event (``KeelApp`` passes its own).
        waiting: whether a thread still waits on an interrupt (a re-delivered event is skipped).

    Returns:
        One entry per event read: its type, key, and the threads it woke.

    Raises:
        RelayBusy: another relay kept the inbox longer than ``tools.events.RELAY_WAIT_S``.
    """
    if ctx.inbox is None:
        return []
    report = []
    # One relay at a time (a second waits its turn, then reads from where the first stopped):
    # two relays reading the same events would each resume the same threads.
    with ctx.inbox.relaying():
        for event in ctx.domain.events_after(ctx.settings, ctx.inbox.cursor()):
            woken = []
            for thread_id in ctx.inbox.waiting_for(event):
                if waiting(thread_id):
                    resume(thread_id, event)
                    woken.append(thread_id)
                ctx.inbox.delivered(thread_id, event)
            ctx.inbox.advance(event.seq)
            report.append({"seq": event.seq, "type": event.type, "key": event.key, "woke": woken})
    return report
