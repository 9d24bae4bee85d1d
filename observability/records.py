"""The flight record the settings select, for reading (``keel runs``, ``trace``, ``explain``):
PostgreSQL beside the checkpoints with ``KEEL_POSTGRES_URL``, else ``records.sqlite`` in
``KEEL_HOME`` (``stores.backends.open_stores`` picks)."""

from __future__ import annotations

from keel.settings import Settings
from stores.backends import open_stores
from stores.flight_record import FlightRecord, RunNotFound


def open_record(settings: Settings) -> FlightRecord:
    """The flight record of these settings, for reading.

    Raises:
        RunNotFound: there is no record yet (no SQLite file; in Postgres an empty table is
            one with no runs, which each read says).
    """
    record = open_stores(settings).flight_record
    if not record.exists():
        raise RunNotFound(
            f"no flight record at {record.where}: nothing was recorded yet (or KEEL_RECORD is off)"
        )
    return record
