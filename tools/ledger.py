"""The intent ledger: an irreversible call is written down before it is made.

Before the call, the intent (idempotency key, thread, step, tool, action digest) is stored as
``pending``; after it, the answer is stored and the intent is ``done``. When a worker dies
between the two, the intent stays pending, and the next attempt asks the backend whether the
action already happened (the tool's ``lookup``) before issuing it again. A ``done`` intent is
never issued again: its stored answer is returned.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (
    key TEXT PRIMARY KEY, thread_id TEXT NOT NULL, step INTEGER NOT NULL, tool TEXT NOT NULL,
    digest TEXT NOT NULL, status TEXT NOT NULL, answer TEXT, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Intent:
    key: str
    status: Literal["pending", "done"]
    answer: dict[str, Any] | None


class IntentLedger:
    """Intents in a SQLite file; each write is its own committed transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            if not self._ready:
                # Once per ledger object, not per call: the schema script commits, and on a busy
                # disk each of those cost about as much as the write it preceded. WAL (a property
                # of the file, kept by every later connection) makes a commit one log append and
                # one sync, where the rollback journal took several; synchronous stays FULL.
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
                self._ready = True
            yield conn
        finally:
            conn.close()

    def get(self, key: str) -> Intent | None:
        with self._db() as db:
            row = db.execute("SELECT status, answer FROM intents WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Intent(key, row[0], json.loads(row[1]) if row[1] else None)

    def begin(self, key: str, thread_id: str, step: int, tool: str, digest: str) -> None:
        now = datetime.now(UTC).isoformat()
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO intents VALUES (?,?,?,?,?,'pending',NULL,?,?)",
                (key, thread_id, step, tool, digest, now, now),
            )

    def finish(self, key: str, answer: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE intents SET status = 'done', answer = ?, updated_at = ? WHERE key = ?",
                (json.dumps(answer), datetime.now(UTC).isoformat(), key),
            )

    def for_thread(self, thread_id: str) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT key, step, tool, status FROM intents WHERE thread_id = ? ORDER BY step",
                (thread_id,),
            ).fetchall()
        return [{"key": k, "step": s, "tool": t, "status": st} for k, s, t, st in rows]
