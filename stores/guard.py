"""The thread guard: what Keel's guarantees depend on, kept outside the checkpoint.

Anyone who can act on a thread can write its state (``update_state``, ``Command(update=...,
goto=...)``, a run from an earlier checkpoint, ``{"__overwrite__": ...}`` past a reducer; see
shared/TRAPS.md). So the facts a guarantee rests on are written here, beside the intent ledger
(the same SQLite file; the same PostgreSQL database with ``KEEL_POSTGRES_URL``), when they happen,
and the gate, the validator and the approval node read them here. The checkpoint's copies
(``results``, ``rejected``, ``evidence``, an awaited event) are a working copy, never the
authority. Per thread, append-only:

- **receipts consumed**: a receipt is consumed at the moment of its call, atomically, keyed by
  thread and action digest; a second consumption fails (``consume_receipt``). A consumption is
  held by the attempt that made it (LangGraph's task id) until the call answered
  (``settle_receipt``), so the same attempt re-run after a crash may make its call, and nothing
  else may;
- **rejections**: the digests a reviewer rejected, and by whom;
- **taint**: the low-trust evidence (wiki pages, outside text from tools) that entered the
  thread's context;
- **the requester**: the authenticated user of the thread's first run (first write wins), for
  four-eyes approvals;
- **waits**: the domain events the thread's effects in flight wait for, recorded by the executor
  when the step answered (``record_wait``); until one is woken, nothing but the action that
  started it runs in the thread, whatever ``waiting`` in the state says;
- **deliveries**: the domain events the relay delivered to the thread, and whether one has woken
  it (``record_wake``: once, which also closes the wait it answers);
- **validated plans**: the digest (``plan_digest``) of every plan the validator passed in the
  thread; the executor runs no step of any other plan, whatever ``plan`` and ``plan_verdict``
  in the state say;
- **the approval history**: what reviewers were shown and who changed it (``stores.review_log``
  reads and writes it through ``add_review_entry`` and ``review_entries``);
- **what vouches for an argument**: the request intake took (``record_request``) and the records
  the planner read through trusted tools (``record_records``). An argument whose value appears in
  them is the request's or a record's (``tools.provenance``), so a caller who writes ``request``
  or ``records`` into the state must not be able to add to them: the state's copies only narrow
  what these vouch for (``graph.approval.thread_sources``).

``Guard`` states the contract; ``SqliteGuard`` keeps it in a SQLite file and
``stores.guard_postgres.PostgresGuard`` in PostgreSQL; ``stores.backends.open_stores`` picks one
from the settings.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graph.state import DomainEvent, EventWait, Evidence, Plan, tainting
from stores.sqlitefile import SqliteFile


@dataclass(frozen=True)
class GuardFacts:
    """What the guard holds for one thread, as the gate and the nodes read it.

    Attributes:
        spent: digests of receipts already consumed (a receipt works once); for ``attempt``,
            without the one it consumed itself and has not settled (its own call, re-run).
        rejected: digests a reviewer rejected (a rejection holds).
        taint: the low-trust evidence that entered the thread, oldest first.
        requester: the thread's authenticated requester, or None (nobody authenticated).
        waiting: the open waits: (event type, key, digest of the action that started it).
        plan_validated: whether the validator passed the plan ``facts`` was asked about
            (``plan=``), read with the rest; None when it was not asked.
        requests: the request texts intake took in the thread, oldest first.
        records: the records the planner read through trusted tools, each pass's, oldest first.
        reviews: the approval history as stored (``review_entries``), read with the rest when
            ``facts`` was asked for it (``reviews=True``); None when it was not asked.
    """

    spent: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    taint: tuple[Evidence, ...] = field(default=())
    requester: str | None = None
    waiting: tuple[tuple[str, str, str], ...] = ()
    plan_validated: bool | None = None
    requests: tuple[str, ...] = ()
    records: tuple[Any, ...] = ()
    reviews: tuple[str, ...] | None = None


class Guard(ABC):
    """Per thread, the facts a guarantee depends on: append-only, outside the checkpoint.

    Every write is its own committed transaction; writing a fact twice keeps the first.
    """

    # -- receipts -------------------------------------------------------------------------------

    @abstractmethod
    def consume_receipt(
        self, thread_id: str, digest: str, *, attempt: str, approved_by: str
    ) -> bool:
        """Consume the receipt for ``digest`` in ``thread_id``, atomically, just before its call.

        True when this attempt may make the call: the receipt was unused, or ``attempt``
        consumed it itself and its call never answered (the same attempt re-run after a
        crash). False when anything else consumed it: a receipt works once.
        """

    @abstractmethod
    def settle_receipt(self, thread_id: str, digest: str) -> None:
        """The call the receipt was consumed for has answered: no attempt may use it again."""

    @abstractmethod
    def spent(self, thread_id: str, *, attempt: str | None = None) -> frozenset[str]:
        """Digests whose receipts are used, for ``attempt``: all but its own unsettled one."""

    # -- rejections -----------------------------------------------------------------------------

    @abstractmethod
    def record_rejection(self, thread_id: str, digest: str, *, by: str) -> None:
        """A reviewer rejected this exact action; it holds whatever the state says later."""

    @abstractmethod
    def rejected(self, thread_id: str) -> frozenset[str]:
        """Every digest rejected in the thread."""

    # -- taint ----------------------------------------------------------------------------------

    @abstractmethod
    def _record_taint(self, thread_id: str, evidence: Sequence[Evidence]) -> None: ...

    def record_taint(self, thread_id: str, evidence: Sequence[Evidence]) -> list[Evidence]:
        """Record the low-trust pieces of ``evidence`` as having entered the thread; the ones
        recorded (nothing is written when there are none)."""
        low = tainting(list(evidence))
        if low:
            self._record_taint(thread_id, low)
        return low

    @abstractmethod
    def taint(self, thread_id: str) -> list[Evidence]:
        """The low-trust evidence that ever entered the thread, in the order it entered."""

    # -- requester ------------------------------------------------------------------------------

    @abstractmethod
    def record_requester(self, thread_id: str, requester: str) -> str:
        """Name the thread's requester; the first write wins. The requester on record."""

    @abstractmethod
    def requester(self, thread_id: str) -> str | None: ...

    # -- events ---------------------------------------------------------------------------------

    @abstractmethod
    def record_delivery(self, thread_id: str, event: DomainEvent) -> None:
        """The relay is delivering ``event`` (read from the domain's outbox) to the thread."""

    @abstractmethod
    def delivery(self, thread_id: str, seq: int) -> DomainEvent | None:
        """The event with ``seq`` the relay delivered to the thread, or None."""

    @abstractmethod
    def record_wake(self, thread_id: str, seq: int, *, attempt: str) -> bool:
        """The delivered event ``seq`` wakes the thread, once: True for the first attempt (and
        that attempt re-run), False when it woke the thread before (or was never delivered).
        The wait it answers (same event type and key) is closed in the same transaction."""

    @abstractmethod
    def record_wait(self, thread_id: str, wait: EventWait, *, digest: str) -> None:
        """The action ``digest`` answered with an effect in flight: the thread waits for
        ``wait``'s event, and nothing else runs in it before the event wakes it."""

    @abstractmethod
    def waiting(self, thread_id: str) -> tuple[tuple[str, str, str], ...]:
        """The open waits: (event type, key, digest of the action that started it)."""

    # -- validated plans ------------------------------------------------------------------------

    @abstractmethod
    def record_validated_plan(self, thread_id: str, digest: str) -> None:
        """The validator passed the plan whose ``plan_digest`` is ``digest`` in the thread."""

    @abstractmethod
    def validated_plan(self, thread_id: str, digest: str) -> bool:
        """Whether the validator ever passed the plan ``digest`` in the thread."""

    # -- the approval history -------------------------------------------------------------------

    @abstractmethod
    def add_review_entry(self, thread_id: str, kind: str, key: str, entry: str) -> None:
        """Append ``entry`` (its JSON, ``stores.review_log``) to the thread's approval history,
        unless the thread already has an entry of that kind with that key."""

    @abstractmethod
    def review_entries(self, thread_id: str) -> list[str]:
        """The thread's approval history as stored, oldest first."""

    # -- what vouches for an argument -----------------------------------------------------------

    @abstractmethod
    def _record_source(self, thread_id: str, kind: str, body: str) -> None: ...

    @abstractmethod
    def _sources(self, thread_id: str, kind: str) -> list[str]: ...

    def record_request(self, thread_id: str, text: str) -> None:
        """Intake took ``text`` as the thread's request: its values vouch for arguments."""
        self._record_source(thread_id, "request", json.dumps(text))

    def requests(self, thread_id: str) -> list[str]:
        """Every request intake took in the thread, oldest first."""
        return [json.loads(b) for b in self._sources(thread_id, "request")]

    def record_records(self, thread_id: str, records: Any) -> None:
        """The planner read ``records`` through trusted tools: their fields vouch for arguments."""
        self._record_source(thread_id, "records", source_body(records))

    def records(self, thread_id: str) -> list[Any]:
        """Every set of records the planner read in the thread, oldest first."""
        return [json.loads(b) for b in self._sources(thread_id, "records")]

    # -- reading it all -------------------------------------------------------------------------

    def facts(
        self,
        thread_id: str,
        *,
        attempt: str | None = None,
        plan: str | None = None,
        reviews: bool = False,
    ) -> GuardFacts:
        """Everything the gate reads about the thread, at once; with ``plan`` (a plan's
        digest), whether the validator passed that plan too (the executor asks both); with
        ``reviews``, the approval history too (the approval node asks both)."""
        return GuardFacts(
            spent=self.spent(thread_id, attempt=attempt),
            rejected=self.rejected(thread_id),
            taint=tuple(self.taint(thread_id)),
            requester=self.requester(thread_id),
            waiting=self.waiting(thread_id),
            plan_validated=self.validated_plan(thread_id, plan) if plan is not None else None,
            requests=tuple(self.requests(thread_id)),
            records=tuple(self.records(thread_id)),
            reviews=tuple(self.review_entries(thread_id)) if reviews else None,
        )

    def close(self) -> None:  # noqa: B027 (a store without resources needs nothing)
        """Release connections (the SQLite file keeps one per process)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS guard_receipts (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL, attempt TEXT NOT NULL,
    approved_by TEXT NOT NULL, consumed_at TEXT NOT NULL, settled_at TEXT,
    PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS guard_rejections (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL, rejected_by TEXT NOT NULL,
    rejected_at TEXT NOT NULL, PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS guard_taint (
    thread_id TEXT NOT NULL, chunk_id TEXT NOT NULL, source TEXT NOT NULL,
    trust_tier TEXT NOT NULL, evidence TEXT NOT NULL, entered_at TEXT NOT NULL,
    PRIMARY KEY (thread_id, chunk_id)
);
CREATE TABLE IF NOT EXISTS guard_requesters (
    thread_id TEXT PRIMARY KEY, requester TEXT NOT NULL, recorded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_deliveries (
    thread_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
    delivered_at TEXT NOT NULL, woken_by TEXT, woken_at TEXT, PRIMARY KEY (thread_id, seq)
);
CREATE TABLE IF NOT EXISTS guard_waits (
    thread_id TEXT NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL,
    recorded_at TEXT NOT NULL, woken_seq INTEGER, PRIMARY KEY (thread_id, event, key)
);
"""
PLANS_AND_REVIEWS = """
CREATE TABLE IF NOT EXISTS guard_plans (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL, validated_at TEXT NOT NULL,
    PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS guard_reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, thread_id TEXT NOT NULL, kind TEXT NOT NULL,
    key TEXT NOT NULL, entry TEXT NOT NULL, UNIQUE (thread_id, kind, key)
);
"""
SOURCES = """
CREATE TABLE IF NOT EXISTS guard_sources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, thread_id TEXT NOT NULL, kind TEXT NOT NULL,
    digest TEXT NOT NULL, body TEXT NOT NULL, recorded_at TEXT NOT NULL,
    UNIQUE (thread_id, kind, digest)
);
"""


