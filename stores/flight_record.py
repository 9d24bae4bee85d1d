"""The flight record on SQLite next to the checkpoints: append-only, one committed insert per event.

(With ``KEEL_POSTGRES_URL`` it is in PostgreSQL instead: ``stores.flight_record_postgres``; both
share :class:`FlightRecord`'s reads, and ``observability.records`` picks one.)

Durability: WAL and autocommit, so an event is in the database file's log when ``append``
returns, and a killed process loses nothing that was acknowledged. What a power cut or a kernel
crash may lose depends on ``synchronous`` (``KEEL_RECORD_SYNC``): with ``NORMAL``, the default
for a run, the last events not yet synced to disk (never the database's consistency); with
``FULL``, nothing, at the price of one disk sync per event. A run emits about 60 events, and on a
busy disk those syncs were most of a warm run's time; the record explains runs, while
exactly-once rests on the intent ledger, which keeps SQLite's default, ``FULL``. Append-only
is enforced by the database itself: triggers refuse every UPDATE and DELETE.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from keel.errors import BadRequest, StoreUnavailable
from observability.record_events import SCHEMA_VERSION, RecordEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    schema_version INTEGER NOT NULL,
    run_id         TEXT NOT NULL,
    thread_id      TEXT NOT NULL,
    segment        INTEGER NOT NULL,
    checkpoint_id  TEXT,
    node           TEXT,
    step           INTEGER,
    kind           TEXT NOT NULL,
    at             TEXT NOT NULL,
    payload        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, seq);
CREATE INDEX IF NOT EXISTS events_thread ON events (thread_id, seq);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the flight record is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the flight record is append-only'); END;
"""


