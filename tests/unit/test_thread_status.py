"""A thread's status from its checkpoint: issue #12's window (every task holding its saved writes,
``next`` empty) is stalled, not finished; only a checkpoint with no task left is the end."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.types import Interrupt, PregelTask, StateSnapshot

from graph.status import thread_status
from keel.errors import ThreadNotFound


def snapshot(
    *,
    values: dict[str, Any] | None = None,
    next_: tuple[str, ...] = (),
    tasks: tuple[Any, ...] = (),
) -> StateSnapshot:
    interrupts = tuple(i for t in tasks for i in t.interrupts)
    config = {"configurable": {"thread_id": "t-1", "checkpoint_id": "c-5"}}
    return StateSnapshot(
        values if values is not None else {"status": "running"}, next_, config, {"step": 5},
        None, None, tasks, interrupts,
    )  # fmt: skip


def test_the_end_of_the_graph_is_its_final_status() -> None:
    for final in ("done", "refused", "escalated"):
        found = thread_status(snapshot(values={"status": final}))
        assert (found.status, found.ended, found.stalled_at) == (final, True, None)


def test_writes_saved_without_the_next_checkpoint_is_stalled_not_finished() -> None:
    """The state of issue #12: ``next`` is empty, the task holds its result."""
    saved = PregelTask("id-1", "execute", ("__pregel_pull", "execute"), result={"cursor": 1})
    found = thread_status(snapshot(next_=(), tasks=(saved,)))
    assert found.status == "stalled" and not found.ended
    assert found.stalled_at == "execute"
    assert found.saved_writes == ["execute"] and found.next == []
    assert found.recoverable


def test_a_task_not_yet_finished_is_where_the_run_stalled() -> None:
    todo = PregelTask("id-2", "respond", ("__pregel_pull", "respond"))
    found = thread_status(snapshot(next_=("respond",), tasks=(todo,)))
    assert (found.status, found.stalled_at, found.saved_writes) == ("stalled", "respond", [])
    assert found.checkpoint_id == "c-5" and found.thread_id == "t-1"


def test_a_live_owner_makes_it_running() -> None:
    todo = PregelTask("id-2", "execute", ("__pregel_pull", "execute"))
    found = thread_status(snapshot(next_=("execute",), tasks=(todo,)), owner="host pid 7")
    assert (found.status, found.owner, found.recoverable) == ("running", "host pid 7", False)


def test_interrupts_are_waiting_for_a_human_or_an_event() -> None:
    ask = Interrupt(value={"action_requests": [], "digests": []}, id="i-1")
    approve = PregelTask("id-3", "approve", ("__pregel_pull", "approve"), interrupts=(ask,))
    assert thread_status(snapshot(next_=("approve",), tasks=(approve,))).status == (
        "awaiting_approval"
    )
    # The event wait as graph/waits.py raises it (graph/wire.py's EventWaitRequest).
    wait = Interrupt(
        value={"kind": "await_event", "event": "refund.settled", "key": "RF-1", "step": 0,
               "why": "pending until the bank settles it"},
        id="i-2",
    )  # fmt: skip
    waits = PregelTask("id-4", "await_event", ("__pregel_pull", "await_event"), interrupts=(wait,))
    assert thread_status(snapshot(next_=("await_event",), tasks=(waits,))).status == (
        "awaiting_event"
    )


def test_no_checkpoint_is_no_thread() -> None:
    with pytest.raises(ThreadNotFound, match="no thread t-1"):
        thread_status(snapshot(values={}), "t-1")
