"""The event inbox in PostgreSQL: with ``KEEL_POSTGRES_URL`` set, every worker sees who waits for
which event and how far the relay has read, whatever machine it runs on.

Same contract as :class:`stores.inbox.Inbox`. Two relays started at once (on two machines)
take turns through a session advisory lock held for the whole pass, so the second reads the cursor
the first advanced and wakes nobody twice; the lock goes with the session when a relay dies. A
server that does not answer raises :class:`keel.errors.StoreUnavailable` naming
``KEEL_POSTGRES_URL``; nothing is lost: a thread is resumed before its subscription is marked
delivered and before the cursor moves past the event, so the next relay delivers it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from graph.state import DomainEvent, EventWait
from stores.inbox import RELAY_WAIT_S, Inbox, relay_busy
from stores.postgres_tables import KeelTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_subscriptions (
    thread_id TEXT NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), delivered_seq BIGINT,
    PRIMARY KEY (thread_id, event, key)
);
CREATE INDEX IF NOT EXISTS keel_subscriptions_waiting ON keel_subscriptions (event, key)
    WHERE delivered_seq IS NULL;
CREATE TABLE IF NOT EXISTS keel_relay (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL
);
"""
_SCHEMA_LOCK = 0x6B656569  # any constant shared by Keel's processes; one per store
_RELAY_LOCK = 0x6B656572  # held by the relay reading the outbox


class PostgresInbox(Inbox):
    """Subscriptions and the relay's cursor in the ``keel_subscriptions`` and ``keel_relay``
    tables of the checkpoint database.

    Example:
        >>> inbox = PostgresInbox("postgresql://keel@127.0.0.1:5432/keel")
        >>> inbox.cursor()  # doctest: +SKIP
        0
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10.0, behind_pooler: bool = False
    ) -> None:
        self.url = url
        self._tables = KeelTables(
            url, schema=SCHEMA, table="keel_relay", lock_key=_SCHEMA_LOCK,
            what="event inbox", connect_timeout_s=connect_timeout_s, behind_pooler=behind_pooler,
        )  # fmt: skip

    def close(self) -> None:
        self._tables.close()

    def subscribe(self, thread_id: str, wait: EventWait) -> None:
        self._tables.execute(
            "INSERT INTO keel_subscriptions (thread_id, event, key) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (thread_id, wait.event, wait.key),
        )

    def waiting_for(self, event: DomainEvent) -> list[str]:
        rows = self._tables.execute(
            "SELECT thread_id FROM keel_subscriptions WHERE event = %s AND key = %s"
            " AND delivered_seq IS NULL ORDER BY created_at, thread_id",
            (event.type, event.key),
        )
        return [str(r[0]) for r in rows]

    def delivered(self, thread_id: str, event: DomainEvent) -> None:
        self._tables.execute(
            "UPDATE keel_subscriptions SET delivered_seq = %s"
            " WHERE thread_id = %s AND event = %s AND key = %s",
            (event.seq, thread_id, event.type, event.key),
        )

    def cursor(self) -> int:
        rows = self._tables.execute("SELECT seq FROM keel_relay WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    def restart(self) -> None:
        self._tables.execute("DELETE FROM keel_relay")

    def advance(self, seq: int) -> None:
        self._tables.execute(
            "INSERT INTO keel_relay (id, seq) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET seq = GREATEST(keel_relay.seq, EXCLUDED.seq)",
            (seq,),
        )

    @contextmanager
    def relaying(self, wait_s: float = RELAY_WAIT_S) -> Iterator[None]:
        """Hold the relay's turn on a connection of its own for the whole pass.

        Raises:
            RelayBusy: another relay kept its turn for ``wait_s``.
            StoreUnavailable: the server does not answer.
        """
        with self._tables.connection() as conn:
            deadline = time.monotonic() + wait_s
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_RELAY_LOCK,)).fetchone()
                if row is not None and row[0]:
                    break
                if time.monotonic() > deadline:
                    raise relay_busy(wait_s)
                time.sleep(0.05)
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_RELAY_LOCK,))
