"""Checkpointers: embedded SQLite by default, so a thread survives its process.

The serializer is strict: only safe types and Keel's own state types load from a checkpoint
(LANGGRAPH_STRICT_MSGPACK semantics, without needing the variable).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from graph.state import STATE_TYPES
from keel.settings import Settings


def keel_serde() -> JsonPlusSerializer:
    """A serializer that deserializes Keel's state types and nothing it does not know."""
    return JsonPlusSerializer(
        allowed_msgpack_modules=[(t.__module__, t.__name__) for t in STATE_TYPES]
    )


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator[SqliteSaver]:
    """The SQLite checkpointer at ``settings.checkpoint_db``, with WAL and a busy timeout.

    Example:
        >>> with open_checkpointer(Settings(home=Path("/tmp/keel-doc"))) as saver:
        ...     graph = build_graph(saver)
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.checkpoint_db, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        saver = SqliteSaver(conn, serde=keel_serde())
        saver.setup()
        yield saver
    finally:
        conn.close()
