"""Checkpointers: embedded SQLite by default, Postgres when ``KEEL_POSTGRES_URL`` is set
(``stores.backends.open_checkpointer`` opens the one the settings pick).

Either way a thread lives in the checkpointer, not in a process, so any worker can run or resume
it. The serializer is strict: only safe types and Keel's own state types load from a checkpoint
(LANGGRAPH_STRICT_MSGPACK semantics, without needing the variable).
"""

from __future__ import annotations

import copy
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from graph.state import STATE_TYPES
from keel.errors import ConfigError
from keel.settings import Settings
from stores.sqlitefile import write_ahead

# Any constant works; it only has to be the same in every Keel process sharing a database.
_SETUP_LOCK = 0x6B65656C  # "keel"


STATE_ALLOWLIST: tuple[tuple[str, str], ...] = tuple(
    (t.__module__, t.__name__) for t in STATE_TYPES
)
"""Keel's state types as the checkpoint serializer's allow-list names them."""


def keel_serde() -> JsonPlusSerializer:
    """A serializer that deserializes Keel's state types and nothing it does not know."""
    return JsonPlusSerializer(allowed_msgpack_modules=list(STATE_ALLOWLIST))


def keel_checkpointer(saver: BaseCheckpointSaver[Any]) -> BaseCheckpointSaver[Any]:
    """A server's checkpointer, reading with Keel's allow-list and nothing else.

    The server built it with a serializer of its own: permissive by default (every type loads,
    each unknown one with a "Deserializing unregistered type" warning), strict with
    ``LANGGRAPH_STRICT_MSGPACK`` (only safe types load; Keel's would come back as dicts).
    A strict one gets Keel's types added (``with_allowlist``, as LangGraph's own strict graphs
    do); a permissive one is replaced, on a shallow copy of the saver (same storage), by
    ``keel_serde`` (a serializer of another kind, an encrypting one, is left as it is).

    Example:
        >>> from langgraph.checkpoint.memory import InMemorySaver
        >>> keel_checkpointer(InMemorySaver()).serde.loads_typed  # doctest: +ELLIPSIS
        <bound method JsonPlusSerializer.loads_typed of ...>
    """
    # JsonPlusSerializer says "permissive" only in this attribute (True: every type loads).
    if getattr(saver.serde, "_allowed_msgpack_modules", None) is True:
        clone = copy.copy(saver)
        clone.serde = keel_serde()
        return clone
    return saver.with_allowlist(STATE_ALLOWLIST)


@contextmanager
def sqlite_checkpointer(settings: Settings) -> Iterator[SqliteSaver]:
    """The SQLite checkpointer at ``settings.checkpoint_db`` (WAL, busy timeout), set up."""
    settings.home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.checkpoint_db, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        write_ahead(conn)  # workers starting together on a new file: see write_ahead
        saver = SqliteSaver(conn, serde=keel_serde())
        saver.setup()
        yield saver
    finally:
        conn.close()


