"""Threads that wait for the world: a step whose effect is still in flight (a parcel the carrier
has not delivered) puts its thread to sleep on an interrupt, and the event that settles it wakes
it.

No worker polls a thread. The thread's ``await_event`` node subscribes it in the inbox and
interrupts; the domain's transactional outbox records the event in the same transaction as the
change it announces; ``dispatch_events`` (``keel events``) relays new outbox events to the threads
subscribed to them by resuming each with ``Command(resume={"event": ...})``. Delivery is
at-least-once and the resume is idempotent: a thread that is no longer waiting for that event is
left alone, and an event that does not match what a thread waits for is refused (it keeps
waiting). A resume value is only a caller's word: before anything acts on an event, the thread
checks it against the domain's outbox and the deliveries the relay recorded in the thread guard
(``refusal``), so a forged or replayed event keeps the thread waiting, with a note that says why.
The wait is in the guard as well (the executor records it when the step answers, and a wake-up
closes it): a state write that clears ``waiting`` runs nothing after the step before its event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import ValidationError

from graph.context import KeelContext, attempt_of, context_of, thread_of
from graph.state import AwaitView, DomainEvent, KeelState, StateUpdate
from graph.wire import EventWaitRequest


def await_event(state: AwaitView, runtime: Runtime[KeelContext]) -> StateUpdate:
    """Sleep until the awaited event arrives; anything else keeps the thread waiting.

    An event wakes the thread only when the thread guard and the domain vouch for it
    (``refusal``): a resume value is what a caller sent, not what happened.
    """
    ctx = context_of(runtime)
    wait = state.get("waiting")
    assert wait is not None  # routed here only while waiting
    thread_id = thread_of(runtime)
    if ctx.inbox is not None:
        ctx.inbox.subscribe(thread_id, wait)
    shown = wait.model_dump(exclude={"refused"} if not wait.refused else set())
    request: EventWaitRequest = {"kind": "await_event", **shown}  # type: ignore[typeddict-item]
    answer = interrupt(request)
    raw = answer.get("event") if isinstance(answer, dict) else None
    try:
        event = DomainEvent.model_validate(raw)
    except ValidationError:
        return {"status": "awaiting_event"}  # not an event: ask again
    if (event.type, event.key) != (wait.event, wait.key):
        return {"status": "awaiting_event"}
    reason = refusal(ctx, thread_id, event, attempt_of(runtime))
    if reason is not None:
        note = f"event {event.seq} ({event.type} {event.key}) did not count: {reason}"
        return {"waiting": wait.model_copy(update={"refused": note}), "status": "awaiting_event"}
    return {"waiting": None, "events": [event], "status": "running"}


def refusal(ctx: KeelContext, thread_id: str, event: DomainEvent, attempt: str) -> str | None:
    """Why ``event`` may not wake ``thread_id``, or None when it may (and now has).

    It must have been emitted by the domain's outbox with that number, type, key and payload;
    the relay must have delivered it to this thread (``dispatch_events`` records the delivery
    in the thread guard before it resumes the thread); and it must not have woken the thread
    before. Without a thread guard (a replay re-runs what was recorded) nothing is asked.
    """
    if ctx.guard is None:
        return None
    emitted = next(iter(ctx.domain.events_after(ctx.settings, event.seq - 1)), None)
    if emitted is None or emitted.seq != event.seq:
        return "the domain's outbox has no event with that number"
    if emitted != event:
        return "it differs from the event the domain's outbox holds with that number"
    if ctx.guard.delivery(thread_id, event.seq) != event:
        return "the relay did not deliver it to this thread"
    if not ctx.guard.record_wake(thread_id, event.seq, attempt=attempt):
        return "it already woke this thread"
    return None


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
        RelayBusy: another relay kept the inbox longer than ``stores.inbox.RELAY_WAIT_S``.
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
                    if ctx.guard is not None:
                        # Before the resume: the woken thread checks that the relay sent it.
                        ctx.guard.record_delivery(thread_id, event)
                    resume(thread_id, event)
                    woken.append(thread_id)
                ctx.inbox.delivered(thread_id, event)
            ctx.inbox.advance(event.seq)
            report.append({"seq": event.seq, "type": event.type, "key": event.key, "woke": woken})
    return report
