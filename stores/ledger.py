"""The intent ledger: an irreversible call is written down before it is made.

Before the call, the intent (idempotency key, thread, step, tool, action digest; the key is made
from the thread and the digest alone, ``agents.executor.idempotency_key``) is stored as
``pending``; after it, the answer is stored and the intent is ``done``. When a worker dies
between the two, the intent stays pending, and the next attempt asks the backend whether the
action already happened (the tool's ``lookup``) before issuing it again. A ``done`` intent is
never issued again: its stored answer is returned. A write a human approved is written down the
same way (its backend takes no key, so a pending one is made again): a receipt works once.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from stores.sqlitefile import SqliteFile

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


class Ledger(ABC):
    """The intent ledger's contract; ``SqliteLedger`` and ``stores.ledger_postgres.PostgresLedger``
    keep it (``stores.backends.open_stores`` picks one)."""

    @abstractmethod
    def atomic(self) -> AbstractContextManager[None]:
        """A block whose ledger writes commit with the thread guard's, as one transaction,
        where both stores can."""

    @abstractmethod
    def get(self, key: str) -> Intent | None:
        """The intent of ``key``, or None when none was written."""

    @abstractmethod
    def begin(self, key: str, thread_id: str, step: int, tool: str, digest: str) -> None:
        """Write the intent as ``pending`` before the call; idempotent (an intent already
        written, pending or done, is kept)."""

    @abstractmethod
    def finish(self, key: str, answer: dict[str, Any]) -> None:
        """The call answered: the intent is ``done`` and keeps ``answer``."""

    @abstractmethod
    def for_thread(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's intents (key, step, tool, status), by step."""

    def close(self) -> None:  # noqa: B027 (a ledger with nothing to release keeps this)
        """Release the store's connections (a later use opens them again)."""


class SqliteLedger(Ledger):
    """Intents in a SQLite file; each write is its own committed transaction, synced to disk
    (``synchronous=FULL``: an intent must outlive a power cut, not only a killed process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, schema=SCHEMA)

    def close(self) -> None:
        self._file.close()

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._file.connect()

    def atomic(self) -> AbstractContextManager[None]:
        """A block whose ledger writes commit with the thread guard's, as one transaction,
        where both stores can (PostgreSQL); here each write commits on its own."""
        return nullcontext()

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