@contextmanager
def postgres_checkpointer(settings: Settings, url: str) -> Iterator[BaseCheckpointSaver[str]]:
    """A ``PostgresSaver`` at ``url`` (``KEEL_POSTGRES_URL``) on a pool whose connections are
    checked before each use.

    The pool's connections are what ``PostgresSaver`` requires (autocommit, dict rows) and,
    behind a transaction pooler, prepare nothing. ``setup()`` (the migrations) runs only when the
    database is not yet at the installed version, under a Postgres advisory lock, so workers
    starting together on a fresh database do not race; behind a transaction pooler, let the first
    start (or a deploy step) reach Postgres directly, as session locks need one connection.
    A human may take hours to approve: ``check`` replaces a connection the server or a firewall
    closed in the meantime instead of failing the resume with "connection is closed" (with a
    round trip only when the connection may be dead: ``stores.postgres_pool.LivenessCheck``).
    One saver serializes its calls, so a process scales to one run at a time per saver: scale
    with processes.

    ``postgres_connect_timeout_s`` bounds every wait: one connection attempt, a request for a
    connection from the pool, and the pool's reconnection attempts after the server went away
    (past it, the next request starts a fresh attempt, so a worker serves again as soon as the
    server is back instead of after a long backoff). A server that stops answering mid-run is a
    ``StoreUnavailable`` naming ``KEEL_POSTGRES_URL`` (``stores.postgres_pool``).
    """
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import PoolTimeout

    from stores.postgres_pool import KeelPool, LivenessCheck

    shown = redact_url(url)
    timeout = settings.postgres_connect_timeout_s
    connection_kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": None if settings.postgres_behind_pooler else 0,
        "connect_timeout": max(1, round(timeout)),
    }
    try:
        with psycopg.connect(url, **connection_kwargs) as conn:
            if not _migrated(conn, len(PostgresSaver.MIGRATIONS)):
                with advisory_lock(conn, _SETUP_LOCK, timeout_s=max(timeout, 60)):
                    PostgresSaver(conn, serde=keel_serde()).setup()  # type: ignore[arg-type]
    except (psycopg.Error, TimeoutError) as err:
        raise ConfigError(
            f"KEEL_POSTGRES_URL={shown}: cannot use the database ({_one_line(err)})"
        ) from err
    pool = KeelPool(
        url,
        setting=f"KEEL_POSTGRES_URL={shown}",
        min_size=1,
        max_size=settings.postgres_pool_size,
        kwargs=connection_kwargs,
        check=LivenessCheck(),
        max_idle=300,
        timeout=timeout,
        reconnect_timeout=timeout,
        open=False,
        name="keel-checkpoints",
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except PoolTimeout as err:
        pool.close()
        raise ConfigError(
            f"KEEL_POSTGRES_URL={shown}: no connection within {timeout:g} s ({_one_line(err)})"
        ) from err
    try:
        yield PostgresSaver(pool, serde=keel_serde())  # type: ignore[arg-type]
    finally:
        pool.close()


_THREADS_SQL = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id"
    " ORDER BY MAX(checkpoint_id) DESC"
)


def thread_ids(saver: BaseCheckpointSaver[Any]) -> list[str]:
    """Every thread the checkpointer holds, the most recently checkpointed first.

    One query on the saver's own tables (checkpoint ids sort by time), for ``keel recover
    --all`` and ``keel runs --stalled``; any other saver is walked with ``list()``.
    """
    if isinstance(saver, SqliteSaver):
        with saver.lock:
            return [str(r[0]) for r in saver.conn.execute(_THREADS_SQL).fetchall()]
    pool = getattr(saver, "conn", None)
    if pool is not None and hasattr(pool, "connection"):
        with pool.connection() as conn:
            rows = conn.execute(_THREADS_SQL).fetchall()
        return [str(r["thread_id"] if isinstance(r, dict) else r[0]) for r in rows]
    seen: dict[str, None] = {}
    for saved in saver.list(None):
        seen.setdefault(str(saved.config["configurable"]["thread_id"]), None)
    return list(seen)


def _migrated(conn: Any, migrations: int) -> bool:
    """Whether the saver's tables are at the installed version, so no lock or DDL is needed.

    A worker that starts on a database already set up takes no lock at all, which also keeps
    session advisory locks away from a transaction pooler in everyday starts.
    """
    import psycopg

    try:
        row = conn.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        return False
    version = row["v"] if isinstance(row, dict) else row[0]
    return version is not None and int(version) >= migrations - 1


@contextmanager
def advisory_lock(conn: Any, key: int, *, timeout_s: float) -> Iterator[None]:
    """Hold a Postgres session advisory lock on an autocommit connection.

    It is polled with ``pg_try_advisory_lock`` rather than waited for: a waiting
    ``pg_advisory_lock`` is an open transaction, and the saver's migrations build indexes
    ``CONCURRENTLY``, which wait for every open transaction, so two workers starting together
    deadlock (seen in the scale demo).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if next(iter(row.values())) if isinstance(row, dict) else row[0]:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"advisory lock {key} still held after {timeout_s:g} s")
        time.sleep(0.05)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def ensure_table(conn: Any, table: str, schema: str, lock_key: int) -> None:
    """Run ``schema`` (its ``CREATE ... IF NOT EXISTS``) unless ``table`` is there already, under
    an advisory lock: workers starting together on a fresh database race on ``CREATE TABLE``.
    Everyday starts find the table and take no lock (which a transaction pooler would break)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not (next(iter(row.values())) if isinstance(row, dict) else row[0]):
        with advisory_lock(conn, lock_key, timeout_s=60):
            conn.execute(schema)


def redact_url(url: str) -> str:
    """The URL (or key=value conninfo) with its password replaced by ``***``, for messages."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
