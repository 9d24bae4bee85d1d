"""Two live workers never run one thread at once: the run's lease, on SQLite and PostgreSQL.

One worker (Keel's CLI in its own process) answers an approval and is held mid-run by the fault
layer (minutes of latency before the refund call; it is killed long before they pass). Meanwhile
a second process's `keel recover THREAD` and `keel recover --all` are refused, naming the live
worker, and `keel show` says `running`.
After SIGKILL of the first worker its lease names a pid that is gone: `keel recover` works at
once (no TTL wait), and the backend holds one refund and one e-mail.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from keel.errors import LeaseHeld
from keel.settings import Settings
from stores.backends import open_stores
from stores.leases import LeaseOwner, Leases, PostgresLeases, SqliteLeases
from tests.conftest import REFUND_REQUEST
from tests.integration.cli import KEEL
from tests.integration.cli import json_of as _json
from tests.integration.cli import keel as _keel
from tests.integration.cli import keel_env as _env
from tests.integration.cli import side_effects as _side_effects


def _store(home: Path, checkpointer: dict[str, str], ttl_s: float = 30) -> Leases:
    url = checkpointer.get("KEEL_POSTGRES_URL")
    if url is None:
        return SqliteLeases(home / "checkpoints.sqlite", ttl_s)
    import psycopg

    def connection() -> Any:
        return psycopg.connect(url, autocommit=True)

    return PostgresLeases(connection, ttl_s)


@pytest.mark.integration
def test_the_lease_contract(tmp_path: Path, checkpointer: dict[str, str]) -> None:
    leases = _store(tmp_path, checkpointer, ttl_s=1.0)
    here = LeaseOwner.this_process()
    leases.acquire("t-1", here)
    with pytest.raises(LeaseHeld, match="thread t-1 is being run by"):
        leases.acquire("t-1", LeaseOwner.this_process())
    leases.release("t-1", here)
    assert leases.get("t-1") is None

    # Died on this machine: taken over at once, its heartbeat still fresh.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = here.model_copy(update={"pid": int(child.stdout), "token": uuid.uuid4().hex})
    leases.acquire("t-2", dead)
    leases.acquire("t-2", here)

    # On another machine: live until its heartbeat is older than the TTL.
    far = LeaseOwner(host=f"not-{socket.gethostname()}", pid=1, started="", token="far")
    leases.acquire("t-3", far)
    with pytest.raises(LeaseHeld):
        leases.acquire("t-3", LeaseOwner.this_process())
    time.sleep(1.3)
    assert leases.live("t-3") is None
    taker = LeaseOwner.this_process()
    leases.acquire("t-3", taker)
    assert not leases.renew("t-3", far)
    assert leases.renew("t-3", taker)
    assert {lease.thread_id for lease in leases.leases()} == {"t-2", "t-3"}


@pytest.mark.integration
def test_two_live_processes_never_run_one_thread(home: Path, checkpointer: dict[str, str]) -> None:
    thread = _json(_keel(home, checkpointer, "run", REFUND_REQUEST))["thread_id"]
    slow = json.dumps({"latency_s": 600, "integrations": ["billing"]})
    env = _env(home, checkpointer, KEEL_FAULTS=slow, KEEL_TOOL_TIMEOUT_S="900")
    worker = subprocess.Popen(
        [KEEL, "resume", thread, "--approve", "--json"], env=env, cwd=home,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        leases = _store(home, checkpointer)
        deadline = time.monotonic() + 60
        while (lease := leases.live(thread)) is None:
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never ran"
            time.sleep(0.2)
        assert lease.owner.pid == worker.pid

        refused = _keel(home, checkpointer, "recover", thread)
        assert refused.returncode == 2
        assert f"thread {thread} is being run by" in refused.stderr
        assert f"pid {worker.pid}" in refused.stderr
        everything = _keel(home, checkpointer, "recover", "--all")
        assert everything.returncode == 2, everything.stderr
        summary = json.loads(everything.stdout)
        assert (summary["refused"], summary["recovered"]) == (1, 0)
        assert f"pid {worker.pid}" in summary["results"][0]["refused"]
        shown = _json(_keel(home, checkpointer, "show", thread))
        assert (shown["status"], shown["stalled_at"]) == ("running", "execute")
        assert worker.poll() is None, "the worker must still be mid-run for this test to mean it"
        assert _side_effects(home) == ([], [])
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    # Neither refused attempt started a segment: the record has no recover of this thread.
    record = open_stores(  # the record follows the checkpoints (Postgres or SQLite)
        Settings(home=home, postgres_url=checkpointer.get("KEEL_POSTGRES_URL"), _env_file=None)  # type: ignore[call-arg, arg-type]
    ).flight_record
    try:
        events = record.events(record.resolve(thread))
    finally:
        record.close()
    modes = [e.payload.mode for e in events if e.payload.kind == "run_started"]
    assert modes == ["run", "resume"]

    # Its worker is dead: a pid that is gone frees the lease at once, without the 30 s TTL.
    started = time.monotonic()
    recovered = _json(_keel(home, checkpointer, "recover", thread))
    assert recovered["status"] == "done"
    assert time.monotonic() - started < 30
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert _store(home, checkpointer).get(thread) is None
