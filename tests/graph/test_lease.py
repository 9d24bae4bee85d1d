"""Run leases on the SQLite checkpoint file: one live owner per thread; a dead one is taken over,
at once when it died on this machine, after the TTL when only its heartbeat can tell.
(The same contract on Postgres: tests/integration/test_leases.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keel.errors import LeaseHeld
from stores.leases import LeaseOwner, SqliteLeases


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leases(tmp_path: Path, clock: Clock) -> SqliteLeases:
    return SqliteLeases(tmp_path / "checkpoints.sqlite", ttl_s=30, clock=clock)


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_a_live_owner_keeps_its_thread(leases: SqliteLeases) -> None:
    first = LeaseOwner.this_process()
    leases.acquire("t-1", first)
    with pytest.raises(LeaseHeld, match=rf"thread t-1 is being run by .* pid {os.getpid()}"):
        leases.acquire("t-1", LeaseOwner.this_process())
    assert leases.live("t-1") is not None
    leases.release("t-1", first)
    assert leases.get("t-1") is None
    leases.acquire("t-1", LeaseOwner.this_process())  # free again


def test_an_owner_that_died_on_this_machine_is_taken_over_at_once(
    leases: SqliteLeases,
) -> None:
    here = LeaseOwner.this_process()
    dead = here.model_copy(update={"pid": _dead_pid(), "token": "dead"})
    leases.acquire("t-1", dead)  # its heartbeat is fresh: only the pid says it is gone
    assert leases.get("t-1") is not None and leases.live("t-1") is None
    leases.acquire("t-1", here)
    lease = leases.get("t-1")
    assert lease is not None and lease.owner.token == here.token


def test_a_reused_pid_is_not_the_owner(leases: SqliteLeases) -> None:
    here = LeaseOwner.this_process()
    assert here.started, "Linux: /proc tells a process's start time"
    machine = here.started.rpartition(":")[0]
    impostor = here.model_copy(update={"started": f"{machine}:1", "token": "old"})
    leases.acquire("t-1", impostor)
    leases.acquire("t-1", here)  # same pid, another start time: that process is gone


def test_an_owner_in_another_pid_namespace_is_judged_by_its_heartbeat(
    leases: SqliteLeases, clock: Clock
) -> None:
    """A container sharing the hostname (``--network host``): its pid means nothing here."""
    here = LeaseOwner.this_process()
    boot = here.started.partition("/")[0]
    container = here.model_copy(
        update={"pid": _dead_pid(), "started": f"{boot}/4026531999:12345", "token": "ns"}
    )
    leases.acquire("t-1", container)
    with pytest.raises(LeaseHeld):
        leases.acquire("t-1", LeaseOwner.this_process())
    clock.now += 31
    leases.acquire("t-1", here)


def test_an_owner_on_another_machine_is_dead_only_after_the_ttl(
    leases: SqliteLeases, clock: Clock
) -> None:
    elsewhere = LeaseOwner(host=f"not-{socket.gethostname()}", pid=1, started="", token="far")
    leases.acquire("t-1", elsewhere)
    clock.now += 29
    with pytest.raises(LeaseHeld, match=r"heartbeat 29\.0 s ago"):
        leases.acquire("t-1", LeaseOwner.this_process())
    assert leases.renew("t-1", elsewhere)  # it beats: another 30 s
    clock.now += 29
    with pytest.raises(LeaseHeld):
        leases.acquire("t-1", LeaseOwner.this_process())
    clock.now += 2
    taker = LeaseOwner.this_process()
    leases.acquire("t-1", taker)
    # The old owner finds out at its next beat, and its release leaves the new lease alone.
    assert not leases.renew("t-1", elsewhere)
    leases.release("t-1", elsewhere)
    lease = leases.get("t-1")
    assert lease is not None and lease.owner.token == taker.token


def test_hold_beats_and_releases(tmp_path: Path) -> None:
    leases = SqliteLeases(tmp_path / "checkpoints.sqlite", ttl_s=0.3, heartbeat_s=0.05)
    with leases.hold("t-1") as owner:
        time.sleep(0.6)  # twice the TTL: only the heartbeat keeps it live
        lease = leases.live("t-1")
        assert lease is not None and lease.owner == owner
        with pytest.raises(LeaseHeld):
            leases.acquire("t-1", LeaseOwner.this_process())
    assert leases.get("t-1") is None
