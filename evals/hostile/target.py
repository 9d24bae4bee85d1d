"""What the hostile-client suite drives: a target is Keel as one kind of client reaches it.

Two targets take the same attacks (``evals.hostile.cases``): the compiled graph in this process on
its SQLite checkpointer, driven by a Python caller (``evals.hostile.graph_target``), and the
engine (Aegra over PostgreSQL and Redis), driven through the LangGraph SDK or raw HTTP
(``evals.hostile.engine_target``). Each speaks the client actions below and answers with a
``Reply``: what the call returned, or the refusal (an HTTP status on the engine, an exception's
name in process). Nothing here judges: the judge reads the backend (``evals.hostile.world``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph.wire import approval_request_of
from keel.settings import Settings


@dataclass
class Reply:
    """One client call's answer: ``ok`` when it was accepted and did what it was asked."""

    ok: bool
    code: int | None = None
    error: str = ""
    data: Any = None

    def brief(self) -> str:
        """One short word for the attack list: ``200``, ``403``, ``ok``, ``ValidationError``."""
        if self.code is not None:
            return str(self.code)
        return "ok" if self.ok else (self.error.split(":", 1)[0] or "error")


@dataclass
class View:
    """A thread as a client reads it: what the judge's helpers and the attacks' templates need."""

    status: str | None = None
    next: list[str] = field(default_factory=list)
    request: dict[str, Any] | None = None
    """The pending approval request (LangChain's HITL schema plus Keel's digests), if any."""
    waiting: dict[str, Any] | None = None
    """The event the thread sleeps on (``event``, ``key``), if any."""
    review_note: str = ""
    crashed: str = ""
    """The error a node of the thread's last run raised (its task ended in it), if any: a
    refusal is a value the graph routes on, a crash leaves the thread stuck on that task."""


class Target(Protocol):
    """The client actions an attack may take, as one kind of client takes them.

    ``by`` names the user acting (a token on the engine, the authenticated user a server would
    put in the run's config in process); ``thread`` a thread id this target gave out.
    """

    name: str
    settings: Settings
    """The deployment's settings: where the domain's backend is, for the worlds and the judge."""

    def start(self, by: str, payload: dict[str, Any]) -> Reply:
        """Create a thread and run ``payload`` as its input until the run ends (data: its id)."""
        ...

    def run(
        self,
        by: str,
        thread: str,
        *,
        input: dict[str, Any] | None = None,
        command: dict[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        """One run on the thread (input, a command, from a checkpoint), waited for."""
        ...

    def state(self, by: str, thread: str) -> Reply:
        """The thread's state (data: a ``View``)."""
        ...

    def history(self, by: str, thread: str) -> Reply:
        """The thread's checkpoints, newest first (data: dicts with checkpoint_id and next)."""
        ...

    def update_state(
        self,
        by: str,
        thread: str,
        values: dict[str, Any] | None,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        """Write the thread's state (data: the new checkpoint's id)."""
        ...

    def delete(self, by: str, thread: str) -> Reply:
        """Delete the thread."""
        ...

    def relay(self) -> None:
        """Wake the threads waiting for the domain's new outbox events (``keel events``)."""
        ...

    def misconfigured(self, tokens: str) -> AbstractContextManager[Target | Reply]:
        """A second server of this deployment started with ``KEEL_API_TOKENS=tokens``: the
        target to attack it with, or the reply that says it refused to start."""
        ...


def interrupts_of(state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every interrupt of a state as the Agent Protocol serves it (top level and per task)."""
    yield from state.get("interrupts") or []
    for task in state.get("tasks") or []:
        yield from task.get("interrupts") or []


def view_of(
    values: dict[str, Any], next_: list[str], interrupts: list[Any], errors: list[str] | None = None
) -> View:
    """A ``View`` from JSON-shaped values, the values of the thread's interrupts, and the errors
    its pending tasks ended in."""
    # The request as the server sent it (every field kept), once it reads as one.
    request = next(
        (v for v in interrupts if isinstance(v, dict) and approval_request_of(v) is not None),
        None,
    )
    waiting = values.get("waiting")
    return View(
        status=values.get("status"),
        next=list(next_),
        request=request,
        waiting=waiting if isinstance(waiting, dict) else None,
        review_note=str(values.get("review_note") or ""),
        crashed="; ".join(e for e in errors or [] if e)[:300],
    )
