"""The flight record the settings select: PostgreSQL beside the checkpoints with
``KEEL_POSTGRES_URL``, else ``records.sqlite`` in ``KEEL_HOME``."""

from __future__ import annotations

from keel.settings import Settings
from stores.flight_record import FlightRecord, RecordStore, RunNotFound


def record_store_for(settings: Settings) -> FlightRecord:
    """The store a run records into (made on first use)."""
    if settings.postgres_url is None:
        return RecordStore(settings.records_db, synchronous=settings.record_sync)
    from stores.flight_record_postgres import PostgresRecordStore  # psycopg only when configured

    return PostgresRecordStore(
        settings.postgres_url.get_secret_value(),
        connect_timeout_s=settings.postgres_connect_timeout_s,
        behind_pooler=settings.postgres_behind_pooler,
    )


def open_record(settings: Settings) -> FlightRecord:
    """The flight record of these settings, for reading.

    Raises:
        RunNotFound: there is no record yet (no SQLite file; in Postgres an empty table is
            one with no runs, which each read says).
    """
    if settings.postgres_url is None and not settings.records_db.exists():
        raise RunNotFound(
            f"no flight record at {settings.records_db}: nothing was recorded yet "
            "(or KEEL_RECORD is off)"
        )
    return record_store_for(settings)
