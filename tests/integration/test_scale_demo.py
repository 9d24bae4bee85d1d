"""`make scale-demo` at a small size: its own servers, two workers, each resume by the other one."""

from __future__ import annotations

import json
import sys

import pytest

from evals.scale_demo import healthy
from evals.servers import postgres_bin, run_passing_interrupts


@pytest.mark.integration
@pytest.mark.usefixtures("postgres")  # skips or fails (CI) like every Postgres test without it
def test_the_scale_demo_crosses_processes_without_crossing_threads() -> None:
    assert postgres_bin() is not None
    # Not subprocess.run: interrupted, it would SIGKILL the demo and leave its servers behind.
    done = run_passing_interrupts(
        [sys.executable, "-m", "evals.scale_demo", "--threads", "6", "--json"], timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert healthy(report)
    assert report["threads"] == report["completed"] == report["cross_process_resumes"] == 6
    assert report["crossed_state"] == report["duplicate_irreversible"] == 0
    assert (report["refunds"], report["emails"]) == (6, 6)
    assert len(set(report["workers"])) == 2
