"""Which channels each superstep writes, which of those writes change anything, and their bytes.

A thread's checkpoints are read back from the checkpointer that holds them (SQLite in process,
the engine's PostgreSQL in ``keel bench --only engine``): for every task of every superstep, each
channel it wrote, the serialized size of the write (what ``put_writes`` stores) and whether the
value differs from the channel's value before the step (``graph.builder.unchanged``; a write
that does not is a no-op: it still costs a write row, and for a plain channel a new blob
version in the next checkpoint).
LangGraph's own bookkeeping channels (``branch:to:...``, ``__start__``) are counted apart.

``python -m evals.state_probe`` runs the demo refund thread in process (to its approval, then
approved) on a throwaway home and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.pregel import Pregel

from graph.builder import unchanged
from stores.checkpoints import keel_serde

_BOOKKEEPING = ("branch:", "__")


@dataclass
class ChannelWrite:
    """One channel a task wrote."""

    channel: str
    bytes: int
    changed: bool


@dataclass
class TaskWrites:
    """What one task (a node's run in one superstep) wrote."""

    step: int
    node: str
    writes: list[ChannelWrite] = field(default_factory=list)
    bookkeeping: int = 0
    """Writes to LangGraph's own channels (the edges taken, the input)."""


def _value_bytes(serde: SerializerProtocol, value: Any) -> int:
    try:
        return len(serde.dumps_typed(value)[1])
    except Exception:  # a value the serializer refuses is not this probe's concern
        return len(repr(value))


_NULL_TASK = "00000000-0000-0000-0000-000000000000"
"""The task id LangGraph files a run's input (a resume value, an update) under."""


def thread_writes(
    graph: Pregel[Any, Any, Any, Any],
    saver: BaseCheckpointSaver[Any],
    thread_id: str,
    *,
    serde: SerializerProtocol | None = None,
) -> list[TaskWrites]:
    """Every task's writes in ``thread_id``'s history, oldest first.

    Args:
        graph: the compiled graph the thread ran (its tasks' names come from its state
            snapshots; its channels say which ones have a reducer).
        saver: the checkpointer holding the thread.
        serde: what sizes a write (Keel's serializer by default).
    """
    serde = serde or keel_serde()
    config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    tuples: list[CheckpointTuple] = list(saver.list(config))[::-1]
    names: dict[str, str] = {}
    for snapshot in graph.copy(update={"checkpointer": saver}).get_state_history(config):
        for pending in snapshot.tasks:
            names[pending.id] = pending.name
    names[_NULL_TASK] = "(input)"
    out: list[TaskWrites] = []
    for found in tuples:
        values = found.checkpoint.get("channel_values", {})
        step = int((found.metadata or {}).get("step", -1))
        by_task: dict[str, TaskWrites] = {}
        for task_id, channel, value in found.pending_writes or []:
            task = by_task.setdefault(
                task_id, TaskWrites(step + 1, names.get(task_id, task_id[:8]))
            )
            if channel.startswith(_BOOKKEEPING):
                task.bookkeeping += 1
                continue
            changed = not unchanged(channel, value, values)
            task.writes.append(ChannelWrite(channel, _value_bytes(serde, value), changed))
        out += by_task.values()
    return out


def summary(tasks: Sequence[TaskWrites]) -> dict[str, Any]:
    """Totals: writes, no-op writes and their bytes (LangGraph's bookkeeping apart)."""
    writes = [w for t in tasks for w in t.writes]
    return {
        "tasks": len(tasks),
        "writes": len(writes),
        "noop_writes": sum(not w.changed for w in writes),
        "bytes": sum(w.bytes for w in writes),
        "noop_bytes": sum(w.bytes for w in writes if not w.changed),
        "bookkeeping_writes": sum(t.bookkeeping for t in tasks),
    }


def table(tasks: Iterable[TaskWrites]) -> list[str]:
    """A markdown table: one row per task, its channels with their bytes (no-ops struck)."""
    lines = [
        "| step | node | channels written (bytes; ~~no-op~~) | bytes |",
        "|---|---|---|---|",
    ]
    for t in list(tasks):
        cells = ", ".join(
            f"{w.channel} {w.bytes}" if w.changed else f"~~{w.channel} {w.bytes}~~"
            for w in t.writes
        )
        total = sum(w.bytes for w in t.writes)
        lines.append(f"| {t.step} | {t.node} | {cells or '-'} | {total} |")
    return lines


def probe_refund(home: Path) -> list[TaskWrites]:
    """The demo refund thread in process, to its approval and approved, on ``home``."""
    from domains.support_desk import SupportDesk
    from graph.context import KeelContext
    from keel.app import Decision, KeelApp
    from keel.settings import Settings
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings, reset=True)
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    request = (
        "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
    )
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        waiting = app.run(request, thread_id="probe-refund")
        app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
        saver = app.graph.checkpointer
        assert isinstance(saver, BaseCheckpointSaver)
        return thread_writes(app.graph, saver, waiting.thread_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.state_probe", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the tasks as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keel-probe-") as tmp:
        tasks = probe_refund(Path(tmp))
    if args.json:
        print(json.dumps({"tasks": [asdict(t) for t in tasks], "summary": summary(tasks)}))
    else:
        print("\n".join(table(tasks)))
        print(json.dumps(summary(tasks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
