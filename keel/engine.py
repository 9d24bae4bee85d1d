"""Keel's threads on an engine, from the client's side: through the LangGraph SDK, no Keel process.

The engine (Aegra; ``make serve``, docs/serving.md) runs the graph; these helpers are
what a second client needs to take part: read the approval a thread waits on, answer it with the
digests it was shown, and relay the domain's outbox events to the threads that wait for them.
Each is a few SDK calls, so any client (a reviewer's tool, a cron job, another service) can do the
same without Keel installed.

Example:
    >>> from langgraph_sdk import get_sync_client  # doctest: +SKIP
    >>> reviewer = get_sync_client(url=URL, headers={"Authorization": TOKEN})  # doctest: +SKIP
    >>> request = pending_approval(reviewer, thread_id)  # doctest: +SKIP
    >>> run = answer_approval(reviewer, thread_id, request, "approve")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from graph.approval import Decision, approval_answer
from graph.context import KeelContext
from graph.state import DomainEvent
from graph.waits import dispatch_events
from graph.wire import ApprovalRequest, approval_request_of, event_wait_of
from keel.errors import KeelError

ASSISTANT = "keel"
"""The graph's id in ``aegra.json`` / ``langgraph.json``."""


class EngineError(KeelError):
    """The engine answered what a client cannot use (no approval pending, a run failed)."""


def _interrupts(client: Any, thread_id: str) -> list[dict[str, Any]]:
    state = client.threads.get_state(thread_id)
    found: list[dict[str, Any]] = list(state.get("interrupts") or [])
    for task in state.get("tasks") or []:
        found.extend(task.get("interrupts") or [])
    seen: set[str] = set()
    unique = []
    for item in found:
        key = str(item.get("id", id(item)))
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def pending_approval(client: Any, thread_id: str) -> ApprovalRequest | None:
    """The approval request a thread waits on (LangChain's HITL schema plus Keel's digests): an
    interrupt value read as an ``ApprovalRequest`` (``graph.wire``), never recognised by a key."""
    for item in _interrupts(client, thread_id):
        request = approval_request_of(item.get("value"))
        if request is not None:
            return request
    return None


def waiting_for_event(client: Any, thread_id: str) -> bool:
    """Whether a thread sleeps on an event wait (``graph/waits.py``), read as its type."""
    return any(
        event_wait_of(item.get("value")) is not None for item in _interrupts(client, thread_id)
    )


def answer_approval(
    client: Any,
    thread_id: str,
    request: Mapping[str, Any],
    decision: Decision | Literal["approve", "reject"],
    *,
    reviewer: str | None = None,
    message: str = "",
) -> dict[str, Any]:
    """Queue a run that resumes the thread with ``decision`` for every pending action, each
    naming the digest it answers (``graph.approval.approval_answer``, as ``KeelApp.resume``
    sends it): an answer to a request that has since changed is refused as stale.

    ``decision`` is a ``Decision`` (an edit among them), or ``"approve"``/``"reject"`` with
    ``reviewer`` and ``message``. A reviewer is only a hint for a graph served without
    authentication; with it, the reviewer is the user the engine authenticated.
    ``multitask_strategy="reject"``: a second answer while the first still runs (a double
    click) is refused by the engine, and one that arrives after it finds no pending approval
    and changes nothing.

    Raises:
        EngineError: ``request`` is not an approval request (``pending_approval`` gives one).
    """
    typed = approval_request_of(request)
    if typed is None:
        raise EngineError(f"thread {thread_id}: what was given is not an approval request")
    if not isinstance(decision, Decision):
        decision = Decision(kind=decision, reason=message, reviewer=reviewer)
    run: dict[str, Any] = client.runs.create(
        thread_id,
        ASSISTANT,
        command={"resume": approval_answer(typed, decision)},
        multitask_strategy="reject",
    )
    return run


def wait_for_run(
    client: Any, thread_id: str, run_id: str, timeout_s: float = 300.0, poll_s: float = 0.2
) -> dict[str, Any]:
    """The run once it has ended (``success``, ``error``, ``interrupted``, ...), by polling it.

    Polling rather than ``runs.join``: a run re-run after its worker died is followed through
    its new attempt, and a client that loses its connection just asks again.

    Raises:
        EngineError: the run has not ended within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        run: dict[str, Any] = client.runs.get(thread_id, run_id)
        if run.get("status") not in ("pending", "running"):
            return run
        if time.monotonic() > deadline:
            raise EngineError(f"run {run_id} of thread {thread_id} still {run.get('status')}")
        time.sleep(poll_s)


def relay_events(client: Any, ctx: KeelContext) -> list[dict[str, Any]]:
    """Wake the threads that wait for the domain's new outbox events, through the engine.

    The same relay as ``keel events`` (``graph.waits.dispatch_events``: the inbox says who
    waits, its cursor how far the outbox was read), but each wake-up is a run the engine queues
    (``Command(resume={"event": ...})``) and a worker executes; nothing runs the graph here.
    """

    def resume(thread_id: str, event: DomainEvent) -> None:
        client.runs.create(
            thread_id,
            ASSISTANT,
            command={"resume": {"event": event.model_dump(mode="json")}},
            multitask_strategy="enqueue",
        )

    return dispatch_events(ctx, resume, lambda thread_id: waiting_for_event(client, thread_id))
