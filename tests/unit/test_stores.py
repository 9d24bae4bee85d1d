"""``open_stores``: the one place that picks SQLite or PostgreSQL for every durable store.

The Postgres stores connect on first use, so they are built here without a server (the port
below is never dialled); tests/integration/test_backends.py runs them against a real one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from keel.settings import Settings
from stores.backends import Stores, open_stores
from stores.breakers import SqliteBreakers
from stores.budgets import SqliteBudgets
from stores.budgets_postgres import PostgresBudgets
from stores.flight_record import SqliteFlightRecord
from stores.flight_record_postgres import PostgresFlightRecord
from stores.guard import SqliteGuard
from stores.guard_postgres import PostgresGuard
from stores.inbox import SqliteInbox
from stores.inbox_postgres import PostgresInbox
from stores.leases import PostgresLeases, SqliteLeases
from stores.ledger import SqliteLedger
from stores.ledger_postgres import PostgresLedger
from stores.review_log import StoredReviewLog

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("keel", "graph", "agents", "retrieval", "tools", "observability", "stores", "domains")
NOWHERE = "postgresql://keel:secret@127.0.0.1:1/keel"
"""A URL nothing listens on: a store that connected while being made would fail."""


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path, _env_file=None, **values)  # type: ignore[call-arg]


def _kinds(stores: Stores) -> list[type]:
    return [
        type(s) for s in (stores.ledger, stores.guard, stores.inbox, stores.budgets,
                          stores.flight_record)
    ]  # fmt: skip


def test_no_postgres_url_picks_the_sqlite_stores_in_the_home(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    stores = open_stores(settings)
    assert stores.backend == "sqlite"
    assert _kinds(stores) == [SqliteLedger, SqliteGuard, SqliteInbox, SqliteBudgets,
                              SqliteFlightRecord]  # fmt: skip
    assert isinstance(stores.ledger, SqliteLedger) and stores.ledger.path == settings.intent_db
    assert isinstance(stores.guard, SqliteGuard) and stores.guard.path == settings.intent_db
    assert isinstance(stores.inbox, SqliteInbox) and stores.inbox.path == settings.events_db
    assert stores.flight_record.where == str(settings.records_db)
    assert (
        isinstance(stores.breakers, SqliteBreakers) and stores.breakers.path == settings.breaker_db
    )
    assert isinstance(stores.reviews, StoredReviewLog) and stores.reviews.store is stores.guard
    leases = stores.open_leases(object())  # SQLite leases live in the checkpoint file
    assert isinstance(leases, SqliteLeases) and leases.path == settings.checkpoint_db
    assert leases.ttl_s == settings.lease_ttl_s


def test_the_stores_make_no_file_until_they_are_used(tmp_path: Path) -> None:
    stores = open_stores(_settings(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not stores.flight_record.exists()
    stores.ledger.begin("k-1", "t-1", 0, "send_email", "sha256:x")
    assert [p.name for p in tmp_path.glob("*.sqlite")] == ["intents.sqlite"]
    stores.close()


def test_a_postgres_url_picks_the_postgres_stores(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, postgres_url=NOWHERE, postgres_behind_pooler=True, postgres_pool_size=7
    )
    stores = open_stores(settings)
    assert stores.backend == "postgres"
    assert _kinds(stores) == [PostgresLedger, PostgresGuard, PostgresInbox, PostgresBudgets,
                              PostgresFlightRecord]  # fmt: skip
    assert isinstance(stores.ledger, PostgresLedger) and stores.ledger.url == NOWHERE
    assert isinstance(stores.budgets, PostgresBudgets)
    assert stores.budgets._tables.pool_size == 7  # the process's shared pool grows to it
    assert stores.budgets._tables._kwargs["prepare_threshold"] is None  # behind a pooler
    assert "secret" not in stores.flight_record.where
    # The breakers stay in the home (each machine's own); nothing else of SQLite's is made.
    assert stores.breakers.path == settings.breaker_db
    assert list(tmp_path.iterdir()) == []

    class Saver:  # what PostgresSaver exposes: its pool, whose connections the leases use
        class conn:
            @staticmethod
            def connection() -> Any:
                raise AssertionError("not called: leases connect on first use")

    leases = stores.open_leases(Saver())  # type: ignore[arg-type]
    assert isinstance(leases, PostgresLeases) and leases.connection is Saver.conn.connection


def test_one_place_asks_whether_the_stores_are_in_postgres() -> None:
    """``Settings.backend`` asks; ``open_stores`` picks on it; nothing else branches on the URL."""
    asks = re.compile(r"postgres_url\s+is\s+(not\s+)?None|postgres_url\s*[!=]=\s*None")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in (*PACKAGES, "evals")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if asks.search(line)
    ]
    assert len(found) == 1 and found[0].startswith("keel/settings.py:"), found