class RunSummary(BaseModel):
    """One line of ``keel runs``."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    thread_id: str
    request: str | None
    status: str
    started_at: str
    duration_ms: float
    segments: int
    tool_calls: int
    denials: int
    model_calls: int
    approvals: int
    escalations: int
    planner: str | None


class FlightRecord(ABC):
    """The flight record's reads, written once for every backend; a backend stores and queries.

    A backend gives ``append`` and ``_query`` (SQL written with ``?`` placeholders, rows as
    tuples); turning rows into typed events, checking their schema version, and finding a run
    are the same code on SQLite and PostgreSQL. Append-only is the backend's database's job.
    """

    where: str
    """Where the record is, as messages name it (a file, or ``KEEL_POSTGRES_URL=...``)."""

    @abstractmethod
    def append(self, event: RecordEvent) -> int:
        """Store one event (committed when this returns); its sequence number.

        Raises:
            StoreUnavailable: the store could not take it (an outage, a full disk, a read-only
                database): whatever the backend's own error was.
        """

    def append_many(self, events: list[RecordEvent]) -> None:
        """Store several events in one transaction (all committed when this returns, or none).

        Raises:
            StoreUnavailable: as ``append``.
        """
        for event in events:
            self.append(event)

    @abstractmethod
    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read (``?`` placeholders)."""

    def close(self) -> None:  # noqa: B027 - optional: nothing to close for some backends
        """Give back what the store holds open."""

    def exists(self) -> bool:
        """Whether the record is there to be read (a database's table is; a file may not be)."""
        return True

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[RecordEvent]:
        rows = self._query(
            "SELECT seq, schema_version, run_id, thread_id, segment, checkpoint_id, node, step,"
            f" at, payload FROM {self.table} WHERE {where} ORDER BY seq",
            params,
        )
        events = []
        for seq, version, run_id, thread_id, segment, checkpoint_id, node, step, at, body in rows:
            if version != SCHEMA_VERSION:
                raise BadRequest(
                    f"event {seq} has record schema {version}; this Keel reads {SCHEMA_VERSION}"
                )
            events.append(
                RecordEvent.model_validate(
                    {
                        "seq": seq, "schema_version": version, "run_id": run_id,
                        "thread_id": thread_id, "segment": segment,
                        "checkpoint_id": checkpoint_id, "node": node, "step": step, "at": at,
                        "payload": json.loads(body),
                    }
                )
            )  # fmt: skip
        return events

    table = "events"
    """The events' table (Postgres prefixes Keel's tables)."""

    def events(self, run_id: str) -> list[RecordEvent]:
        """Every event of one run, in order."""
        return self._rows("run_id = ?", (run_id,))

    def count(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.table}")[0][0])

    def latest_run(self, thread_id: str) -> str | None:
        """The run a thread's last event belongs to, if it has any."""
        rows = self._query(
            f"SELECT run_id FROM {self.table} WHERE thread_id = ? ORDER BY seq DESC LIMIT 1",
            (thread_id,),
        )
        return str(rows[0][0]) if rows else None

    def next_segment(self, run_id: str) -> int:
        rows = self._query(f"SELECT MAX(segment) FROM {self.table} WHERE run_id = ?", (run_id,))
        return 0 if not rows or rows[0][0] is None else int(rows[0][0]) + 1

    def latest_segment(self, thread_id: str) -> tuple[str, int] | None:
        """The run a thread's last event belongs to and that run's last segment, in one read
        (a served resume continues it: ``graph.served``); None for a thread with no events."""
        rows = self._query(
            f"SELECT run_id, (SELECT MAX(segment) FROM {self.table} AS r"
            f" WHERE r.run_id = t.run_id) FROM {self.table} AS t"
            " WHERE thread_id = ? ORDER BY seq DESC LIMIT 1",
            (thread_id,),
        )
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def resolve(self, ref: str) -> str:
        """A run id from a run id, a thread id, or a unique prefix of a run id.

        Raises:
            BadRequest: nothing, or more than one run, matches.
        """
        if self._query(f"SELECT 1 FROM {self.table} WHERE run_id = ? LIMIT 1", (ref,)):
            return ref
        by_thread = self.latest_run(ref)
        if by_thread is not None:
            return by_thread
        escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        prefixed = self._query(
            f"SELECT DISTINCT run_id FROM {self.table} WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
            (escaped + "%",),
        )
        if len(prefixed) == 1 and len(ref) >= 4:
            return str(prefixed[0][0])
        if len(prefixed) > 1:
            raise RunNotFound(f"{ref!r} matches more than one run; give more of the id")
        raise RunNotFound(f"no recorded run or thread {ref!r} (see `keel runs`)")

    def run_ids(self, limit: int | None = None) -> list[str]:
        """Run ids, most recent first."""
        sql = f"SELECT run_id FROM {self.table} GROUP BY run_id ORDER BY MAX(seq) DESC"
        rows = self._query(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [str(r[0]) for r in rows]

    def runs(self, limit: int = 20) -> list[RunSummary]:
        """The most recent runs, newest first, summarized."""
        return [summarize(self.events(run_id)) for run_id in self.run_ids(limit)]


def event_row(event: RecordEvent) -> tuple[Any, ...]:
    """The columns ``append`` inserts, in the order of ``INSERT_COLUMNS``."""
    return (
        event.schema_version, event.run_id, event.thread_id, event.segment,
        event.checkpoint_id, event.node, event.step, event.kind, event.at,
        event.payload.model_dump_json(),
    )  # fmt: skip


INSERT_COLUMNS = (
    "(schema_version, run_id, thread_id, segment, checkpoint_id, node, step, kind, at, payload)"
)


_INSERT = f"INSERT INTO events {INSERT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


class NoRecord(FlightRecord):
    """A record that keeps nothing: with ``KEEL_RECORD=false``, a recorder's sinks (OpenTelemetry's
    spans) are still told every event, and nothing is stored or found.

    Example:
        >>> NoRecord().next_segment("r"), NoRecord().latest_run("t")
        (0, None)
    """

    where = "nowhere (KEEL_RECORD=false)"

    def append(self, event: RecordEvent) -> int:
        return 0

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return []


class SqliteFlightRecord(FlightRecord):
    """Events of every run, keyed by thread, run, segment, checkpoint and sequence (SQLite).

    Example:
        >>> store = SqliteFlightRecord(":memory:")
        >>> store.count()
        0
    """

    def __init__(self, path: Path | str, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self.where = self.path
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        """The connection, opened (and the file made) on first use, under ``self._lock``: a
        record opened with the other stores and never written makes no file."""
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def exists(self) -> bool:
        """Whether anything was ever recorded here: the file exists."""
        return self._conn is not None or self.path == ":memory:" or Path(self.path).exists()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def append(self, event: RecordEvent) -> int:
        """Store one event (committed when this returns); its sequence number."""
        try:
            with self._lock:
                cursor = self._db().execute(_INSERT, event_row(event))
        except sqlite3.Error as err:
            raise StoreUnavailable(self.where, f"flight recorder: {err}") from err
        return int(cursor.lastrowid or 0)

    def append_many(self, events: list[RecordEvent]) -> None:
        """Store the events in one transaction: one disk sync for the batch, not one each."""
        rows = [event_row(event) for event in events]
        try:
            with self._lock:
                conn = self._db()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_INSERT, rows)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise StoreUnavailable(self.where, f"flight recorder: {err}") from err

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db().execute(sql, params).fetchall())