def source_body(value: Any) -> str:
    """A request or records as the guard stores them: canonical JSON (a value JSON has no type
    for, a date, as its text: provenance compares values as text anyway).

    Example:
        >>> source_body({"b": 1, "a": ["x"]})
        '{"a":["x"],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def body_digest(body: str) -> str:
    """What makes a stored request or set of records unique in its thread: the same one read
    again (a replan, a node re-run) is kept once."""
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteGuard(Guard):
    """The thread guard in a SQLite file: the intent ledger's (``settings.intent_db``), synced
    to disk on every write (``synchronous=FULL``), as the intents are.

    Example:
        >>> import tempfile
        >>> guard = SqliteGuard(Path(tempfile.mkdtemp()) / "intents.sqlite")
        >>> guard.consume_receipt("t-1", "sha256:a", attempt="task-1", approved_by="ann")
        True
        >>> guard.consume_receipt("t-1", "sha256:a", attempt="task-2", approved_by="ann")
        False
        >>> sorted(guard.spent("t-1"))
        ['sha256:a']
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, schema=SCHEMA + PLANS_AND_REVIEWS + SOURCES)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._file.connect()

    def consume_receipt(
        self, thread_id: str, digest: str, *, attempt: str, approved_by: str
    ) -> bool:
        # One statement: inserted, or the same attempt's open consumption kept; else no row.
        with self._db() as db:
            row = db.execute(
                "INSERT INTO guard_receipts VALUES (?,?,?,?,?,NULL)"
                " ON CONFLICT (thread_id, digest) DO UPDATE SET attempt = excluded.attempt"
                " WHERE guard_receipts.attempt = excluded.attempt"
                " AND guard_receipts.settled_at IS NULL RETURNING 1",
                (thread_id, digest, attempt, approved_by, _now()),
            ).fetchall()  # read to the end: the statement (and its write) is done
        return bool(row)

    def settle_receipt(self, thread_id: str, digest: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE guard_receipts SET settled_at = ? WHERE thread_id = ? AND digest = ?"
                " AND settled_at IS NULL",
                (_now(), thread_id, digest),
            )

    def spent(self, thread_id: str, *, attempt: str | None = None) -> frozenset[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT digest FROM guard_receipts WHERE thread_id = ?"
                " AND (settled_at IS NOT NULL OR attempt IS NOT ?)",
                (thread_id, attempt),
            ).fetchall()
        return frozenset(r[0] for r in rows)

    def record_rejection(self, thread_id: str, digest: str, *, by: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_rejections VALUES (?,?,?,?)",
                (thread_id, digest, by, _now()),
            )

    def rejected(self, thread_id: str) -> frozenset[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT digest FROM guard_rejections WHERE thread_id = ?", (thread_id,)
            ).fetchall()
        return frozenset(r[0] for r in rows)

    def _record_taint(self, thread_id: str, evidence: Sequence[Evidence]) -> None:
        now = _now()
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO guard_taint VALUES (?,?,?,?,?,?)",
                [
                    (thread_id, e.chunk_id, e.source, e.trust_tier, e.model_dump_json(), now)
                    for e in evidence
                ],
            )

    def taint(self, thread_id: str) -> list[Evidence]:
        with self._db() as db:
            rows = db.execute(
                "SELECT evidence FROM guard_taint WHERE thread_id = ? ORDER BY rowid",
                (thread_id,),
            ).fetchall()
        return [Evidence.model_validate_json(r[0]) for r in rows]

    def record_requester(self, thread_id: str, requester: str) -> str:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_requesters VALUES (?,?,?)",
                (thread_id, requester, _now()),
            )
        found = self.requester(thread_id)
        assert found is not None
        return found

    def requester(self, thread_id: str) -> str | None:
        with self._db() as db:
            row = db.execute(
                "SELECT requester FROM guard_requesters WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        return str(row[0]) if row else None

    def record_delivery(self, thread_id: str, event: DomainEvent) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_deliveries VALUES (?,?,?,?,NULL,NULL)",
                (thread_id, event.seq, event.model_dump_json(), _now()),
            )

    def delivery(self, thread_id: str, seq: int) -> DomainEvent | None:
        with self._db() as db:
            row = db.execute(
                "SELECT event FROM guard_deliveries WHERE thread_id = ? AND seq = ?",
                (thread_id, seq),
            ).fetchone()
        return DomainEvent.model_validate(json.loads(row[0])) if row else None

    def record_wake(self, thread_id: str, seq: int, *, attempt: str) -> bool:
        with self._file.transaction() as db:
            row = db.execute(
                "UPDATE guard_deliveries SET woken_by = ?, woken_at = ?"
                " WHERE thread_id = ? AND seq = ? AND (woken_by IS NULL OR woken_by = ?)"
                " RETURNING event",
                (attempt, _now(), thread_id, seq, attempt),
            ).fetchall()
            if row:
                event = DomainEvent.model_validate_json(row[0][0])
                db.execute(
                    "UPDATE guard_waits SET woken_seq = ? WHERE thread_id = ? AND event = ?"
                    " AND key = ? AND woken_seq IS NULL",
                    (seq, thread_id, event.type, event.key),
                )
        return bool(row)

    def record_wait(self, thread_id: str, wait: EventWait, *, digest: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_waits VALUES (?,?,?,?,?,NULL)",
                (thread_id, wait.event, wait.key, digest, _now()),
            )

    def waiting(self, thread_id: str) -> tuple[tuple[str, str, str], ...]:
        with self._db() as db:
            rows = db.execute(
                "SELECT event, key, digest FROM guard_waits WHERE thread_id = ?"
                " AND woken_seq IS NULL ORDER BY rowid",
                (thread_id,),
            ).fetchall()
        return tuple((str(e), str(k), str(d)) for e, k, d in rows)

    def record_validated_plan(self, thread_id: str, digest: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_plans VALUES (?,?,?)", (thread_id, digest, _now())
            )

    def validated_plan(self, thread_id: str, digest: str) -> bool:
        with self._db() as db:
            row = db.execute(
                "SELECT 1 FROM guard_plans WHERE thread_id = ? AND digest = ?", (thread_id, digest)
            ).fetchone()
        return row is not None

    def add_review_entry(self, thread_id: str, kind: str, key: str, entry: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_reviews (thread_id, kind, key, entry)"
                " VALUES (?,?,?,?)",
                (thread_id, kind, key, entry),
            )

    def review_entries(self, thread_id: str) -> list[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT entry FROM guard_reviews WHERE thread_id = ? ORDER BY seq", (thread_id,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _record_source(self, thread_id: str, kind: str, body: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO guard_sources (thread_id, kind, digest, body, recorded_at)"
                " VALUES (?,?,?,?,?)",
                (thread_id, kind, body_digest(body), body, _now()),
            )

    def _sources(self, thread_id: str, kind: str) -> list[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT body FROM guard_sources WHERE thread_id = ? AND kind = ? ORDER BY seq",
                (thread_id, kind),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        self._file.close()


def plan_digest(plan: Plan) -> str:
    """The identity of a plan as the validator passed it: every field of it and of its steps,
    canonically encoded, so that a step changed, added, removed or moved is another plan.

    Example:
        >>> from graph.state import Step
        >>> step = Step(tool="get_invoice", args={"invoice_id": "I"}, purpose="p", effect="read")
        >>> one = Plan(intent="i", steps=[step])
        >>> plan_digest(one) == plan_digest(Plan.model_validate(one.model_dump(mode="json")))
        True
        >>> plan_digest(one) == plan_digest(Plan(intent="i", steps=[step, step]))
        False
    """
    canonical = json.dumps(
        plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), default=str
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def with_taint(evidence: Sequence[Evidence], taint: Sequence[Evidence]) -> list[Evidence]:
    """The state's evidence and the guard's taint, each chunk once: what a check reads, so that
    evidence erased from the state still taints (and is still shown to the reviewer).

    Example:
        >>> def ev(chunk_id: str, tier: str) -> Evidence:
        ...     return Evidence(chunk_id=chunk_id, source="s", title="t", kind="note",
        ...                     trust_tier=tier, owner="o", effective_date="2026-01-01",
        ...                     score=0.0, text="...")
        >>> wiki = ev("wiki:1", "wiki")
        >>> [e.chunk_id for e in with_taint([ev("policy:1", "official")], [wiki, wiki])]
        ['policy:1', 'wiki:1']
    """
    seen = {e.chunk_id for e in evidence}
    out = list(evidence)
    for e in taint:
        if e.chunk_id not in seen:
            seen.add(e.chunk_id)
            out.append(e)
    return out
