"""The shared pool's check before it hands out a connection: a round trip only for one that sat
idle (``graph.postgres_tables``), so a serving worker's statements do not each pay two."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from graph import postgres_tables
from graph.postgres_tables import _RecentCheck


class _Conn:
    closed = False
    broken = False


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(seen.append))
    return seen


def test_a_connection_returned_a_moment_ago_is_not_checked_again(checked: list[Any]) -> None:
    recent, conn = _RecentCheck(fresh_s=5.0), _Conn()
    recent.check(conn)  # never returned yet: checked
    recent.returned(conn)
    recent.check(conn)
    assert checked == [conn]


def test_an_idle_or_broken_connection_is_checked(
    checked: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    recent, idle, broken = _RecentCheck(fresh_s=5.0), _Conn(), _Conn()
    broken.broken = True
    recent.returned(idle)
    recent.returned(broken)
    recent.check(broken)
    now = postgres_tables.time.monotonic()
    monkeypatch.setattr(postgres_tables.time, "monotonic", lambda: now + 6.0)
    recent.check(idle)
    assert checked == [broken, idle]
