"""One SQLite file, one connection per process, shared by the process's threads under a lock.

Opening a connection per call costs a few milliseconds each time, and on a WAL file closing the
last connection checkpoints the log and syncs the file again: about three fsyncs for one write.
Keel's small stores (the intent ledger, the event inbox, the breakers) and the example domains'
backends therefore keep one connection open per process. Every statement runs under a
re-entrant lock, so the LangGraph executor's threads and a heartbeat thread take turns on it;
other processes share the file through SQLite's own locking (a busy timeout, not an error).

A forked child opens a connection of its own at first use: a connection carried across ``fork``
must not be used (SQLite's documentation), so the parent's is left untouched in the child.

Example:
    >>> import tempfile
    >>> db = SqliteFile(Path(tempfile.mkdtemp()) / "notes.sqlite",
    ...                 schema="CREATE TABLE IF NOT EXISTS notes (text TEXT);")
    >>> with db.transaction() as conn:
    ...     _ = conn.execute("INSERT INTO notes VALUES ('kept')")
    >>> with db.connect() as conn:
    ...     conn.execute("SELECT text FROM notes").fetchall()
    [('kept',)]
    >>> db.wipe()  # every table dropped, then the schema's created again, empty
    >>> with db.connect() as conn:
    ...     conn.execute("SELECT count(*) FROM notes").fetchone()
    (0,)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from keel.errors import ConfigError

Synchronous = Literal["FULL", "NORMAL"]


def write_ahead(conn: sqlite3.Connection, *, tries: int = 100, pause_s: float = 0.05) -> None:
    """Put the file in WAL mode. Processes opening a new file at once can each hold a read lock
    while asking for the exclusive one the switch needs; SQLite then answers "database is
    locked" at once, without waiting out the busy timeout (it would deadlock), so the switch is
    tried again after a pause. Once one process has switched, the others' switch is a no-op.

    Example:
        >>> conn = sqlite3.connect(":memory:")
        >>> write_ahead(conn)  # an in-memory file stays "memory"; a file on disk becomes "wal"
    """
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == tries - 1:
                raise
            time.sleep(pause_s)


class SqliteFile:
    """A SQLite file in WAL mode behind one lazily opened, process-wide connection.

    Args:
        path: the file (its folder is created at first use).
        schema: a script of ``CREATE ... IF NOT EXISTS`` statements, run once per connection.
        synchronous: ``FULL`` (a commit survives a power cut) or ``NORMAL`` (it survives a killed
            process; a power cut may lose the last commits).
        rows: ``"row"`` for ``sqlite3.Row`` results (by column name), ``"tuple"`` otherwise.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: str = "",
        synchronous: Synchronous = "FULL",
        rows: Literal["tuple", "row"] = "tuple",
    ) -> None:
        self.path = path
        self.schema = schema
        self.synchronous = synchronous
        self.rows = rows
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 30000")
            write_ahead(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if self.schema:
                conn.executescript(self.schema)
            if self.rows == "row":
                conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    def _mine(self) -> threading.RLock:
        """This process's lock (a forked child starts with a fresh lock and no connection)."""
        if self._pid != os.getpid():
            if self._conn is not None:
                self._inherited.append(self._conn)  # never used, never closed, in the child
            self._conn, self._lock, self._pid = None, threading.RLock(), os.getpid()
        return self._lock

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that each commit on their own (autocommit)."""
        with self._mine():
            yield self._connection()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back when the block raises.

        IMMEDIATE takes the write lock at the start, so a read-then-write block (an idempotency
        check before an insert) cannot interleave with another process's.
        """
        with self._mine():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def wipe(self) -> None:
        """Drop every table in one transaction (their AUTOINCREMENT counters too), then run the
        schema again.

        A reset that keeps the file: unlinking a WAL file under an open connection would leave
        its log to be replayed into whatever file is created next at that path.
        """
        with self.transaction() as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                ).fetchall()
            ]
            for name in tables:
                conn.execute(f'DROP TABLE "{name}"')
            if conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
            ).fetchone():
                conn.execute("DELETE FROM sqlite_sequence")
        if self.schema:
            with self.connect() as conn:
                conn.executescript(self.schema)

    def close(self) -> None:
        with self._mine():
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def schema_gaps(path: Path, schema: str) -> list[str]:
    """What the tables and columns a ``CREATE ... IF NOT EXISTS`` script makes lack in a file:
    ``[]`` when the file has them all. The file is read, never created or changed.

    A backend's "prepared" check asks this rather than whether its file exists: a failed first
    run or a killed seed leaves a file that exists and holds nothing a run can use.

    Raises:
        ConfigError: the file is there but is not a SQLite database; the message says how to
            start again.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "b.sqlite"
        >>> script = "CREATE TABLE IF NOT EXISTS notes (text TEXT, at TEXT);"
        >>> schema_gaps(path, script)
        ['no file']
        >>> _ = path.write_bytes(b"")  # what a failed first run leaves
        >>> schema_gaps(path, script)
        ['table notes']
        >>> with sqlite3.connect(path) as conn:
        ...     _ = conn.execute("CREATE TABLE notes (text TEXT)")
        >>> schema_gaps(path, script)
        ['column notes.at']
    """
    if not path.exists():
        return ["no file"]
    wanted = _columns(sqlite3.connect(":memory:"), schema)
    try:
        found = _columns(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True), "")
    except sqlite3.DatabaseError as err:
        raise ConfigError(
            f"{path} is not a SQLite database ({err}): move it away, then run `keel seed`"
        ) from err
    gaps: list[str] = []
    for table, columns in wanted.items():
        if table not in found:
            gaps.append(f"table {table}")
            continue
        gaps += [f"column {table}.{c}" for c in columns if c not in found[table]]
    return gaps


def _columns(conn: sqlite3.Connection, script: str) -> dict[str, list[str]]:
    """Each table of a connection (after running ``script`` on it) with its column names."""
    try:
        if script:
            conn.executescript(script)
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}
    finally:
        conn.close()
