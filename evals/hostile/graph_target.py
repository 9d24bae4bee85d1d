"""The in-process target: a Python caller of the compiled graph on its SQLite checkpointer.

It drives the graph the way a LangGraph server does (``graph.invoke`` with the thread's config,
the authenticated user where a server puts it, ``config["configurable"]["langgraph_auth_user"]``),
and takes every liberty a Python caller has: ``update_state`` with ``as_node`` and an earlier
``checkpoint_id``, ``Command(update=..., goto=...)``, runs from any checkpoint. No server stands
in front, so no role is checked: what must hold here holds in the stores. A Python caller writes
a plan and verdicts as Keel's own types (``typed``); receipts as the attack gives them (a dict is
what a careless caller writes, and what a JSON client's write becomes).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from langgraph.types import Command

from evals.hostile.target import Reply, Target, view_of
from graph.state import Plan, Verdict
from keel.app import KeelApp

TYPED: dict[str, type[Plan] | type[Verdict]] = {
    "plan": Plan, "plan_verdict": Verdict, "result_verdict": Verdict,
}  # fmt: skip


def typed(values: Any) -> Any:
    """State values with a plan and verdicts given as JSON objects made Keel's types."""
    if not isinstance(values, dict):
        return values
    return {k: TYPED[k].model_validate(v) if k in TYPED and isinstance(v, dict) else v
            for k, v in values.items()}  # fmt: skip


def auth_user(name: str) -> dict[str, Any]:
    """The user an engine would have authenticated as ``name`` (Keel's hook's fields)."""
    return {"identity": name, "keel_user": name, "display_name": name, "is_authenticated": True}


class GraphTarget:
    """``Target`` over a ``KeelApp``: its graph, its context, its SQLite stores."""

    name = "graph"

    def __init__(self, app: KeelApp) -> None:
        self.app = app
        self.settings = app.settings

    def _config(self, by: str, thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread, "langgraph_auth_user": auth_user(by)}
        if checkpoint_id:
            configurable |= {"checkpoint_id": checkpoint_id, "checkpoint_ns": ""}
        return {"configurable": configurable, "recursion_limit": self.settings.recursion_limit}

    def _invoke(self, payload: Any, config: dict[str, Any]) -> Reply:
        try:
            self.app.graph.invoke(payload, config, context=self.app.context, durability="sync")
        except Exception as err:  # a refusal or a crash: either is the call's answer
            return Reply(False, error=f"{type(err).__name__}: {err}"[:300])
        return Reply(True)

    def start(self, by: str, payload: dict[str, Any]) -> Reply:
        thread = str(uuid.uuid4())
        reply = self._invoke(payload, self._config(by, thread))
        reply.data = thread
        return reply

    def run(
        self,
        by: str,
        thread: str,
        *,
        input: dict[str, Any] | None = None,
        command: dict[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        if command is not None and "update" in command:
            command = {**command, "update": typed(command["update"])}
        payload: Any = Command(**command) if command is not None else input
        return self._invoke(payload, self._config(by, thread, checkpoint_id))

    def state(self, by: str, thread: str) -> Reply:
        try:
            snapshot = self.app.graph.get_state(self._config(by, thread))
        except Exception as err:  # an unreadable thread is what the suite looks for
            return Reply(False, error=f"{type(err).__name__}: {err}"[:300])
        if not snapshot.values:
            return Reply(False, error="ThreadNotFound: no checkpoint")
        values = dict(snapshot.values)
        waiting = values.get("waiting")
        shown = {
            "status": values.get("status"),
            "review_note": values.get("review_note"),
            "waiting": waiting.model_dump(mode="json") if waiting is not None else None,
        }
        interrupts = [i.value for i in snapshot.interrupts]
        errors = [repr(t.error) for t in snapshot.tasks if t.error is not None]
        return Reply(True, data=view_of(shown, list(snapshot.next), interrupts, errors))

    def history(self, by: str, thread: str) -> Reply:
        try:
            rows = [
                {"checkpoint_id": s.config["configurable"]["checkpoint_id"], "next": list(s.next)}
                for s in self.app.graph.get_state_history(self._config(by, thread))
            ]
        except Exception as err:  # as state()
            return Reply(False, error=f"{type(err).__name__}: {err}"[:300])
        return Reply(True, data=rows)

    def update_state(
        self,
        by: str,
        thread: str,
        values: dict[str, Any] | None,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        try:
            written = self.app.graph.update_state(
                self._config(by, thread, checkpoint_id), typed(values), as_node=as_node
            )
        except Exception as err:  # a refused write
            return Reply(False, error=f"{type(err).__name__}: {err}"[:300])
        return Reply(True, data=written["configurable"].get("checkpoint_id"))

    def delete(self, by: str, thread: str) -> Reply:
        try:
            self.app.graph.checkpointer.delete_thread(thread)
        except Exception as err:  # as update_state()
            return Reply(False, error=f"{type(err).__name__}: {err}"[:300])
        return Reply(True)

    def relay(self) -> None:
        self.app.dispatch_events()

    @contextlib.contextmanager
    def misconfigured(self, tokens: str) -> Iterator[Target | Reply]:
        yield Reply(False, error="no server in process: nothing to misconfigure")
