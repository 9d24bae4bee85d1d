"""The budget store in PostgreSQL: with ``KEEL_POSTGRES_URL`` set, every worker of a deployment
reserves against the same totals, beside the checkpoints and the intent ledger.

Same contract and arithmetic as :class:`stores.budgets.Budgets`. A reservation's transaction
makes the totals it touches exist and locks them (in key order, so two workers never wait on
each other in a circle) before it reads them: the check and the write
are one step for every worker of a team.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from stores.budgets import Budgets, Conn
from stores.postgres_tables import KeelTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_budget_spend (
    id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, user_id TEXT NOT NULL, team_id TEXT NOT NULL,
    model TEXT NOT NULL, role TEXT NOT NULL, day TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, keys TEXT NOT NULL, reserved_tokens BIGINT NOT NULL,
    reserved_cost BIGINT, input_tokens BIGINT, output_tokens BIGINT, cost BIGINT,
    estimated INTEGER, settled_at DOUBLE PRECISION, note TEXT
);
CREATE INDEX IF NOT EXISTS keel_budget_spend_thread ON keel_budget_spend (thread_id);
CREATE INDEX IF NOT EXISTS keel_budget_spend_held ON keel_budget_spend (status, expires_at);
CREATE TABLE IF NOT EXISTS keel_budget_totals (
    key TEXT PRIMARY KEY, tokens BIGINT NOT NULL DEFAULT 0, calls BIGINT NOT NULL DEFAULT 0,
    cost BIGINT NOT NULL DEFAULT 0
);
"""
_SCHEMA_LOCK = 0x6B656562  # any constant shared by Keel's processes; not the other stores'


class PostgresBudgets(Budgets):
    """Reservations and totals in ``keel_budget_spend`` and ``keel_budget_totals``.

    Example:
        >>> store = PostgresBudgets("postgresql://keel@127.0.0.1:5432/keel")
        >>> store.all_totals("team:keel:")  # doctest: +SKIP
        {'team:keel:day:2026-12-03': Amount(tokens=5120, calls=3, cost_micros=2210), ...}
    """

    placeholder = "%s"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 10.0,
        behind_pooler: bool = False,
        pool_size: int = 2,
    ) -> None:
        self.url = url
        self._tables = KeelTables(
            url, schema=SCHEMA, table="keel_budget_totals", lock_key=_SCHEMA_LOCK,
            what="budget store", connect_timeout_s=connect_timeout_s, pool_size=pool_size,
            behind_pooler=behind_pooler,
        )  # fmt: skip

    def _sql(self, sql: str) -> str:
        renamed = sql.replace("budget_spend", "keel_budget_spend").replace(
            "budget_totals", "keel_budget_totals"
        )
        return renamed.replace("?", "%s")

    def _transaction(self) -> AbstractContextManager[Conn]:
        return self._in_transaction()

    @contextmanager
    def _in_transaction(self) -> Iterator[Conn]:
        with self._tables.connection() as conn, conn.transaction():
            yield conn

    def _lock_totals(self, conn: Conn, keys: Sequence[str]) -> None:
        # One statement per key, in key order, that makes the row and locks it either way (an
        # update on conflict takes the row lock; DO NOTHING would not): every worker takes its
        # locks in the same order, so none waits on another in a circle.
        for key in sorted(set(keys)):
            conn.execute(
                "INSERT INTO keel_budget_totals (key) VALUES (%s) ON CONFLICT (key)"
                " DO UPDATE SET tokens = keel_budget_totals.tokens",
                (key,),
            )

    def close(self) -> None:
        self._tables.close()
