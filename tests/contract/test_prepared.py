"""Contract: a domain's "prepared" check looks at what a run needs, not at a file's existence.

A failed first run (or a killed seed) can leave the backend's file empty or half-written. Such a
backend is not prepared: the check says so, ``prepare`` repairs it, and a run on it plans
instead of failing with "no such table". A file that is not the domain's database at all is
refused in one line that names the command to run, never used.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from graph.context import KeelContext
from graph.domain import Showcase
from keel.app import KeelApp
from keel.errors import ConfigError
from keel.settings import Settings
from tests.contract.conftest import settings_for
from tests.contract.spec import Contract


@pytest.fixture
def unprepared(domain_spec: str, indexed: Path, tmp_path: Path) -> Settings:
    """A home with the corpus indexed and no backend at all, as a fresh clone has after
    ``keel ingest``."""
    home = tmp_path / "home"
    shutil.copytree(indexed, home)
    fresh = settings_for(domain_spec, home)
    fresh.domain_db.unlink(missing_ok=True)
    return fresh


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return sorted(name for (name,) in rows)


def test_a_missing_backend_is_not_prepared_and_prepare_makes_it_so(
    domain: Showcase, unprepared: Settings
) -> None:
    assert not domain.is_prepared(unprepared)
    assert not unprepared.domain_db.exists(), "the check must not create the file"
    domain.prepare(unprepared)
    assert domain.is_prepared(unprepared)


def test_an_empty_backend_file_is_not_prepared_and_a_run_repairs_it(
    domain: Showcase, unprepared: Settings, contract: Contract
) -> None:
    """The file a failed first run leaves behind: zero bytes, no tables."""
    unprepared.domain_db.write_bytes(b"")
    assert not domain.is_prepared(unprepared)
    context = KeelContext.from_settings(unprepared, domain=domain)
    with KeelApp.open(unprepared, context) as app:
        outcome = app.run(contract.acting.request)
    assert outcome.status == "awaiting_approval", outcome.answer or outcome.escalation
    assert domain.is_prepared(unprepared)


def test_a_half_written_backend_is_not_prepared_and_prepare_repairs_it(
    domain: Showcase, unprepared: Settings
) -> None:
    domain.prepare(unprepared)
    tables = _tables(unprepared.domain_db)
    with sqlite3.connect(unprepared.domain_db) as conn:
        conn.execute(f'DROP TABLE "{tables[-1]}"')
    assert not domain.is_prepared(unprepared)
    domain.prepare(unprepared)
    assert domain.is_prepared(unprepared)
    assert _tables(unprepared.domain_db) == tables


def test_a_file_that_is_not_a_database_is_refused_in_one_line(
    domain: Showcase, unprepared: Settings
) -> None:
    unprepared.domain_db.write_bytes(b"these are not the tables you are looking for\n" * 200)
    with pytest.raises(ConfigError) as refused:
        domain.is_prepared(unprepared)
    message = str(refused.value)
    assert "\n" not in message
    assert str(unprepared.domain_db) in message
    assert "keel seed" in message
