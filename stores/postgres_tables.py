"""Keel's own tables beside the checkpoints in PostgreSQL: made once, written in autocommit,
and an outage that names the setting and the store.

The intent ledger, the event inbox and the flight record use it when ``KEEL_POSTGRES_URL`` is
set; it is imported only then.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from keel.errors import StoreUnavailable
from stores.checkpoints import ensure_table, redact_url
from stores.postgres_pool import LivenessCheck

_BOUND = threading.local()
"""This thread's ``one_transaction`` block: its exit stack, its connection per pool, and the
writes it holds for its end (``KeelTables.write``)."""


@contextmanager
def one_transaction() -> Iterator[None]:
    """Run every statement this thread makes through Keel's stores in the block in one
    transaction per pool (stores on one database share one pool: one transaction), committed
    when the block ends, rolled back when it raises. A block inside another joins it.

    The executor consumes a receipt (thread guard) and writes the intent (ledger) so: one
    round trip and one commit less, and never one without the other (issue 26). The writes
    whose rows nobody reads (``KeelTables.write``: an intent done, a receipt settled) are held
    until the block ends and then made together, as one statement where they write different
    tables; a block of such writes alone is that one statement, with no BEGIN and no COMMIT
    around it. A block that raises makes none of them.

    Raises:
        StoreUnavailable: the server went away before the commit.
    """
    if getattr(_BOUND, "stack", None) is not None:
        yield
        return
    try:
        with ExitStack() as stack:
            _BOUND.stack, _BOUND.conns, _BOUND.setting, _BOUND.writes = stack, {}, "", []
            try:
                yield
                _write_held(stack, _BOUND.conns, _BOUND.writes)  # before the commit
            finally:
                setting = _BOUND.setting
                _BOUND.stack = _BOUND.conns = _BOUND.writes = None
    except (psycopg.OperationalError, PoolTimeout, TimeoutError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise StoreUnavailable(setting or "KEEL_POSTGRES_URL", reason) from err


@dataclass(frozen=True)
class _Held:
    """A write held for its block's end (``KeelTables.write``)."""

    tables: KeelTables
    sql: str
    params: tuple[Any, ...] = ()


