"""Real servers for the integration tier: a PostgreSQL cluster and a Chroma server per session.

Both run on free loopback ports with their data in temporary directories and are stopped at the
end of the session. Without PostgreSQL's server programs the Postgres tests skip on a developer's
machine, saying how to get them (`make postgres`); under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from keel.servers import (
    POSTGRES_HINT,
    ChromaServer,
    PostgresServer,
    chroma_server,
    postgres_bin,
    postgres_server,
)
from tests.conftest import APPROVAL_KEY


def _unavailable(what: str, why: str) -> None:
    """Skip, saying ``why`` and how to get what is missing; under ``CI=true`` fail instead: CI
    runs every test."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run {what}: {why}")
    pytest.skip(f"{why}; then run the integration tests again")


def _require_postgres() -> None:
    if postgres_bin() is None:
        _unavailable("the Postgres tests", POSTGRES_HINT)


def require_engine() -> None:
    """PostgreSQL's server programs, redis-server and Aegra (Python >= 3.12), or a skip saying
    how to get them; under ``CI=true`` a failure instead."""
    missing = []
    if postgres_bin() is None:
        missing.append(POSTGRES_HINT)
    if shutil.which("redis-server") is None:
        missing.append("redis-server is missing: run `make redis`")
    if importlib.util.find_spec("aegra_api") is None:
        missing.append("Aegra is not installed: `make install` (Python >= 3.12)")
    if missing:
        _unavailable("the engine's tests", "; ".join(missing))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster (fsync off: test data only)."""
    _require_postgres()
    with postgres_server(durable=False) as server:
        yield server


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresServer]:
    """A cluster of the test's own, which it may stop and start again (the session's stays up)."""
    _require_postgres()
    monkeypatch.setenv("KEEL_APPROVAL_KEY", APPROVAL_KEY["KEEL_APPROVAL_KEY"])
    with postgres_server(durable=False) as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty database on the session's cluster, so tests share no thread.

    Settings built in the test's process get the shared approval key from the environment
    (Postgres refuses to run without one); a worker process is given ``APPROVAL_KEY`` with it.
    """
    monkeypatch.setenv("KEEL_APPROVAL_KEY", APPROVAL_KEY["KEEL_APPROVAL_KEY"])
    return postgres.create_database(f"keel_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def chroma() -> Iterator[ChromaServer]:
    """``chroma run`` from the installed chromadb, on loopback."""
    with chroma_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def checkpointer(request: pytest.FixtureRequest) -> dict[str, str]:
    """The KEEL_* settings that select each checkpointer (Postgres: a fresh database)."""
    if request.param == "sqlite":
        return {}
    return {"KEEL_POSTGRES_URL": request.getfixturevalue("postgres_url"), **APPROVAL_KEY}
