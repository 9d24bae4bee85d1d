"""Breaker state shared by every process of one Keel home: a small SQLite table.

``$KEEL_HOME/breakers.sqlite`` holds one row per integration (consecutive faults, when it opened,
when its probe went out). A breaker opened by one worker is open for every worker and for
``keel health``; a cooled-down breaker lets one probe through across all of them. Every state
change is one short ``BEGIN IMMEDIATE`` transaction; a call that changes nothing (the everyday
read, a success on a closed breaker) only reads, so the hot path never takes the write lock.

The timestamps are wall-clock time (``time.time``), the one clock processes share and that
survives a reboot; ``tools.resilience.cooled`` treats a clock that went back as cooled down.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from stores.sqlitefile import SqliteFile
from tools.resilience import CLOSED, Breaker, BreakerRecord, cooled

SCHEMA = """
CREATE TABLE IF NOT EXISTS breakers (
    integration TEXT PRIMARY KEY, failures INTEGER NOT NULL, opened_at REAL, probe_at REAL,
    updated_at REAL NOT NULL
);
"""


class SqliteBreakers:
    """Breakers in a SQLite file; every store opened on the same file shares them.

    Args:
        path: the file (``Settings.breaker_db``); created on first use.
        clock: the shared timeline; tests inject their own.

    Example:
        >>> store = SqliteBreakers(Path("/tmp/keel/breakers.sqlite"))
        >>> store.breaker("carrier_api").state
        'closed'
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        # Breaker state lost to a power cut is harmless (it is re-learnt in two calls); the fsync
        # per change that FULL costs is not.
        self._file = SqliteFile(path, schema=SCHEMA, synchronous="NORMAL")

    def breaker(self, name: str) -> Breaker:
        """A breaker for ``name`` kept in this store (what ``ToolRegistry.breaker_for`` takes)."""
        return Breaker(name, clock=self.clock, store=self)

    def _row(self, db: sqlite3.Connection, name: str) -> BreakerRecord:
        row = db.execute(
            "SELECT failures, opened_at, probe_at FROM breakers WHERE integration = ?", (name,)
        ).fetchone()
        return CLOSED if row is None else BreakerRecord(*row)

    def read(self, name: str) -> BreakerRecord:
        with self._file.connect() as db:
            return self._row(db, name)

    def fault(self, name: str, *, now: float, threshold: int) -> BreakerRecord:
        with self._file.transaction() as db:
            was = self._row(db, name)
            failures = was.failures + 1
            opened = now if failures >= threshold or was.opened_at is not None else None
            db.execute(
                "INSERT INTO breakers VALUES (?, ?, ?, NULL, ?) ON CONFLICT (integration) DO "
                "UPDATE SET failures = excluded.failures, opened_at = excluded.opened_at, "
                "probe_at = NULL, updated_at = excluded.updated_at",
                (name, failures, opened, time.time()),
            )
        return BreakerRecord(failures, opened, None)

    def success(self, name: str) -> None:
        with self._file.connect() as db:
            if self._row(db, name) == CLOSED:
                return  # the everyday case: nothing to change, no write lock taken
            db.execute(
                "UPDATE breakers SET failures = 0, opened_at = NULL, probe_at = NULL,"
                " updated_at = ? WHERE integration = ?",
                (time.time(), name),
            )

    def claim_probe(self, name: str, *, now: float, cooldown_s: float) -> bool:
        with self._file.transaction() as db:
            was = self._row(db, name)
            free = (
                was.opened_at is not None
                and cooled(was.opened_at, now, cooldown_s)
                and (was.probe_at is None or cooled(was.probe_at, now, cooldown_s))
            )
            if free:
                db.execute(
                    "UPDATE breakers SET probe_at = ?, updated_at = ? WHERE integration = ?",
                    (now, time.time(), name),
                )
        return free

    def reset(self) -> None:
        """Close every breaker (an eval's runs start from the same state, as its backend does)."""
        with self._file.connect() as db:
            db.execute("DELETE FROM breakers")

    def close(self) -> None:
        self._file.close()
