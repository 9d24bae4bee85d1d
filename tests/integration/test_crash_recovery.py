"""Exactly once across a killed worker: SIGKILL after a side effect, before its checkpoint.

A real worker process answers the approval and is killed by the fault layer at a chosen point;
a new process recovers the thread from the SQLite checkpointer. The backend must hold exactly one
refund and one e-mail whatever the kill point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from stores.ledger import SqliteLedger
from tests.conftest import REFUND_REQUEST

KEEL = str(Path(sys.executable).parent / "keel")


def _keel(home: Path, *argv: str, faults: str = "none") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), KEEL_FAULTS=faults, LANGSMITH_TRACING="false")
    return subprocess.run(
        [KEEL, *argv, "--json"], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.integration
@pytest.mark.parametrize(
    "kill",
    [
        {"crash_after": ["refund_charge"]},
        {"crash_before": ["send_email"]},
        {"crash_after": ["send_email"]},
    ],
    ids=["after-refund", "before-email", "after-email"],
)
def test_a_killed_worker_never_repeats_an_irreversible_action(
    home: Path, kill: dict[str, list[str]]
) -> None:
    thread = _json(_keel(home, "run", REFUND_REQUEST))["thread_id"]

    killed = _keel(home, "resume", thread, "--approve", faults=json.dumps(kill))
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    shown = _json(_keel(home, "show", thread))
    # Mid-run, its worker dead (the lease names a pid that is gone): stalled, not "running".
    assert shown["status"] == "stalled" and shown["stalled_at"] == "execute"

    recovered = _json(_keel(home, "recover", thread))
    assert recovered["status"] == "done"
    backend = DemoBackend(home / "support_desk.sqlite")
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]
    found = [r for r in recovered["results"] if r["via"] == "intent ledger (found at the backend)"]
    if "crash_after" in kill:
        # The intent was pending; the backend said it had happened; nothing was issued again.
        assert len(found) == 1
    else:
        assert found == []
    ledger = SqliteLedger(home / "intents.sqlite").for_thread(thread)
    assert [(i["tool"], i["status"]) for i in ledger] == [
        ("refund_charge", "done"),
        ("send_email", "done"),
    ]
