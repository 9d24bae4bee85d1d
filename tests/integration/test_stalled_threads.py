"""Issue #12: a worker killed after a task's writes were saved and before the next checkpoint.

In that window LangGraph's ``StateSnapshot.next`` is empty (its only task already holds its
writes) while ``snapshot.tasks`` lists the task with its result. Keel used to read the empty
``next`` as "finished": `keel show` said `running` and `keel recover` refused, so the refund was
made and the e-mail never sent (the steps were a task each then; since issue 26 one ``execute``
task makes both, and a kill inside it is the crash sweep's). The worker here is Keel's own CLI
in a real process, killed by SIGKILL in exactly that window (``stranding_worker.py``), on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graph.builder import build_graph
from keel.settings import Settings
from stores.backends import open_checkpointer
from tests.conftest import REFUND_REQUEST
from tests.integration.cli import KEEL
from tests.integration.cli import json_of as _json
from tests.integration.cli import keel as _keel
from tests.integration.cli import keel_env as _env
from tests.integration.cli import side_effects as _side_effects

STRANDING_WORKER = str(Path(__file__).with_name("stranding_worker.py"))


def strand_after_execute(home: Path, checkpointer: dict[str, str]) -> str:
    """A refund thread whose worker died with the refund's ``execute`` writes pending."""
    thread: str = _json(_keel(home, checkpointer, "run", REFUND_REQUEST))["thread_id"]
    killed = subprocess.run(
        [sys.executable, STRANDING_WORKER, "resume", thread, "--approve", "--json"],
        env=_env(home, checkpointer), cwd=home, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return thread


def _raw_snapshot(home: Path, checkpointer: dict[str, str], thread: str) -> Any:
    settings = Settings(home=home, postgres_url=checkpointer.get("KEEL_POSTGRES_URL"),
                        _env_file=None)  # type: ignore[call-arg]  # fmt: skip
    with open_checkpointer(settings) as saver:
        return build_graph(saver).get_state({"configurable": {"thread_id": thread}})


@pytest.mark.integration
def test_a_worker_killed_between_saved_writes_and_the_next_checkpoint_is_recovered(
    home: Path, checkpointer: dict[str, str]
) -> None:
    thread = strand_after_execute(home, checkpointer)

    # The exact state of the issue: the ``execute`` task's writes saved (both steps made, their
    # checks and the answer: one task since issue 26), no next checkpoint.
    snapshot = _raw_snapshot(home, checkpointer, thread)
    assert snapshot.next == ()
    assert [t.name for t in snapshot.tasks] == ["execute"]
    assert snapshot.tasks[0].result is not None and "results" in snapshot.tasks[0].result
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])

    # Recovered from its saved writes: done, and nothing made again.
    recovered = _json(_keel(home, checkpointer, "recover", thread))
    assert recovered["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert [r["tool"] for r in recovered["results"]] == ["refund_charge", "send_email"]

    # Finished now: recover refuses, show agrees.
    again = _keel(home, checkpointer, "recover", thread)
    assert again.returncode == 2 and "has finished" in again.stderr, again.stderr
    assert _json(_keel(home, checkpointer, "show", thread))["status"] == "done"
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])


@pytest.mark.integration
def test_show_and_runs_tell_a_thread_stranded_after_saved_writes_is_stalled(home: Path) -> None:
    thread = strand_after_execute(home, {})

    shown = _json(_keel(home, {}, "show", thread))
    assert shown["status"] == "stalled"
    assert shown["stalled_at"] == "execute"
    text = subprocess.run(
        [KEEL, "show", thread], env=_env(home, {}), cwd=home, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert f"thread {thread}: stalled at execute" in text.stdout
    assert f"keel recover {thread}" in text.stdout

    # The flight record's last word on the run was the approval's segment starting: `keel runs`
    # asks the checkpoint instead of showing it running forever.
    runs = _json(_keel(home, {}, "runs"))["runs"]
    assert [r["status"] for r in runs if r["thread_id"] == thread] == ["stalled"]
    stalled = _json(_keel(home, {}, "runs", "--stalled"))["stalled"]
    assert [(r["thread_id"], r["stalled_at"], r["saved_writes"]) for r in stalled] == [
        (thread, "execute", ["execute"])
    ]

    # The operator's sweep needs no thread id: it finds this one and finishes it.
    swept = subprocess.run(
        [KEEL, "recover", "--all", "--json"], env=_env(home, {}), cwd=home, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    summary = json.loads(swept.stdout)
    assert (summary["stalled"], summary["recovered"], summary["failed"]) == (1, 1, 0)
    assert summary["results"] == [
        {"thread_id": thread, "before": "stalled", "stalled_at": "execute", "after": "done",
         "refused": None, "error": None}
    ]  # fmt: skip
    assert f"recover {thread} (stalled at execute): done" in swept.stderr
    assert _side_effects(home) == ([("CH-3002", 49.0)], ["ada@example.com"])
    assert _json(_keel(home, {}, "runs", "--stalled"))["stalled"] == []