def summarize(events: list[RecordEvent]) -> RunSummary:
    """One run's line: status, duration, and what it did."""
    first = events[0]
    request = None
    status = "running"
    duration = 0.0
    planner = None
    counts = {"tool": 0, "denied": 0, "model": 0, "approvals": 0, "escalations": 0}
    for event in events:
        p = event.payload
        if p.kind == "run_started" and p.mode == "run":
            request = p.request
        elif p.kind == "run_ended":
            status = p.status if p.error is None else "error"
            duration += p.duration_ms
        elif p.kind == "tool_call":
            counts["tool"] += 1
            counts["denied"] += p.call.decision == "denied"
        elif p.kind == "model_call":
            counts["model"] += 1
        elif p.kind == "approval_requested":
            counts["approvals"] += 1
        elif p.kind == "escalation":
            counts["escalations"] += 1
        elif p.kind == "plan":
            planner = p.planner
    return RunSummary(
        run_id=first.run_id,
        thread_id=first.thread_id,
        request=request,
        status=status,
        started_at=first.at,
        duration_ms=round(duration, 3),
        segments=max(e.segment for e in events) + 1,
        tool_calls=counts["tool"],
        denials=counts["denied"],
        model_calls=counts["model"],
        approvals=counts["approvals"],
        escalations=counts["escalations"],
        planner=planner,
    )


