"""The thread guard in PostgreSQL: with ``KEEL_POSTGRES_URL`` set, the facts Keel's guarantees
depend on (receipts consumed, rejections, taint, the requester, event deliveries) live beside the
checkpoints and the intent ledger, so every worker on every machine reads the same ones.

Same contract as :class:`stores.guard.Guard`. Consuming a receipt and an event's wake-up are
each one statement (an upsert whose condition decides), so two workers racing for one receipt get
one yes. A server that does not answer raises :class:`keel.errors.StoreUnavailable` naming
``KEEL_POSTGRES_URL``: the executor lets it end the run, as it does the ledger's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from graph.state import DomainEvent, EventWait, Evidence
from stores.guard import Guard, GuardFacts, body_digest
from stores.postgres_tables import KeelTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_guard_receipts (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL, attempt TEXT NOT NULL,
    approved_by TEXT NOT NULL, consumed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at TIMESTAMPTZ, PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS keel_guard_rejections (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL, rejected_by TEXT NOT NULL,
    rejected_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS keel_guard_taint (
    thread_id TEXT NOT NULL, chunk_id TEXT NOT NULL, source TEXT NOT NULL,
    trust_tier TEXT NOT NULL, evidence TEXT NOT NULL, entered BIGSERIAL,
    entered_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (thread_id, chunk_id)
);
CREATE TABLE IF NOT EXISTS keel_guard_requesters (
    thread_id TEXT PRIMARY KEY, requester TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS keel_guard_deliveries (
    thread_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL DEFAULT now(), woken_by TEXT, woken_at TIMESTAMPTZ,
    PRIMARY KEY (thread_id, seq)
);
CREATE TABLE IF NOT EXISTS keel_guard_waits (
    thread_id TEXT NOT NULL, event TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL,
    recorded BIGSERIAL, recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(), woken_seq BIGINT,
    PRIMARY KEY (thread_id, event, key)
);
"""
PLANS_AND_REVIEWS = """
CREATE TABLE IF NOT EXISTS keel_guard_plans (
    thread_id TEXT NOT NULL, digest TEXT NOT NULL,
    validated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (thread_id, digest)
);
CREATE TABLE IF NOT EXISTS keel_guard_reviews (
    seq BIGSERIAL PRIMARY KEY, thread_id TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    entry TEXT NOT NULL, UNIQUE (thread_id, kind, key)
);
"""
SOURCES = """
CREATE TABLE IF NOT EXISTS keel_guard_sources (
    seq BIGSERIAL PRIMARY KEY, thread_id TEXT NOT NULL, kind TEXT NOT NULL, digest TEXT NOT NULL,
    body TEXT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (thread_id, kind, digest)
);
"""
_SCHEMA_LOCK = 0x6B656567  # any constant shared by Keel's processes; one per store
_PLANS_LOCK = 0x6B656568
_SOURCES_LOCK = 0x6B656569
_SPENT = (
    "SELECT digest FROM keel_guard_receipts WHERE thread_id = %s"
    " AND (settled_at IS NOT NULL OR attempt IS DISTINCT FROM %s)"
)
_REJECTED = "SELECT digest FROM keel_guard_rejections WHERE thread_id = %s"
_TAINT = "SELECT evidence FROM keel_guard_taint WHERE thread_id = %s ORDER BY entered"
_REQUESTER = "SELECT requester FROM keel_guard_requesters WHERE thread_id = %s"
_WAITING = (
    "SELECT event, key, digest FROM keel_guard_waits WHERE thread_id = %s"
    " AND woken_seq IS NULL ORDER BY recorded"
)
_SOURCES = "SELECT body FROM keel_guard_sources WHERE thread_id = %s AND kind = %s ORDER BY seq"
_FACTS = (
    f"SELECT ARRAY({_SPENT}), ARRAY({_REJECTED}), ARRAY({_TAINT}), ({_REQUESTER}),"
    " ARRAY(SELECT ARRAY[event, key, digest] FROM keel_guard_waits WHERE thread_id = %s"
    f" AND woken_seq IS NULL ORDER BY recorded), ARRAY({_SOURCES}), ARRAY({_SOURCES})"
)

_VALIDATED = ", EXISTS(SELECT 1 FROM keel_guard_plans WHERE thread_id = %s AND digest = %s)"
_REVIEWS = ", ARRAY(SELECT entry FROM keel_guard_reviews WHERE thread_id = %s ORDER BY seq)"


