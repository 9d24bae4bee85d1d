"""stores.sqlitefile: one connection per process, transactions that roll back, a reset that keeps
the file, and a forked child that never uses its parent's connection."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from stores.sqlitefile import SqliteFile

SCHEMA = "CREATE TABLE IF NOT EXISTS items (n INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"


def names(db: SqliteFile) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT name FROM items ORDER BY n")]


def test_one_connection_per_process_shared_by_threads(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "a.sqlite", schema=SCHEMA)
    seen: list[sqlite3.Connection] = []

    def write(i: int) -> None:
        for _ in range(20):
            with db.transaction() as conn:
                seen.append(conn)
                conn.execute("INSERT INTO items (name) VALUES (?)", (f"t{i}",))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1
    assert len(names(db)) == 80


def test_a_failed_block_writes_nothing(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "a.sqlite", schema=SCHEMA)
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('half')")
        raise RuntimeError("the call failed")
    with db.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('whole')")
    assert names(db) == ["whole"]


def test_wipe_keeps_the_file_and_another_process_sees_the_reset(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    mine, theirs = SqliteFile(path, schema=SCHEMA), SqliteFile(path, schema=SCHEMA)
    with theirs.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('before')")
    inode = path.stat().st_ino
    mine.wipe()
    assert path.stat().st_ino == inode
    assert names(theirs) == []  # the open connection reads the reset file, not a deleted one
    with theirs.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('after')")
        (n,) = conn.execute("SELECT n FROM items").fetchone()
    assert n == 1  # the AUTOINCREMENT counter was reset too


def _child_writes(db: SqliteFile, out: multiprocessing.SimpleQueue[int]) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('child')")
    out.put(id(db._conn))


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "a.sqlite", schema=SCHEMA)
    with db.transaction() as conn:
        conn.execute("INSERT INTO items (name) VALUES ('parent')")
    parents = id(db._conn)
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.SimpleQueue[int] = ctx.SimpleQueue()
    child = ctx.Process(target=_child_writes, args=(db, out))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert out.get() != parents
    assert names(db) == ["parent", "child"]
    assert id(db._conn) == parents  # the parent's own connection is untouched


def test_the_switch_to_wal_is_tried_again_when_another_opener_holds_the_file() -> None:
    """Two workers opening a new file at once: SQLite answers "locked" at once (no busy wait);
    the switch is tried again, and any other error is raised as it is."""
    import sqlite3

    from stores.sqlitefile import write_ahead

    class Racing:
        def __init__(self, locked: int, error: str = "database is locked") -> None:
            self.locked, self.error, self.calls = locked, error, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.calls <= self.locked:
                raise sqlite3.OperationalError(self.error)

    racing = Racing(locked=3)
    write_ahead(racing, pause_s=0)  # type: ignore[arg-type]
    assert racing.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        write_ahead(Racing(locked=10), tries=5, pause_s=0)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        write_ahead(Racing(locked=1, error="disk I/O error"), pause_s=0)  # type: ignore[arg-type]
