"""Contract: a side effect happens exactly once across a killed worker and ``keel recover``.

A real ``keel`` process answers the approval and is killed (SIGKILL, by the fault layer) right
after the declared irreversible call made its side effect and before the checkpoint that records
it; a new process recovers the thread. The domain's facts must then hold each declared effect
once: the intent ledger and the backend's idempotency keys, not luck, keep it from happening twice.
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

from graph.domain import Showcase
from keel.app import KeelApp
from keel.settings import Settings
from tests.contract.spec import Contract
from tests.contract.test_runs import snapshot

KEEL = str(Path(sys.executable).parent / "keel")


def keel(settings: Settings, *argv: str, faults: str = "none") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(
        KEEL_HOME=str(settings.home), KEEL_DOMAIN=settings.domain, KEEL_FAULTS=faults,
        LANGSMITH_TRACING="false",
        # A domain the test generated lives on the test's sys.path, not in site-packages.
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )  # fmt: skip
    return subprocess.run(
        [KEEL, *argv, "--json"], env=env, cwd=settings.home, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.integration
def test_a_killed_worker_never_repeats_a_side_effect(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract
) -> None:
    before = snapshot(domain, settings)
    acting = contract.acting
    # The request is taken in this process (the shared checkpointer is what matters); the
    # approval is answered by a worker process that dies, and another process recovers.
    first = app.run(acting.request)
    assert first.status == "awaiting_approval", first.answer
    thread = first.thread_id

    kill = json.dumps({"crash_after": [acting.kill_after]})
    killed = keel(settings, "resume", thread, "--approve", faults=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The side effect happened; the checkpoint that would record it did not.
    assert app.show(thread).status == "stalled"  # its worker is gone, its lease with it
    assert snapshot(domain, settings) != before

    outcome = answer(keel(settings, "recover", thread))
    while outcome["status"] == "awaiting_event" and acting.then is not None:
        answer(keel(settings, "domain", acting.then))
        answer(keel(settings, "events"))
        outcome = answer(keel(settings, "show", thread))
    assert outcome["status"] == "done", outcome
    found = [r for r in outcome["results"] if r["via"] == "intent ledger (found at the backend)"]
    assert [r["tool"] for r in found] == [acting.kill_after]
    assert snapshot(domain, settings) - before == set(acting.effects)
