"""Keel's PostgreSQL connection pools: a Postgres that stops answering mid-run is a clear error,
and a connection is checked before use without a round trip when nothing says it may be dead.

Every call ``PostgresSaver`` makes takes a connection through :meth:`KeelPool.connection`, so this
one place turns the pool's ``PoolTimeout`` and psycopg's ``OperationalError`` (a server that went
away, a connection cut in the middle of a query) into :class:`keel.errors.StoreUnavailable`,
naming ``KEEL_POSTGRES_URL``, for every path: a run, a resume, ``show``, ``history``, a fork.
:class:`LivenessCheck` is the ``check`` of that pool and of the stores'
(``stores.postgres_tables``). Imported only when Postgres is configured.
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from keel.errors import StoreUnavailable


class LivenessCheck:
    """A pool's ``check`` before it hands a connection out: the round trip of
    ``ConnectionPool.check_connection`` (an empty statement) only for a connection that may be
    dead; none for one that is fine, which a serving worker otherwise pays on every checkout (one
    statement in ten a served thread made, issue 26).

    A connection may be dead when its socket has something to read while no query runs on it:
    a server that restarts or terminates the backend sends its last message and closes (a FIN),
    so a connection dropped a moment ago is caught as surely as one dropped an hour ago (a check
    that skipped recently used connections handed out dead ones right after a restart). It may
    also be dead when libpq no longer holds it idle and in working order, or when it was not
    handed out for ``idle_s`` (a firewall or an idle timeout drops a connection silently, with no
    FIN to see). A connection the pool opened and never handed out is checked once.

    Args:
        idle_s: beyond this long since it was last handed out, a connection is checked with a
            round trip whatever its socket says.

    Example:
        >>> check = LivenessCheck()
        >>> pool = KeelPool("postgresql://db/keel", setting="KEEL_POSTGRES_URL=postgresql://db/keel",
        ...                 check=check, open=False)  # doctest: +SKIP
    """

    def __init__(self, idle_s: float = 30.0) -> None:
        self.idle_s = idle_s
        self._handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        """Raise when ``conn`` does not work (the pool then discards it and tries another)."""
        now = time.monotonic()
        with self._lock:
            last = self._handed_out.get(conn)
        if last is None or now - last >= self.idle_s or self.suspect(conn):
            ConnectionPool.check_connection(conn)
        with self._lock:
            self._handed_out[conn] = now

    @staticmethod
    def suspect(conn: psycopg.Connection[Any]) -> bool:
        """Whether ``conn`` may be dead by what the client alone can see: closed or broken for
        libpq, not idle, or its socket readable (the server said or closed something)."""
        if conn.closed or conn.broken:
            return True
        pgconn = conn.pgconn
        if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
            return True
        return _readable(pgconn.socket)


def _readable(fd: int) -> bool:
    """Whether the socket ``fd`` has data, a hang-up or an error pending (no wait)."""
    if hasattr(select, "poll"):
        poller = select.poll()  # unlike select(), any descriptor number (a busy worker's)
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))  # POLLHUP and POLLERR are always reported
    readable, _, failed = select.select([fd], [], [fd], 0)
    return bool(readable or failed)


class KeelPool(ConnectionPool[Any]):
    """A ``ConnectionPool`` whose failures name the setting (``setting``: what to show).

    Example:
        >>> pool = KeelPool(url, setting="KEEL_POSTGRES_URL=postgresql://db/keel")  # doctest: +SKIP
    """

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        try:
            with super().connection(timeout) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise StoreUnavailable(self.setting, reason) from err
