"""The crash sweep's fast subset: a real worker killed at a strided sample of the boundaries it
counts, finished with the operator's commands, judged from the backend and the stores.

The whole sweep (every boundary, both backends, all four requests) is the eval:
``keel eval --suite crashes``. Here: the bank-transfer refund (approval, the ledger, the event
inbox and a wake-up by ``keel events``: every kind of store), on SQLite, every 6th boundary, two
points at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.crash_sweep import run_crash_sweep


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