class PostgresGuard(Guard):
    """The thread guard in the ``keel_guard_*`` tables of the checkpoint database.

    Example:
        >>> guard = PostgresGuard("postgresql://keel@127.0.0.1:5432/keel")
        >>> guard.rejected("t-1")  # doctest: +SKIP
        frozenset()
    """

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10.0, behind_pooler: bool = False
    ) -> None:
        self.url = url
        # The last table of the schema: when it exists, every one before it does.
        self._tables = KeelTables(
            url, schema=SCHEMA, table="keel_guard_waits", lock_key=_SCHEMA_LOCK,
            what="thread guard", connect_timeout_s=connect_timeout_s, behind_pooler=behind_pooler,
        )  # fmt: skip
        # Tables added later, made on their own (a database made before them has the first).
        self._plans = KeelTables(
            url, schema=PLANS_AND_REVIEWS, table="keel_guard_reviews", lock_key=_PLANS_LOCK,
            what="thread guard", connect_timeout_s=connect_timeout_s, behind_pooler=behind_pooler,
        )  # fmt: skip
        self._sources_tables = KeelTables(
            url, schema=SOURCES, table="keel_guard_sources", lock_key=_SOURCES_LOCK,
            what="thread guard", connect_timeout_s=connect_timeout_s, behind_pooler=behind_pooler,
        )  # fmt: skip

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._tables.execute(sql, params)

    def consume_receipt(
        self, thread_id: str, digest: str, *, attempt: str, approved_by: str
    ) -> bool:
        rows = self._execute(
            "INSERT INTO keel_guard_receipts (thread_id, digest, attempt, approved_by)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (thread_id, digest) DO UPDATE"
            " SET attempt = EXCLUDED.attempt WHERE keel_guard_receipts.attempt = EXCLUDED.attempt"
            " AND keel_guard_receipts.settled_at IS NULL RETURNING 1",
            (thread_id, digest, attempt, approved_by),
        )
        return bool(rows)

    def settle_receipt(self, thread_id: str, digest: str) -> None:
        self._tables.write(
            "UPDATE keel_guard_receipts SET settled_at = now()"
            " WHERE thread_id = %s AND digest = %s AND settled_at IS NULL",
            (thread_id, digest),
        )

    def spent(self, thread_id: str, *, attempt: str | None = None) -> frozenset[str]:
        return frozenset(str(r[0]) for r in self._execute(_SPENT, (thread_id, attempt)))

    def record_rejection(self, thread_id: str, digest: str, *, by: str) -> None:
        self._execute(
            "INSERT INTO keel_guard_rejections (thread_id, digest, rejected_by)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (thread_id, digest, by),
        )

    def rejected(self, thread_id: str) -> frozenset[str]:
        return frozenset(str(r[0]) for r in self._execute(_REJECTED, (thread_id,)))

    def _record_taint(self, thread_id: str, evidence: Sequence[Evidence]) -> None:
        with self._tables.connection() as conn, conn.transaction():
            for e in evidence:
                conn.execute(
                    "INSERT INTO keel_guard_taint (thread_id, chunk_id, source, trust_tier,"
                    " evidence) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (thread_id, e.chunk_id, e.source, e.trust_tier, e.model_dump_json()),
                )

    def taint(self, thread_id: str) -> list[Evidence]:
        return [Evidence.model_validate_json(r[0]) for r in self._execute(_TAINT, (thread_id,))]

    def record_requester(self, thread_id: str, requester: str) -> str:
        rows = self._execute(
            "INSERT INTO keel_guard_requesters (thread_id, requester) VALUES (%s, %s)"
            " ON CONFLICT (thread_id) DO UPDATE SET requester = keel_guard_requesters.requester"
            " RETURNING requester",
            (thread_id, requester),
        )
        return str(rows[0][0])

    def requester(self, thread_id: str) -> str | None:
        rows = self._execute(_REQUESTER, (thread_id,))
        return str(rows[0][0]) if rows else None

    def record_delivery(self, thread_id: str, event: DomainEvent) -> None:
        self._execute(
            "INSERT INTO keel_guard_deliveries (thread_id, seq, event) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (thread_id, event.seq, event.model_dump_json()),
        )

    def delivery(self, thread_id: str, seq: int) -> DomainEvent | None:
        rows = self._execute(
            "SELECT event FROM keel_guard_deliveries WHERE thread_id = %s AND seq = %s",
            (thread_id, seq),
        )
        return DomainEvent.model_validate(json.loads(rows[0][0])) if rows else None

    def record_wake(self, thread_id: str, seq: int, *, attempt: str) -> bool:
        with self._tables.connection() as conn, conn.transaction():
            rows = conn.execute(
                "UPDATE keel_guard_deliveries SET woken_by = %s, woken_at = now()"
                " WHERE thread_id = %s AND seq = %s AND (woken_by IS NULL OR woken_by = %s)"
                " RETURNING event",
                (attempt, thread_id, seq, attempt),
            ).fetchall()
            if rows:
                event = DomainEvent.model_validate_json(rows[0][0])
                conn.execute(
                    "UPDATE keel_guard_waits SET woken_seq = %s WHERE thread_id = %s"
                    " AND event = %s AND key = %s AND woken_seq IS NULL",
                    (seq, thread_id, event.type, event.key),
                )
        return bool(rows)

    def record_wait(self, thread_id: str, wait: EventWait, *, digest: str) -> None:
        self._execute(
            "INSERT INTO keel_guard_waits (thread_id, event, key, digest)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (thread_id, wait.event, wait.key, digest),
        )

    def waiting(self, thread_id: str) -> tuple[tuple[str, str, str], ...]:
        rows = self._execute(_WAITING, (thread_id,))
        return tuple((str(e), str(k), str(d)) for e, k, d in rows)

    def record_validated_plan(self, thread_id: str, digest: str) -> None:
        self._plans.execute(
            "INSERT INTO keel_guard_plans (thread_id, digest) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (thread_id, digest),
        )

    def validated_plan(self, thread_id: str, digest: str) -> bool:
        rows = self._plans.execute(
            "SELECT 1 FROM keel_guard_plans WHERE thread_id = %s AND digest = %s",
            (thread_id, digest),
        )
        return bool(rows)

    def add_review_entry(self, thread_id: str, kind: str, key: str, entry: str) -> None:
        self._plans.execute(
            "INSERT INTO keel_guard_reviews (thread_id, kind, key, entry)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (thread_id, kind, key, entry),
        )

    def review_entries(self, thread_id: str) -> list[str]:
        rows = self._plans.execute(
            "SELECT entry FROM keel_guard_reviews WHERE thread_id = %s ORDER BY seq",
            (thread_id,),
        )
        return [str(r[0]) for r in rows]

    def _record_source(self, thread_id: str, kind: str, body: str) -> None:
        self._sources_tables.execute(
            "INSERT INTO keel_guard_sources (thread_id, kind, digest, body)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (thread_id, kind, body_digest(body), body),
        )

    def _sources(self, thread_id: str, kind: str) -> list[str]:
        return [str(r[0]) for r in self._sources_tables.execute(_SOURCES, (thread_id, kind))]

    def facts(
        self,
        thread_id: str,
        *,
        attempt: str | None = None,
        plan: str | None = None,
        reviews: bool = False,
    ) -> GuardFacts:
        """The seven reads in one statement (one round trip and one snapshot: each node that
        checks reads them once, and they agree with each other); with ``plan``, the validated
        plan's in the same statement (the executor's checks: one round trip less per step); with
        ``reviews``, the approval history's (the approval node's: one round trip less per run)."""
        sql = _FACTS
        params: tuple[Any, ...] = (
            thread_id, attempt, *(thread_id,) * 4, thread_id, "request", thread_id, "records",
        )  # fmt: skip
        if plan is not None:
            sql, params = sql + _VALIDATED, (*params, thread_id, plan)
        if reviews:
            sql, params = sql + _REVIEWS, (*params, thread_id)
        with self._tables.connection() as conn:
            self._sources_tables.ensure(conn)
            if plan is not None or reviews:
                self._plans.ensure(conn)
            row = conn.execute(sql, params).fetchall()[0]  # type: ignore[arg-type]
        spent, rejected, taint, requester, waiting, requests, records, *asked = row
        validated = asked.pop(0) if plan is not None else None
        entries = asked.pop(0) if reviews else None
        return GuardFacts(
            spent=frozenset(str(d) for d in spent),
            rejected=frozenset(str(d) for d in rejected),
            taint=tuple(Evidence.model_validate_json(e) for e in taint),
            requester=str(requester) if requester is not None else None,
            waiting=tuple((str(e), str(k), str(d)) for e, k, d in waiting),
            plan_validated=bool(validated) if plan is not None else None,
            requests=tuple(json.loads(b) for b in requests),
            records=tuple(json.loads(b) for b in records),
            reviews=tuple(str(e) for e in entries) if entries is not None else None,
        )

    def close(self) -> None:
        self._tables.close()
        self._plans.close()
        self._sources_tables.close()
