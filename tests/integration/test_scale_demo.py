"""`make scale-demo` at a small size: its own servers, two workers, each resume by the other one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evals.scale_demo import healthy
from evals.servers import postgres_bin


@pytest.mark.integration
@pytest.mark.usefixtures("postgres")  # skips or fails (CI) like every Postgres test without it
def test_the_scale_demo_crosses_processes_without_crossing_threads() -> None:
    assert postgres_bin() is not None
    done = subprocess.run(
        [sys.executable, "-m", "evals.scale_demo", "--threads", "6", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert healthy(report)
    assert report["threads"] == report["completed"] == report["cross_process_resumes"] == 6
    assert report["crossed_state"] == report["duplicate_irreversible"] == 0
    assert (report["refunds"], report["emails"]) == (6, 6)
    assert len(set(report["workers"])) == 2
