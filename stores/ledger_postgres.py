"""The intent ledger in PostgreSQL: with ``KEEL_POSTGRES_URL`` set, intents live next to the
checkpoints, so a worker on any machine sees what another worker wrote before its call.

Same contract as :class:`stores.ledger.Ledger`: each write is its own committed transaction,
``begin`` is idempotent, a ``done`` intent keeps its answer. A server that does not answer raises
:class:`keel.errors.StoreUnavailable` naming ``KEEL_POSTGRES_URL``; the executor lets it end the
run (it is not a tool's answer), and the next attempt settles the intent with the backend.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from stores.ledger import Intent, Ledger
from stores.postgres_tables import KeelTables, one_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_intents (
    key TEXT PRIMARY KEY, thread_id TEXT NOT NULL, step INTEGER NOT NULL, tool TEXT NOT NULL,
    digest TEXT NOT NULL, status TEXT NOT NULL, answer TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS keel_intents_thread ON keel_intents (thread_id, step);
"""
_SCHEMA_LOCK = 0x6B65656D  # any constant shared by Keel's processes; not the checkpointer's


class PostgresLedger(Ledger):
    """Intents in the ``keel_intents`` table of the checkpoint database.

    Example:
        >>> ledger = PostgresLedger("postgresql://keel@127.0.0.1:5432/keel")
        >>> ledger.begin("keel-abc", "t-1", 0, "ship_parcel", "sha256:...")  # doctest: +SKIP
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10.0, behind_pooler: bool = False
    ) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._tables = KeelTables(
            url, schema=SCHEMA, table="keel_intents", lock_key=_SCHEMA_LOCK,
            what="intent ledger", connect_timeout_s=connect_timeout_s, behind_pooler=behind_pooler,
        )  # fmt: skip

    def close(self) -> None:
        self._tables.close()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # The checkpointer already proved the URL when the process started: an error is an outage.
        return self._tables.execute(sql, params)

    def atomic(self) -> AbstractContextManager[None]:
        """One transaction for the block's writes to this ledger and to the thread guard (they
        share the process's pool on the checkpoint database)."""
        return one_transaction()

    def get(self, key: str) -> Intent | None:
        rows = self._execute("SELECT status, answer FROM keel_intents WHERE key = %s", (key,))
        if not rows:
            return None
        status, answer = rows[0]
        return Intent(key, status, json.loads(answer) if answer else None)

    def begin(self, key: str, thread_id: str, step: int, tool: str, digest: str) -> None:
        self._tables.write(
            "INSERT INTO keel_intents (key, thread_id, step, tool, digest, status)"
            " VALUES (%s, %s, %s, %s, %s, 'pending') ON CONFLICT (key) DO NOTHING",
            (key, thread_id, step, tool, digest),
        )

    def finish(self, key: str, answer: dict[str, Any]) -> None:
        self._tables.write(
            "UPDATE keel_intents SET status = 'done', answer = %s, updated_at = now()"
            " WHERE key = %s",
            (json.dumps(answer), key),
        )

    def for_thread(self, thread_id: str) -> list[dict[str, Any]]:
        rows = self._execute(
            "SELECT key, step, tool, status FROM keel_intents WHERE thread_id = %s ORDER BY step",
            (thread_id,),
        )
        return [{"key": k, "step": s, "tool": t, "status": st} for k, s, t, st in rows]

    def owners(self) -> dict[str, str]:
        """Every intent's idempotency key and the thread it belongs to."""
        return dict(self._execute("SELECT key, thread_id FROM keel_intents"))  # type: ignore[arg-type]
