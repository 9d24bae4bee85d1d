"""The crash sweep's fast subset: a real worker killed at a strided sample of the boundaries it
counts, finished with the operator's commands, judged from the backend and the stores.

The whole sweep (every boundary, both backends, all four requests) is the eval:
``keel eval --suite crashes``. Here: the bank-transfer refund (approval, the ledger, the event
inbox and a wake-up by ``keel events``: every kind of store), on SQLite, every 8th boundary, two
points at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.crash_sweep import PointPool, make_template, run_crash_sweep, sweep_point


@pytest.mark.integration
def test_a_worker_killed_at_any_boundary_ends_as_without_the_crash(indexed_home: Path) -> None:
    result = run_crash_sweep(
        backends=["sqlite"], requests=["bank_refund"], every=8, jobs=2, indexed=indexed_home
    )
    figures = result["sqlite"]["bank_refund"]
    kinds = figures["boundary_kinds"]
    # Found by counting: every store the request writes to, and the backend calls.
    for kind in ("checkpoint.put", "checkpoint.put_writes", "ledger.begin", "ledger.finish",
                 "inbox.subscribe", "inbox.delivered", "inbox.advance", "record.append",
                 "lease.hold", "backend.call", "backend.acted"):  # fmt: skip
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    assert figures["boundaries"] > 50
    assert figures["kill_points"] == len(range(1, figures["boundaries"] + 1, 8))
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
    template = make_template(tmp_path, indexed_home)
    pool = PointPool(tmp_path, 1)
    try:
        counting = sweep_point(pool, template, tmp_path, "refund", 0, None, None)
        kinds = counting.boundaries
        second_segment = [i for i, k in enumerate(kinds) if k == "lease.hold"][1]
        interrupt_saved = max(
            i for i, k in enumerate(kinds[:second_segment]) if k == "checkpoint.put_writes"
        )
        point = sweep_point(
            pool, template, tmp_path, "refund", interrupt_saved + 1, None, counting.expected
        )
    finally:
        pool.close()
    assert point.died and point.kind == "checkpoint.put_writes", point
    first, second = point.commands[0], point.commands[1]
    assert (first.shown, first.truth) == ("stalled", "stalled")
    assert second.argv == ["recover", "--all"] and second.shown == "awaiting_approval"
    assert point.final_status == "done"
    assert (point.duplicated, point.missing, point.unsettled, point.wrong_status) == ([],) * 4