_TARGET = re.compile(r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


def _write_held(stack: ExitStack, conns: dict[int, Any], writes: list[_Held]) -> None:
    """Make a block's held writes, per pool: on the block's transaction when it opened one,
    else on a connection of their own (one statement: atomic without a transaction)."""
    by_pool: dict[int, list[_Held]] = {}
    for held in writes:
        by_pool.setdefault(id(held.tables._pooled()), []).append(held)
    for pool_id, group in by_pool.items():
        conn = conns.get(pool_id)
        if conn is None:
            conn = stack.enter_context(group[0].tables._pooled().connection())
        for held in group:
            held.tables.ensure(conn)
        statements = _combined([(held.sql, held.params) for held in group])
        with conn.transaction() if len(statements) > 1 else nullcontext():
            for sql, params in statements:
                conn.execute(sql, params)


def _combined(writes: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """Writes as one statement (all but the last as data-modifying ``WITH`` clauses) when each
    writes another table (one statement must not change a row twice); else as they are.

    Example:
        >>> _combined([("UPDATE a SET x = %s", (1,)), ("INSERT INTO b VALUES (%s)", (2,))])
        [('WITH w0 AS (UPDATE a SET x = %s) INSERT INTO b VALUES (%s)', (1, 2))]
        >>> len(_combined([("UPDATE a SET x = 1", ()), ("UPDATE a SET y = 2", ())]))
        2
    """
    targets = [_TARGET.match(sql) for sql, _ in writes]
    tables = [found.group(1).lower() for found in targets if found is not None]
    if len(writes) == 1 or len(tables) < len(writes) or len(set(tables)) < len(tables):
        return writes
    *riders, (last, _) = writes
    clauses = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(riders))
    return [(f"WITH {clauses} {last}", tuple(p for _, params in writes for p in params))]


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
        pool_size: the connections this store wants kept open. Every store of a process on the
            same database shares one pool (``SharedPools``), as large as the largest any of
            them asked for (``KEEL_POSTGRES_POOL_SIZE`` where the settings pass it, at least
            ``SharedPools.MIN_SIZE``): a store written a few times per run then pays no
            connection per statement (about 5 ms of PostgreSQL's CPU each, issue 26).
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
        pools: SharedPools | None = None,
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
        self._pools = pools or PROCESS_POOLS
        self._pool: ConnectionPool[Any] | None = None
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
            stack = getattr(_BOUND, "stack", None)
            if stack is not None:  # inside ``one_transaction``: its connection, its transaction
                yield self._bound(stack)
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

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one write (an INSERT, UPDATE or DELETE whose rows nobody reads): at once, in its
        own transaction; inside ``one_transaction``, held for the block's end and made there
        with the block's other held writes (so nothing in the block reads what it wrote)."""
        writes: list[_Held] | None = getattr(_BOUND, "writes", None)
        if writes is None:
            self.execute(sql, params)
            return
        writes.append(_Held(self, sql, params))
        _BOUND.setting = _BOUND.setting or self.setting

    def _bound(self, stack: ExitStack) -> psycopg.Connection[tuple[Any, ...]]:
        pool = self._pooled()
        conns: dict[int, Any] = _BOUND.conns
        conn = conns.get(id(pool))
        if conn is None:
            conn = stack.enter_context(pool.connection())
            self._make_tables(conn)  # before the transaction: the schema commits on its own
            stack.enter_context(conn.transaction())
            conns[id(pool)] = conn
            _BOUND.setting = _BOUND.setting or self.setting
        else:
            self._make_tables(conn)
        return conn  # type: ignore[no-any-return]

    def ensure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Make this store's tables (once per process) on ``conn``, another store's connection
        of the same database: for one statement that reads both stores' tables."""
        self._make_tables(conn)

    def close(self) -> None:
        """Let go of the shared pool (closed when its last store lets go)."""
        if self._pool is not None:
            self._pools.release(self._pool)
            self._pool = None

    def _pooled(self) -> ConnectionPool[Any]:
        if self._pool is None:
            self._pool = self._pools.acquire(
                self.url, self._kwargs, size=self.pool_size, timeout_s=self.connect_timeout_s
            )
        return self._pool

    def _make_tables(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if not self._ready:
            ensure_table(conn, self.table, self.schema, self.lock_key)
            self._ready = True


class SharedPools:
    """The connection pools Keel's stores share in one process: one per database and connection
    options, grown to the largest size a store asks for, closed when its last store closes.

    The intent ledger, the event inbox, the budgets and the flight record each used to open
    their own connections (the ledger one per statement); in a serving worker they now take
    turns on a few kept connections, each checked before use (a human may take hours to
    approve, and the server or a firewall may have closed an idle connection meanwhile; a round
    trip only when the connection may be dead, ``stores.postgres_pool.LivenessCheck``).
    """

    MIN_SIZE = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (url, connection options) -> (pool, stores using it)
        self._pools: dict[tuple[str, Any], tuple[ConnectionPool[Any], int]] = {}

    def acquire(
        self, url: str, kwargs: dict[str, Any], *, size: int, timeout_s: float
    ) -> ConnectionPool[Any]:
        key = (url, tuple(sorted(kwargs.items())))
        wanted = max(size, self.MIN_SIZE)
        with self._lock:
            found = self._pools.get(key)
            if found is not None:
                shared, users = found
                if shared.max_size < wanted:
                    shared.resize(min_size=shared.min_size, max_size=wanted)
                self._pools[key] = (shared, users + 1)
                return shared
            # A plain pool: the store's own ``connection`` names the setting and the store.
            # Every connection is checked before use, with a round trip only when it may be dead
            # (``LivenessCheck``): skipping the check for one returned a moment ago, whatever its
            # socket said, handed out dead connections right after a server restart
            # (tests/integration/test_backends.py).
            pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=wanted,
                kwargs=kwargs,
                check=LivenessCheck(),
                max_idle=300,
                timeout=timeout_s,
                reconnect_timeout=timeout_s,
                open=False,
                name="keel-stores",
            )
            pool.open(wait=False)
            self._pools[key] = (pool, 1)
            return pool

    def release(self, pool: ConnectionPool[Any]) -> None:
        with self._lock:
            for key, (found, users) in list(self._pools.items()):
                if found is pool:
                    if users > 1:
                        self._pools[key] = (found, users - 1)
                        return
                    del self._pools[key]
                    break
            else:
                return
        pool.close()


PROCESS_POOLS = SharedPools()
"""This process's shared pools (a serving worker builds its stores once, in its context)."""
