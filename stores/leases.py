"""Run ownership: one worker at a time per thread, through a lease beside the checkpoints.

Every segment of a run (run, resume, recover, fork, event) takes the thread's lease before it
touches the graph and gives it back at the end; a heartbeat thread renews it meanwhile. A second
worker that wants the same thread (``keel recover``, ``recover --all``, a double-clicked resume)
is refused while the lease is live, so two runs of one thread never execute at once.

A lease is dead, and can be taken over, when
- its heartbeat is older than the TTL (``KEEL_LEASE_TTL_S``): the only sign a worker on another
  machine gives of having died, or
- its owner ran on this machine and that process is gone, or the pid now belongs to another
  process (the owner is host + boot + pid + process start time + a random token): a worker that
  died here is recovered at once, without waiting for the TTL.

It guards the checkpoints and is kept in their store: a table in the SQLite checkpoint file, or
in the Postgres database with ``KEEL_POSTGRES_URL`` (``stores.backends.open_stores`` picks), so
every worker that can see a thread sees its owner too. The two stores share one interface
(:class:`Leases`); deciding life and death is the same code for both.

Example:
    >>> leases = SqliteLeases(Path("/tmp/keel/checkpoints.sqlite"), ttl_s=30)  # doctest: +SKIP
    >>> with leases.hold("t-1"):  # doctest: +SKIP
    ...     graph.invoke(None, config)
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import LeaseHeld
from stores.checkpoints import ensure_table
from stores.sqlitefile import SqliteFile

log = logging.getLogger("keel.lease")

_SCHEMA_LOCK = 0x6B65656E  # any constant shared by Keel's processes; not the others'


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _machine() -> str:
    """This boot of this machine, as this process sees processes: the boot id and the pid
    namespace. Two containers sharing a hostname but not their pids differ here."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{_boot_id()}/{namespace}"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when there is no such
    process (a zombie counts as gone: it runs nothing). ``""`` where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of stat(5): starttime


class LeaseOwner(BaseModel):
    """Who holds a lease: enough to tell, on its own machine, whether it still lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    pid: int
    started: str = Field(
        description="boot id/pid namespace:process start time; '' where /proc cannot tell"
    )
    token: str = Field(description="random per segment: a takeover never matches the old one")

    @classmethod
    def this_process(cls) -> LeaseOwner:
        start = _process_start(os.getpid()) or ""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=f"{_machine()}:{start}" if start else "",
            token=secrets.token_hex(8),
        )

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"

    def alive_here(self) -> bool | None:
        """On this machine: whether the owner's process still runs. None: another machine (or
        nothing to tell by), only its heartbeat can say."""
        if self.host != socket.gethostname():
            return None
        machine, _, start = self.started.rpartition(":")
        boot = machine.partition("/")[0]
        if boot and boot != _boot_id():
            return False  # the machine restarted since: every process of that boot is gone
        if machine != _machine():
            return None  # same hostname, other pid namespace (a container): its pids are not ours
        now = _process_start(self.pid)
        if now is None:
            return False
        if now == "" or not start:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return now == start  # another process under a reused pid is not the owner


class Lease(BaseModel):
    """A thread's lease as stored, with the age of its heartbeat by the store's own clock."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thread_id: str
    owner: LeaseOwner
    heartbeat_age_s: float

    def live(self, ttl_s: float) -> bool:
        """Dead when the heartbeat is older than the TTL, or, on this machine, when the owner's
        process is gone; live otherwise."""
        if self.heartbeat_age_s > ttl_s:
            return False
        return self.owner.alive_here() is not False


