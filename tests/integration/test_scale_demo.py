"""`make scale-demo` at a small size: the engine, a second client approving, a worker killed."""

from __future__ import annotations

import json
import sys

import pytest

from evals.scale_demo import healthy
from keel.servers import run_passing_interrupts
from tests.integration.conftest import require_engine


@pytest.mark.integration
def test_the_scale_demo_survives_a_killed_worker_without_crossing_threads() -> None:
    require_engine()  # skips on a developer's machine without the servers, fails under CI
    # Not subprocess.run: interrupted, it would SIGKILL the demo and leave its servers behind.
    done = run_passing_interrupts(
        [sys.executable, "-m", "evals.scale_demo", "--threads", "6", "--json"], timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    report = json.loads(done.stdout)
    assert healthy(report)
    assert report["threads"] == report["completed"] == 6
    assert report["crossed_state"] == report["duplicate_irreversible"] == 0
    assert report["missing_side_effects"] == 0
    assert (report["refunds"], report["emails"]) == (6, 6)
    assert report["runs_held_by_killed_worker"] >= 1
    assert report["recovered_after_worker_kill"] == report["runs_held_by_killed_worker"]
    # Every held run is counted with its kind, a first run re-run elsewhere as well as a resume.
    assert sum(report["held_by_kind"].values()) == report["runs_held_by_killed_worker"]
    assert set(report["held_by_kind"]) <= {"run", "resume"}
    assert report["engine"].startswith("aegra-api ")