class BatchedRecord(FlightRecord):
    """A flight record written behind the run: ``append`` queues the event, a writer thread
    stores whatever is queued in one transaction (``append_many``), and every read waits for
    the queue to be written first, so a read sees every event appended before it.

    What a served run records (``graph.served``) goes through it: the node that emits an event
    does not wait for the disk or the database, and the events of a moment (``linger_s``) are
    one commit, not one each. ``flush`` is the barrier (a served run's end waits for it, so
    ``keel trace`` right after the run sees all of it, and so does the end of a node that made a
    write or an irreversible call, before the node's writes are saved). The price: a process
    killed (SIGKILL) loses the events queued in its last moments (about ``linger_s``), which were
    never acknowledged; what was written stays, and the run's re-run continues the same run in
    the record.

    Example:
        >>> record = BatchedRecord(SqliteFlightRecord(":memory:"))
        >>> record.count()
        0
        >>> record.close()
    """

    def __init__(
        self,
        inner: FlightRecord,
        *,
        log: logging.Logger | None = None,
        max_batch: int = 500,
        linger_s: float = 0.25,
    ) -> None:
        self.inner = inner
        self.where = inner.where
        self.table = inner.table
        self.log = log or logging.getLogger("keel.record")
        self.max_batch = max_batch
        self.linger_s = linger_s
        """How long the writer waits for more events after the first of a batch: a run emits
        its events one at a time, and without the wait each would be its own transaction
        (issue 26). A flush does not wait for it."""
        self.lost = 0
        """Events the store refused (an outage): logged once per outage, counted here."""
        self._queue: list[RecordEvent] = []
        self._batch: list[RecordEvent] = []
        """The events being written now."""
        self._writing = 0
        self._closed = False
        self._flushing = 0
        self._cond = threading.Condition()
        self._writer: threading.Thread | None = None

    def append(self, event: RecordEvent) -> int:
        """Queue the event for the writer; 0 (its sequence number is the store's, later)."""
        with self._cond:
            if self._closed:
                raise StoreUnavailable(self.where, "flight recorder: closed")
            self._queue.append(event)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="keel-record-writer", daemon=True
                )
                self._writer.start()
            self._cond.notify_all()
        return 0

    def append_many(self, events: list[RecordEvent]) -> None:
        for event in events:
            self.append(event)

    def flush(self, timeout_s: float = 30.0, *, run_id: str | None = None) -> bool:
        """Wait until every event queued so far (of ``run_id`` only, when given) is written
        (or refused); False on timeout."""
        if run_id is not None:
            return self._settle(lambda e: e.run_id == run_id, timeout_s)
        with self._cond:
            self._flushing += 1  # the writer stops lingering
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout_s)
            finally:
                self._flushing -= 1

    def _settle(self, pending: Callable[[RecordEvent], bool], timeout_s: float = 30.0) -> bool:
        """Wait until no event ``pending`` picks is queued or being written (False on timeout):
        a read about one thread or run waits for its own events, not for everyone's."""
        with self._cond:

            def settled() -> bool:
                return not any(map(pending, self._queue)) and not any(map(pending, self._batch))

            if settled():
                return True
            self._flushing += 1  # the writer stops lingering
            self._cond.notify_all()
            try:
                return self._cond.wait_for(settled, timeout_s)
            finally:
                self._flushing -= 1

    def latest_run(self, thread_id: str) -> str | None:
        self._settle(lambda e: e.thread_id == thread_id)
        return self.inner.latest_run(thread_id)

    def next_segment(self, run_id: str) -> int:
        self._settle(lambda e: e.run_id == run_id)
        return self.inner.next_segment(run_id)

    def latest_segment(self, thread_id: str) -> tuple[str, int] | None:
        self._settle(lambda e: e.thread_id == thread_id)
        return self.inner.latest_segment(thread_id)

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue and self._closed:
                    return
                # Gather what the run emits next, unless someone waits for the record.
                self._cond.wait_for(
                    lambda: self._closed or self._flushing or len(self._queue) >= self.max_batch,
                    self.linger_s,
                )
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._writing, self._batch = len(batch), batch
            try:
                self.inner.append_many(batch)
            except StoreUnavailable as err:
                self._refused(batch, err)
            except Exception as err:  # a bug must not kill the writer: the queue would grow
                self._refused(batch, StoreUnavailable(self.where, f"flight recorder: {err!r}"))
            else:
                if self.lost:
                    self.log.warning(
                        "record_store_back", extra={"keel": {"lost": self.lost}}
                    )  # fmt: skip
                    self.lost = 0
            finally:
                with self._cond:
                    self._writing, self._batch = 0, []
                    self._cond.notify_all()

    def _refused(self, batch: list[RecordEvent], err: StoreUnavailable) -> None:
        """A store that fails loses the batch, never a run: one warning per outage."""
        if not self.lost:
            first = batch[0]
            self.log.warning(
                "record_event_lost",
                extra={
                    "keel": {
                        "event": first.kind, "run_id": first.run_id, "thread_id": first.thread_id,
                        "segment": first.segment, "error": " ".join(str(err).split())[:300],
                    }
                },
            )  # fmt: skip
        self.lost += len(batch)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.flush()
        return self.inner._query(sql, params)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the store."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(timeout=30)
        self.inner.close()


class RunNotFound(BadRequest):
    """No recorded run matches the id given."""