class Leases(ABC):
    """Leases in the checkpoints' store; subclasses give the five row operations.

    Args:
        ttl_s: a heartbeat older than this is a dead owner.
        heartbeat_s: how often a holder renews (default: a third of the TTL).
    """

    def __init__(self, ttl_s: float, heartbeat_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else ttl_s / 3

    @abstractmethod
    def get(self, thread_id: str) -> Lease | None:
        """The thread's lease, if any row is stored (live or not)."""

    @abstractmethod
    def leases(self) -> list[Lease]:
        """Every stored lease."""

    @abstractmethod
    def _insert(self, thread_id: str, owner: LeaseOwner) -> bool:
        """Store a lease where none is; False if another got there first."""

    @abstractmethod
    def _replace(self, thread_id: str, old_token: str, owner: LeaseOwner) -> bool:
        """Take over the lease holding ``old_token``; False if it changed meanwhile."""

    @abstractmethod
    def renew(self, thread_id: str, owner: LeaseOwner) -> bool:
        """Refresh the heartbeat; False when the lease is no longer this owner's."""

    @abstractmethod
    def release(self, thread_id: str, owner: LeaseOwner) -> None:
        """Delete the lease if this owner still holds it."""

    def close(self) -> None:  # noqa: B027 - optional: a store on a pool has nothing to close
        """Let go of the store's connection, if it keeps one."""

    def live(self, thread_id: str) -> Lease | None:
        """The thread's lease if its owner is alive."""
        lease = self.get(thread_id)
        return lease if lease is not None and lease.live(self.ttl_s) else None

    def acquire(self, thread_id: str, owner: LeaseOwner) -> None:
        """Take the thread's lease: free, or dead and taken over (compare-and-swap on its token).

        Raises:
            LeaseHeld: a live worker holds it.
        """
        for _ in range(5):
            current = self.get(thread_id)
            if current is None:
                if self._insert(thread_id, owner):
                    return
                continue
            if current.live(self.ttl_s):
                raise LeaseHeld(thread_id, current.owner.describe(), current.heartbeat_age_s)
            if self._replace(thread_id, current.owner.token, owner):
                log.info(
                    "lease of thread %s taken over from dead worker %s",
                    thread_id, current.owner.describe(),
                )  # fmt: skip
                return
        current = self.get(thread_id)
        raise LeaseHeld(
            thread_id,
            current.owner.describe() if current else "another worker",
            current.heartbeat_age_s if current else 0.0,
        )

    @contextmanager
    def hold(self, thread_id: str, owner: LeaseOwner | None = None) -> Iterator[LeaseOwner]:
        """Hold the thread's lease for the ``with`` block, renewed by a heartbeat thread.

        Raises:
            LeaseHeld: a live worker holds it.
        """
        owner = owner or LeaseOwner.this_process()
        self.acquire(thread_id, owner)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    if not self.renew(thread_id, owner):
                        log.warning(
                            "lease of thread %s lost (no heartbeat for %s s): another worker "
                            "may have taken it over", thread_id, self.ttl_s,
                        )  # fmt: skip
                        return
                except Exception as err:  # a missed beat is retried; the TTL absorbs a few
                    log.warning("lease heartbeat of thread %s failed: %s", thread_id, err)

        heart = threading.Thread(target=beat, name=f"keel-lease-{thread_id[:8]}", daemon=True)
        heart.start()
        try:
            yield owner
        finally:
            stop.set()
            heart.join()
            try:
                self.release(thread_id, owner)
            except Exception as err:  # the TTL and the pid check free it anyway
                log.warning("lease of thread %s not released: %s", thread_id, err)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_leases (
    thread_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL,
    token TEXT NOT NULL, acquired_at REAL NOT NULL, heartbeat_at REAL NOT NULL
);
"""


class SqliteLeases(Leases):
    """Leases in a table of the SQLite checkpoint file; every write is its own transaction.

    Args:
        path: the checkpoint database (``settings.checkpoint_db``).
        clock: seconds since the epoch (injected for tests).
    """

    def __init__(
        self,
        path: Path,
        ttl_s: float,
        heartbeat_s: float | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ttl_s, heartbeat_s)
        self.path = path
        self.clock = clock
        # A lease is about live processes: after a power cut none of them is alive, so a lease
        # write lost with it is harmless, and NORMAL spares a sync per segment's acquire and
        # release (this connection's setting; the checkpoints' own stays FULL).
        self._file = SqliteFile(path, schema=_SQLITE_SCHEMA, synchronous="NORMAL")

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        """One connection per process, shared by the heartbeat thread under a lock: opening
        one per call cost tens of milliseconds per segment."""
        return self._file.connect()

    def close(self) -> None:
        self._file.close()

    def _lease(self, row: tuple[Any, ...]) -> Lease:
        thread_id, host, pid, started, token, heartbeat_at = row
        return Lease(
            thread_id=thread_id,
            owner=LeaseOwner(host=host, pid=pid, started=started, token=token),
            heartbeat_age_s=max(0.0, self.clock() - heartbeat_at),
        )

    _COLUMNS = "thread_id, host, pid, started, token, heartbeat_at"

    def get(self, thread_id: str) -> Lease | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM keel_leases WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        return None if row is None else self._lease(row)

    def leases(self) -> list[Lease]:
        with self._db() as db:
            rows = db.execute(f"SELECT {self._COLUMNS} FROM keel_leases").fetchall()
        return [self._lease(r) for r in rows]

    def _insert(self, thread_id: str, owner: LeaseOwner) -> bool:
        now = self.clock()
        with self._db() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO keel_leases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (thread_id, owner.host, owner.pid, owner.started, owner.token, now, now),
            )
        return cursor.rowcount == 1

    def _replace(self, thread_id: str, old_token: str, owner: LeaseOwner) -> bool:
        now = self.clock()
        with self._db() as db:
            cursor = db.execute(
                "UPDATE keel_leases SET host = ?, pid = ?, started = ?, token = ?,"
                " acquired_at = ?, heartbeat_at = ? WHERE thread_id = ? AND token = ?",
                (owner.host, owner.pid, owner.started, owner.token, now, now, thread_id,
                 old_token),
            )  # fmt: skip
        return cursor.rowcount == 1

    def renew(self, thread_id: str, owner: LeaseOwner) -> bool:
        with self._db() as db:
            cursor = db.execute(
                "UPDATE keel_leases SET heartbeat_at = ? WHERE thread_id = ? AND token = ?",
                (self.clock(), thread_id, owner.token),
            )
        return cursor.rowcount == 1

    def release(self, thread_id: str, owner: LeaseOwner) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM keel_leases WHERE thread_id = ? AND token = ?",
                (thread_id, owner.token),
            )


_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_leases (
    thread_id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL,
    token TEXT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
"""


class PostgresLeases(Leases):
    """Leases in the ``keel_leases`` table of the checkpoint database, timed by the server's
    clock (workers on several machines need not agree on the time).

    Args:
        connection: gives a connection (autocommit) for one call: the checkpointer's pool's
            ``connection``, so an outage is the same ``StoreUnavailable``.
    """

    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[Any]],
        ttl_s: float,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(ttl_s, heartbeat_s)
        self.connection = connection
        self._ready = False

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[list[Any], int]:
        with self.connection() as conn:
            if not self._ready:
                ensure_table(conn, "keel_leases", _POSTGRES_SCHEMA, _SCHEMA_LOCK)
                self._ready = True
            cursor = conn.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
            return rows, cursor.rowcount

    _SELECT = (
        "SELECT thread_id, host, pid, started, token,"
        " extract(epoch FROM clock_timestamp() - heartbeat_at) AS age FROM keel_leases"
    )

    @staticmethod
    def _lease(row: Any) -> Lease:
        values = list(row.values()) if isinstance(row, dict) else list(row)
        thread_id, host, pid, started, token, age = values
        return Lease(
            thread_id=thread_id,
            owner=LeaseOwner(host=host, pid=pid, started=started, token=token),
            heartbeat_age_s=max(0.0, float(age)),
        )

    def get(self, thread_id: str) -> Lease | None:
        rows, _ = self._execute(self._SELECT + " WHERE thread_id = %s", (thread_id,))
        return self._lease(rows[0]) if rows else None

    def leases(self) -> list[Lease]:
        rows, _ = self._execute(self._SELECT)
        return [self._lease(r) for r in rows]

    def _insert(self, thread_id: str, owner: LeaseOwner) -> bool:
        _, count = self._execute(
            "INSERT INTO keel_leases (thread_id, host, pid, started, token)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (thread_id) DO NOTHING",
            (thread_id, owner.host, owner.pid, owner.started, owner.token),
        )
        return count == 1

    def _replace(self, thread_id: str, old_token: str, owner: LeaseOwner) -> bool:
        _, count = self._execute(
            "UPDATE keel_leases SET host = %s, pid = %s, started = %s, token = %s,"
            " acquired_at = clock_timestamp(), heartbeat_at = clock_timestamp()"
            " WHERE thread_id = %s AND token = %s",
            (owner.host, owner.pid, owner.started, owner.token, thread_id, old_token),
        )
        return count == 1

    def renew(self, thread_id: str, owner: LeaseOwner) -> bool:
        _, count = self._execute(
            "UPDATE keel_leases SET heartbeat_at = clock_timestamp()"
            " WHERE thread_id = %s AND token = %s",
            (thread_id, owner.token),
        )
        return count == 1

    def release(self, thread_id: str, owner: LeaseOwner) -> None:
        self._execute(
            "DELETE FROM keel_leases WHERE thread_id = %s AND token = %s",
            (thread_id, owner.token),
        )


def _first(row: Any) -> Any:
    if row is None:
        return None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


__all__ = [
    "Lease",
    "LeaseOwner",
    "Leases",
    "PostgresLeases",
    "SqliteLeases",
]
