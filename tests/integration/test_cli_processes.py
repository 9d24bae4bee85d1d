"""The issue's acceptance path with real processes: run in one, resume in another, show in a third.

State lives only in the SQLite checkpointer and the demo backend, so nothing carries over in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from tests.conftest import REFUND_REQUEST

KEEL = str(Path(sys.executable).parent / "keel")


def _keel(home: Path, *argv: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false")
    done = subprocess.run(
        [KEEL, *argv, "--json"], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.integration
def test_run_then_resume_in_a_new_process(home: Path) -> None:
    started = _keel(home, "run", REFUND_REQUEST)
    assert started["status"] == "awaiting_approval"
    assert started["pending"][0]["args"]["amount"] == 49.0

    resumed = _keel(home, "resume", started["thread_id"], "--approve")
    assert resumed["status"] == "done"

    shown = _keel(home, "show", started["thread_id"])
    assert shown["status"] == "done"
    backend = DemoBackend(home / "support_desk.sqlite")
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]
