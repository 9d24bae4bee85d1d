"""The flight record across a killed worker: what was acknowledged before SIGKILL is there, and
the recovery continues the same run in the record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from keel.settings import Settings
from stores.flight_record import SqliteFlightRecord
from tests.conftest import REFUND_REQUEST

KEEL = str(Path(sys.executable).parent / "keel")


def _keel(home: Path, *argv: str, faults: str = "none") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), KEEL_FAULTS=faults, LANGSMITH_TRACING="false")
    return subprocess.run(
        [KEEL, *argv, "--json"], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )


@pytest.mark.integration
def test_events_written_before_a_sigkill_survive_it(home: Path) -> None:
    started = _keel(home, "run", REFUND_REQUEST)
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)

    kill = json.dumps({"crash_after": ["refund_charge"]})
    killed = _keel(home, "resume", run["thread_id"], "--approve", faults=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    store = SqliteFlightRecord(Settings(home=home, _env_file=None).records_db)  # type: ignore[call-arg]
    events = store.events(run["run_id"])
    resumed = [e for e in events if e.segment == 1]
    kinds = [(e.kind, e.node) for e in resumed]
    # Everything up to the call that never returned: the answer, the approval node, the step.
    assert kinds[:2] == [("run_started", None), ("approval_answered", None)]
    assert ("node_left", "approve") in kinds and ("node_entered", "execute") in kinds
    assert kinds[-1][1] == "execute"  # the last thing recorded happened inside the step
    assert "run_ended" not in [k for k, _ in kinds]  # the worker died: the segment never ended

    recovered = _keel(home, "recover", run["thread_id"])
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["run_id"] == run["run_id"]
    after = store.events(run["run_id"])
    [ended] = [e for e in after if e.segment == 2 and e.kind == "run_ended"]
    assert ended.payload.status == "done"  # type: ignore[union-attr]
    listed = _keel(home, "runs")
    row = next(r for r in json.loads(listed.stdout)["runs"] if r["run_id"] == run["run_id"])
    assert row["status"] == "done" and row["segments"] == 3

    # Replay cannot re-enact the kill: it reports where it parts from the record, it does not fail.
    replayed = _keel(home, "replay", run["run_id"])
    assert replayed.returncode == 0, replayed.stderr
    report = json.loads(replayed.stdout)
    assert report["same"] is False and report["first_divergence"]["index"] > 0
