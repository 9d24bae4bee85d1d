"""The event inbox: which thread waits for which business event, and how far the relay has read.

See ``graph/waits.py`` for the flow; this is its store: SQLite next to the intent ledger, or
PostgreSQL beside the checkpoints with ``KEEL_POSTGRES_URL`` (``stores.inbox_postgres``), chosen
by ``stores.backends.open_stores``. Both keep the same promises:

- ``subscribe`` is idempotent (the node that calls it runs again when its thread is resumed);
- ``delivered`` marks a subscription served, after the thread was resumed (at-least-once);
- the relay's cursor never moves back (``advance`` keeps the larger number; only ``restart``,
  after the domain's outbox was reset, starts it again), and ``relaying`` lets one relay at a
  time read the outbox, so two relays started together never wake a thread twice with one event.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from graph.state import DomainEvent, EventWait
from keel.errors import RelayBusy
from stores.sqlitefile import SqliteFile

RELAY_WAIT_S = 60.0
"""How long a relay waits for another to finish reading the outbox before giving up."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    thread_id TEXT NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL, created_at TEXT NOT NULL,
    delivered_seq INTEGER, PRIMARY KEY (thread_id, event, key)
);
CREATE TABLE IF NOT EXISTS relay (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
"""


def relay_busy(waited_s: float) -> RelayBusy:
    return RelayBusy(
        f"another `keel events` relay has been reading the outbox for {waited_s:g} s; "
        "nothing was relayed by this one (run it again when that one is done)"
    )


class Inbox(ABC):
    """The inbox's contract (the promises above); ``SqliteInbox`` and
    ``stores.inbox_postgres.PostgresInbox`` keep it (``stores.backends.open_stores`` picks one)."""

    @abstractmethod
    def subscribe(self, thread_id: str, wait: EventWait) -> None:
        """The thread waits for ``wait``; idempotent."""

    @abstractmethod
    def waiting_for(self, event: DomainEvent) -> list[str]:
        """The threads waiting for ``event`` and not yet served it, oldest first."""

    @abstractmethod
    def delivered(self, thread_id: str, event: DomainEvent) -> None:
        """The thread was resumed with ``event``: its subscription is served."""

    @abstractmethod
    def cursor(self) -> int:
        """The last outbox number the relay handled (0: none)."""

    @abstractmethod
    def restart(self) -> None:
        """Read the outbox from the start again (the domain's backend was reset)."""

    def close(self) -> None:  # noqa: B027 (an inbox with nothing to release keeps this)
        """Release the store's connections (a later use opens them again)."""

    @abstractmethod
    def advance(self, seq: int) -> None:
        """The relay has handled every event up to ``seq``; a smaller number changes nothing."""

    @abstractmethod
    def relaying(self, wait_s: float = RELAY_WAIT_S) -> AbstractContextManager[None]:
        """Hold the relay's turn: a second relay waits until the first is done.

        Raises:
            RelayBusy: another relay kept its turn for ``wait_s``.
        """


class SqliteInbox(Inbox):
    """Which thread waits for which event, and how far the relay has read the outbox (SQLite).

    Example:
        >>> import tempfile
        >>> inbox = SqliteInbox(Path(tempfile.mkdtemp()) / "events.sqlite")
        >>> inbox.advance(7); inbox.advance(3); inbox.cursor()
        7
        >>> inbox.restart(); inbox.cursor()
        0
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)  # the relay's lock file lives beside it
        self._file = SqliteFile(path, schema=_SCHEMA, rows="row")

    def close(self) -> None:
        self._file.close()

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        # Every call is one statement, its own transaction: a read takes no write lock.
        return self._file.connect()

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
        """The relay has handled every event up to ``seq``; a smaller number changes nothing."""
        with self._db() as db:
            db.execute(
                "INSERT INTO relay VALUES (1, ?)"
                " ON CONFLICT(id) DO UPDATE SET seq = max(seq, excluded.seq)",
                (seq,),
            )

    @contextmanager
    def relaying(self, wait_s: float = RELAY_WAIT_S) -> Iterator[None]:
        """Hold the relay's turn: a second relay waits here until the first is done.

        An exclusive ``flock`` on a file beside the inbox; the kernel releases it when its
        process dies, so a killed relay never blocks the next.

        Raises:
            RelayBusy: another relay kept its turn for ``wait_s``.
        """
        fd = os.open(self.path.with_name(self.path.name + ".relay"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise relay_busy(wait_s) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock
