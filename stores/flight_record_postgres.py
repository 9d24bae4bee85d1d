"""The flight record in PostgreSQL: with ``KEEL_POSTGRES_URL`` set, every worker records into the
same table, so ``keel runs``, ``trace``, ``explain`` and ``replay`` see the runs of all of them.

Same guarantees as the SQLite record (``stores.flight_record``): one committed insert per event
or per batch (autocommit; the server's own ``synchronous_commit`` decides the fsync; a batch is one
statement, all of it or none), append-only enforced by the database (a trigger refuses every
UPDATE, DELETE and TRUNCATE, whoever connects), and the schema version of each event checked on
read, by the same code (:class:`FlightRecord`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from keel.errors import StoreUnavailable
from observability.record_events import RecordEvent
from stores.flight_record import INSERT_COLUMNS, FlightRecord, event_row
from stores.postgres_tables import KeelTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS keel_events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
CREATE INDEX IF NOT EXISTS keel_events_run ON keel_events (run_id, seq);
CREATE INDEX IF NOT EXISTS keel_events_thread ON keel_events (thread_id, seq);
CREATE OR REPLACE FUNCTION keel_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the flight record is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER keel_events_no_change BEFORE UPDATE OR DELETE ON keel_events
    FOR EACH ROW EXECUTE FUNCTION keel_events_append_only();
CREATE OR REPLACE TRIGGER keel_events_no_truncate BEFORE TRUNCATE ON keel_events
    FOR EACH STATEMENT EXECUTE FUNCTION keel_events_append_only();
"""
_SCHEMA_LOCK = 0x6B656563  # any constant shared by Keel's processes; one per store
_INSERT_MANY = (
    f"INSERT INTO keel_events {INSERT_COLUMNS}"
    " SELECT version, run, thread, segment, checkpoint, node, step, kind, at, payload"
    " FROM unnest(%s::int[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[],"
    " %s::int[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS batch(version, run,"
    " thread, segment, checkpoint, node, step, kind, at, payload, n) ORDER BY n"
)
"""A batch in one statement: one array per column of ``INSERT_COLUMNS``, rows in its order."""


class PostgresFlightRecord(FlightRecord):
    """Events of every run in the ``keel_events`` table of the checkpoint database.

    Args:
        url: the database (``KEEL_POSTGRES_URL``).
        connect_timeout_s: bounds a connection attempt and a wait for the pool.
        pool_size: connections kept open (events come from the graph's thread and the tools').

    Example:
        >>> store = PostgresFlightRecord("postgresql://keel@127.0.0.1:5432/keel")
        >>> store.count()  # doctest: +SKIP
        0
    """

    table = "keel_events"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 10.0,
        pool_size: int = 2,
        behind_pooler: bool = False,
    ) -> None:
        self._tables = KeelTables(
            url, schema=SCHEMA, table=self.table, lock_key=_SCHEMA_LOCK,
            what="flight recorder", connect_timeout_s=connect_timeout_s, pool_size=pool_size,
            behind_pooler=behind_pooler,
        )  # fmt: skip
        self.where = self._tables.setting

    def append(self, event: RecordEvent) -> int:
        try:
            rows = self._tables.execute(
                f"INSERT INTO {self.table} {INSERT_COLUMNS}"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                event_row(event),
            )
        except psycopg.Error as err:  # refused, not unreachable: a read-only server, a privilege
            raise StoreUnavailable(self.where, f"flight recorder: {err}") from err
        return int(rows[0][0])

    def append_many(self, events: list[RecordEvent]) -> None:
        """Store the events with one statement (one round trip, one commit, all or none): one
        array per column, unnested in the batch's order, so ``seq`` follows it."""
        if not events:
            return
        columns = list(zip(*(event_row(event) for event in events), strict=True))
        try:
            self._tables.execute(_INSERT_MANY, tuple(list(column) for column in columns))
        except psycopg.Error as err:
            raise StoreUnavailable(self.where, f"flight recorder: {err}") from err

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # The shared reads are written with ``?``; none holds a literal question mark.
        return self._tables.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self._tables.close()
