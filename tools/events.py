"""The event inbox: which thread waits for which business event, and how far the relay has read.

See ``graph/events.py`` for the flow; this is its store (SQLite, next to the intent ledger).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from graph.state import DomainEvent, EventWait

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    thread_id TEXT NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL, created_at TEXT NOT NULL,
    delivered_seq INTEGER, PRIMARY KEY (thread_id, event, key)
);
CREATE TABLE IF NOT EXISTS relay (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
"""


class EventInbox:
    """Which thread waits for which event, and how far the relay has read the outbox (SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def subscribe(self, thread_id: str, wait: EventWait) -> None:
        """Idempotent: the node that calls it runs again when the thread is resumed."""
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO subscriptions VALUES (?,?,?,?,NULL)",
                (thread_id, wait.event, wait.key, datetime.now(UTC).isoformat()),
            )

    def waiting_for(self, event: DomainEvent) -> list[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT thread_id FROM subscriptions WHERE event = ? AND key = ?"
                " AND delivered_seq IS NULL ORDER BY created_at",
                (event.type, event.key),
            ).fetchall()
        return [r["thread_id"] for r in rows]

    def delivered(self, thread_id: str, event: DomainEvent) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE subscriptions SET delivered_seq = ? WHERE thread_id = ? AND event = ?"
                " AND key = ?",
                (event.seq, thread_id, event.type, event.key),
            )

    def cursor(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT seq FROM relay WHERE id = 1").fetchone()
        return int(row["seq"]) if row else 0

    def restart(self) -> None:
        """The domain's backend was reset and its outbox numbers events from 1 again: read it
        from the start (a cursor left from before would skip the new events)."""
        with self._db() as db:
            db.execute("DELETE FROM relay")

    def advance(self, seq: int) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO relay VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq",
                (seq,),
            )
