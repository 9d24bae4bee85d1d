"""The crash sweep's fast subset: a real worker killed at a strided sample of the boundaries it
counts, finished with the operator's commands, judged from the backend and the stores.

The whole sweep (every boundary, both backends, all four requests) is the eval:
``keel eval --suite crashes``. Here: the bank-transfer refund (approval, the ledger, the event
inbox and a wake-up by ``keel events``: every kind of store), on SQLite, every 6th boundary, two
points at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evals.crash_sweep import run_crash_sweep
from evals.crash_worker import Expected, PointResult
from keel.settings import Settings
from tools.demo import DemoDomain


@pytest.mark.integration
def test_a_worker_killed_at_any_boundary_ends_as_without_the_crash(indexed_home: Path) -> None:
    result = run_crash_sweep(
        backends=["sqlite"], requests=["bank_refund"], every=6, jobs=2, indexed=indexed_home
    )
    figures = result["sqlite"]["bank_refund"]
    kinds = figures["boundary_kinds"]
    # Found by counting: every store the request writes to, and the backend calls.
    for kind in ("checkpoint.put", "checkpoint.put_writes", "ledger.begin", "ledger.finish",
                 "inbox.subscribe", "inbox.delivered", "inbox.advance", "record.append",
                 "lease.hold", "backend.call", "backend.acted"):  # fmt: skip
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    assert figures["boundaries"] > 50
    assert figures["kill_points"] == len(range(1, figures["boundaries"] + 1, 6))
    assert figures["failing"] == []
    assert figures["recovered"] == figures["kill_points"]
    for count in ("duplicated", "missing", "stalled_after_recover", "wrong_status_shown"):
        assert figures[count] == 0, (count, figures)
    assert figures["expected_status"] == "done"


@pytest.mark.integration
def test_a_worker_killed_before_its_approval_was_saved_is_stalled_not_awaiting(
    indexed_home: Path, tmp_path: Path
) -> None:
    """Found by the sweep before threads had a true status: killed after the checkpoint that
    leads to ``approve`` and before the approval's interrupt was saved, the thread's state said
    ``awaiting_approval`` (the validator wrote it), so ``keel show`` said so while ``keel resume``
    refused: nothing was pending, and no command moved the thread. It is ``stalled`` and
    ``keel recover --all`` brings it to its approval."""
    counting = _run_point(indexed_home, tmp_path / "count", 0)
    kinds = counting.boundaries
    second_segment = [i for i, k in enumerate(kinds) if k == "lease.hold"][1]
    interrupt_saved = max(
        i for i, k in enumerate(kinds[:second_segment]) if k == "checkpoint.put_writes"
    )
    assert counting.expected is not None
    point = _run_point(indexed_home, tmp_path / "kill", interrupt_saved + 1, counting.expected)
    assert point.died and point.kind == "checkpoint.put_writes"
    first, second = point.commands[0], point.commands[1]
    assert (first.shown, first.truth) == ("stalled", "stalled")
    assert second.argv == ["recover", "--all"] and second.shown == "awaiting_approval"
    assert point.final_status == "done"
    assert (point.duplicated, point.missing, point.unsettled, point.wrong_status) == ([],) * 4


def _run_point(
    indexed: Path, home: Path, kill_at: int, expected: Expected | None = None
) -> PointResult:
    """One point in a process of its own (the worker is forked from it, never from pytest)."""
    shutil.copytree(indexed, home)
    DemoDomain().prepare(Settings(home=home, _env_file=None), reset=True)  # type: ignore[call-arg]
    argv = [sys.executable, "-m", "evals.crash_worker", "point", "--home", str(home),
            "--request", "refund", "--kill-at", str(kill_at)]  # fmt: skip
    if expected is not None:
        (home.parent / "expected.json").write_text(json.dumps({"expected": expected.model_dump()}))
        argv += ["--expect", str(home.parent / "expected.json")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return PointResult.model_validate_json(done.stdout.strip().splitlines()[-1])
