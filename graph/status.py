"""A thread's true status, decided from its checkpoint, not from ``StateSnapshot.next``.

``next`` lists only the tasks that still have to run. A worker killed after a task's writes were
saved (``put_writes``) and before the next checkpoint leaves a checkpoint whose only task already
holds its writes: ``next`` is empty although the graph never reached its end (shared/TRAPS.md,
issue #12). So the status is read from what the checkpoint says: its tasks (with or without saved
writes), their pending interrupts, and whether any task is left at all. ``keel show``, ``keel
runs``, ``keel recover`` and ``KeelApp`` all ask this one function.

Example:
    >>> snapshot = graph.get_state({"configurable": {"thread_id": "t-1"}})  # doctest: +SKIP
    >>> thread_status(snapshot).status  # doctest: +SKIP
    'stalled'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, ConfigDict, Field

from graph.builder import build_graph
from graph.state import ThreadStatus
from graph.wire import event_wait_of
from keel.errors import ThreadNotFound
from keel.settings import Settings
from stores.backends import open_stores
from stores.checkpoints import thread_ids
from stores.leases import Leases

FINISHED: tuple[ThreadStatus, ...] = ("done", "refused", "escalated")
WAITING: tuple[ThreadStatus, ...] = ("awaiting_approval", "awaiting_event")


class ThreadStanding(BaseModel):
    """Where a thread stands: its status (``ThreadStatus``) and, mid-run, where it stopped (what
    ``keel runs --stalled`` lists)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thread_id: str
    status: ThreadStatus
    ended: bool = Field(description="the graph reached END")
    stalled_at: str | None = Field(
        default=None, description="mid-run: the node of the task the run stopped in"
    )
    saved_writes: list[str] = Field(
        default_factory=list,
        description="nodes whose writes are saved on the last checkpoint, not yet applied",
    )
    next: list[str] = Field(default_factory=list, description="nodes still to run")
    checkpoint_id: str | None = None
    owner: str | None = Field(default=None, description="running: the worker holding the lease")

    @property
    def recoverable(self) -> bool:
        """Whether ``recover`` continues it: mid-run, no interrupt, no live worker."""
        return self.status == "stalled"


def thread_status(snapshot: Any, thread_id: str | None = None, *, owner: str | None = None) -> (
    ThreadStanding
):  # fmt: skip
    """Decide a thread's status from a live ``StateSnapshot`` (``graph.get_state(config)``).

    Args:
        snapshot: the thread's latest state, read without a ``checkpoint_id`` (LangGraph then
            applies saved writes to ``values`` and lists only pending interrupts).
        thread_id: the thread's id (default: read from the snapshot's config).
        owner: the live lease holder, if a worker is running the thread right now; a thread
            mid-run is then ``running`` instead of ``stalled``.

    Raises:
        ThreadNotFound: the snapshot has no checkpoint.
    """
    configurable = (snapshot.config or {}).get("configurable", {})
    thread_id = thread_id or configurable.get("thread_id", "")
    if not snapshot.values and not snapshot.tasks:
        raise ThreadNotFound(f"no thread {thread_id}")
    tasks = list(snapshot.tasks)
    common: dict[str, Any] = {
        "thread_id": thread_id,
        "checkpoint_id": configurable.get("checkpoint_id"),
        "next": list(snapshot.next),
        "saved_writes": [t.name for t in tasks if t.result is not None and not t.interrupts],
    }
    if not tasks:
        # No task left on the last checkpoint: the graph reached END.
        final = snapshot.values.get("status")
        status: ThreadStatus = final if final in FINISHED else "done"
        return ThreadStanding(status=status, ended=True, **common)
    if snapshot.interrupts:
        events = [i for i in snapshot.interrupts if event_wait_of(i.value) is not None]
        waiting: ThreadStatus = "awaiting_event" if events else "awaiting_approval"
        return ThreadStanding(status=waiting, ended=False, **common)
    # Mid-run. The node it stopped in: the first task that has not finished, or, when every task
    # holds its saved writes (the window of issue #12), the task whose writes wait to be applied.
    unfinished = [t.name for t in tasks if t.result is None]
    where = unfinished[0] if unfinished else tasks[0].name
    if owner is not None:
        return ThreadStanding(
            status="running", ended=False, stalled_at=where, owner=owner, **common
        )
    return ThreadStanding(status="stalled", ended=False, stalled_at=where, **common)


class ThreadBook:
    """Every thread of one checkpointer with its status: the checkpoint says where the run is,
    the lease whether a live worker is running it.

    Args:
        graph: Keel's graph compiled on ``saver`` (no runtime context is needed to read state).
        saver: the checkpointer.
        leases: the lease store beside it (``Stores.open_leases``).
    """

    def __init__(self, graph: Any, saver: BaseCheckpointSaver[Any], leases: Leases) -> None:
        self.graph = graph
        self.saver = saver
        self.leases = leases

    def standing(self, thread_id: str, snapshot: Any = None) -> ThreadStanding:
        """The thread's status (``ThreadNotFound`` if it has no checkpoint); ``snapshot``, its
        latest state when the caller has just read it, saves reading it again."""
        if snapshot is None:
            snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        found = thread_status(snapshot, thread_id)
        if found.status != "stalled":
            return found
        lease = self.leases.live(thread_id)
        if lease is None:
            return found
        return thread_status(snapshot, thread_id, owner=lease.owner.describe())

    def thread_ids(self) -> list[str]:
        """Every thread id, the most recently checkpointed first."""
        return thread_ids(self.saver)

    def standings(self) -> Iterator[ThreadStanding]:
        """Every thread's status, the most recently checkpointed first."""
        for thread_id in self.thread_ids():
            try:
                yield self.standing(thread_id)
            except ThreadNotFound:  # deleted since it was listed
                continue


@contextmanager
def open_thread_book(settings: Settings) -> Iterator[ThreadBook]:
    """The configured checkpointer's threads, for commands that only read them (``keel runs``)."""
    stores = open_stores(settings)
    with stores.open_checkpointer() as saver:
        leases = stores.open_leases(saver)
        try:
            yield ThreadBook(build_graph(saver), saver, leases)
        finally:
            leases.close()


__all__ = [
    "FINISHED",
    "WAITING",
    "ThreadBook",
    "ThreadStanding",
    "ThreadStatus",
    "open_thread_book",
    "thread_status",
]
