"""``KeelApp.open`` lets go of the stores it opened: a process that opens many apps (a notebook, an
eval, a test suite) keeps no file or pool of the ones it closed."""

from __future__ import annotations

import os
from pathlib import Path

from graph.approval import Decision
from keel.app import KeelApp
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST


def _open_files(under: Path) -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)):
            found.add(Path(target).name)
    return found


def test_an_app_closes_the_stores_it_opened(settings: Settings) -> None:
    stores = {
        p.name
        for p in (settings.budgets_db, settings.breaker_db, settings.records_db, settings.intent_db)
    }
    with KeelApp.open(settings) as app:
        waiting = app.run(REFUND_REQUEST)
        done = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann"))
        assert done.status == "done"
        assert _open_files(settings.home) & stores, "the run used none of the stores"
    assert _open_files(settings.home) & stores == set()
