"""Keel's own tables beside the checkpoints in PostgreSQL: made once, written in autocommit,
and an outage that names the setting and the store.

The intent ledger, the event inbox and the flight record use it when ``KEEL_POSTGRES_URL`` is
set; it is imported only then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from graph.persistence import ensure_table, redact_url
from graph.postgres_pool import KeelPool
from keel.errors import StoreUnavailable


class KeelTables:
    """Keel's own tables in the checkpoint database (intent ledger, event inbox, flight record).

    Each store that follows the checkpoints to Postgres needs the same three things: its tables
    made once even when workers start together on a fresh database (under an advisory lock),
    autocommit connections (each write is its own committed transaction), and an outage that is
    one ``StoreUnavailable`` naming ``KEEL_POSTGRES_URL`` (never the password) and the store.

    Args:
        url: the database (``KEEL_POSTGRES_URL``).
        schema: the ``CREATE ... IF NOT EXISTS`` statements of the store's tables.
        table: a table of ``schema``; when it exists, the schema is not run again.
        lock_key: the advisory lock serializing the schema across processes (one per store).
        what: the store, as the error names it (``"event inbox"``).
        connect_timeout_s: bounds each connection attempt (and a wait for the pool).
        pool_size: 0 opens a connection per call (a store written a few times per run); more
            keeps a pool of that size (the recorder writes dozens of events per run).
        behind_pooler: the URL is a transaction pooler (PgBouncer; KEEL_POSTGRES_BEHIND_POOLER):
            no server-side prepared statements, as for the checkpointer's connections.

    Example:
        >>> tables = KeelTables("postgresql://keel@127.0.0.1/keel", schema="CREATE TABLE IF NOT"
        ...     " EXISTS t (x INT)", table="t", lock_key=1, what="example")
        >>> tables.execute("SELECT x FROM t")  # doctest: +SKIP
        []
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        table: str,
        lock_key: int,
        what: str,
        connect_timeout_s: float = 10.0,
        pool_size: int = 0,
        behind_pooler: bool = False,
    ) -> None:
        self.url = url
        self.schema = schema
        self.table = table
        self.lock_key = lock_key
        self.what = what
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = pool_size
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_s)),
            **({"prepare_threshold": None} if behind_pooler else {}),
        }
        self._pool: KeelPool | None = None
        self._ready = False

    @property
    def setting(self) -> str:
        return f"KEEL_POSTGRES_URL={redact_url(self.url)}"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """An autocommit connection on which the store's tables exist.

        Raises:
            StoreUnavailable: the server does not answer, or went away during the block.
        """
        try:
            if self.pool_size == 0:
                with psycopg.connect(self.url, **self._kwargs) as conn:
                    self._make_tables(conn)
                    yield conn
                return
            with self._pooled().connection() as conn:
                self._make_tables(conn)
                yield conn
        except (psycopg.OperationalError, PoolTimeout, TimeoutError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise StoreUnavailable(self.setting, f"{self.what}: {reason}") from err

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; its rows (none for a write)."""
        with self.connection() as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _pooled(self) -> KeelPool:
        if self._pool is None:
            self._pool = KeelPool(
                self.url,
                setting=self.setting,
                min_size=1,
                max_size=self.pool_size,
                kwargs=self._kwargs,
                check=KeelPool.check_connection,
                max_idle=300,
                timeout=self.connect_timeout_s,
                reconnect_timeout=self.connect_timeout_s,
                open=False,
                name=f"keel-{self.table}",
            )
            self._pool.open(wait=False)
        return self._pool

    def _make_tables(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if not self._ready:
            ensure_table(conn, self.table, self.schema, self.lock_key)
            self._ready = True
