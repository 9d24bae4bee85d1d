"""Keel on the engine: real PostgreSQL, Redis, Chroma and Aegra processes on free loopback ports.

One engine for the module (an API process and two worker processes, a 6 s lease so a killed
worker's run is re-run within seconds), started and stopped here. Clients are the LangGraph SDK
with bearer tokens: an "agent" starts a refund thread, a "reviewer" answers its approval, and the
worker that holds the resumed run is SIGKILLed in the middle of it. The engine re-runs it on
the other worker; Keel's intent ledger and idempotency keys make the re-run harmless: exactly
one refund and one e-mail. No model is involved (the offline runbook planner).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from tests.integration.conftest import require_engine

pytestmark = pytest.mark.integration
KEEL = str(Path(sys.executable).parent / "keel")

REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    require_engine()
    from evals.engine import engine

    # Every e-mail takes 1.5 s (the demo integrations' fault layer, under the 2 s tool timeout):
    # the window in which the refund is made and the run is still in flight.
    slow_email = '{"latency_s": 1.5, "integrations": ["email"]}'
    with engine(
        workers=2, worker_count=1, lease_s=6, durable=False, extra_env={"KEEL_FAULTS": slow_email}
    ) as started:
        yield started


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _keel(running: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    """``keel ARGV`` with the engine's settings (its PostgreSQL, its home), as an operator runs
    it beside the engine."""
    env = {k: v for k, v in running.env.items() if not k.startswith(("AEGRA_", "WORKER_"))}
    return subprocess.run(
        [KEEL, *argv], env=env, cwd=running.home, capture_output=True, text=True, timeout=120
    )


def _holder(running: Any, run_id: str) -> int | None:
    """The worker process (its pid) holding ``run_id``'s lease in Aegra's runs table."""
    import psycopg

    with psycopg.connect(running.keel_postgres_url) as conn:
        row = conn.execute(
            "SELECT claimed_by FROM runs WHERE run_id = %s AND status = 'running'", (run_id,)
        ).fetchone()
    if row is None or not row[0]:
        return None
    # Aegra names a worker loop HOSTNAME-PID-worker-N.
    return int(str(row[0]).rsplit("-worker-", 1)[0].rsplit("-", 1)[1])


def test_a_request_without_the_token_gets_401(running: Any) -> None:
    from langgraph_sdk import get_sync_client
    from langgraph_sdk.errors import AuthenticationError

    request = urllib.request.Request(f"{running.api.url}/threads/search", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 401
    stranger = get_sync_client(url=running.api.url, headers={"Authorization": "Bearer not-a-token"})
    with pytest.raises(AuthenticationError):
        stranger.threads.create()


def test_a_killed_worker_s_run_is_re_run_elsewhere_and_the_refund_happens_once(
    running: Any,
) -> None:
    from keel.engine import answer_approval, pending_approval, wait_for_run

    agent, reviewer = running.client("agent"), running.client("reviewer")
    thread_id = agent.threads.create()["thread_id"]
    first = agent.runs.create(thread_id, "keel", input={"request": REQUEST})
    assert wait_for_run(agent, thread_id, first["run_id"], 120)["status"] == "interrupted"

    # The second client finds the approval through the API and answers with its digests.
    request = pending_approval(reviewer, thread_id)
    assert request is not None, reviewer.threads.get_state(thread_id)
    assert [a["name"] for a in request["action_requests"]] == ["refund_charge", "send_email"]
    assert len(request["digests"]) == 2

    # The worker holding the resumed run is killed once the refund is made, while the e-mail
    # (slowed down) is still being sent: the worst moment, a side effect done and not saved.
    pids = {w.pid for w in running.workers}
    resumed = answer_approval(reviewer, thread_id, request, "approve")
    holder = _wait(lambda: _holder(running, resumed["run_id"]), 60, "a worker to claim the run")
    assert holder in pids
    victim = next(i for i, w in enumerate(running.workers) if w.pid == holder)
    _wait(lambda: DemoBackend(running.settings.domain_db).refunds(), 60, "the refund")
    assert _holder(running, resumed["run_id"]) == holder  # still mid-run
    running.workers[victim].kill()

    # The lease expires, the reaper re-queues the run, the other worker re-runs it.
    final = wait_for_run(reviewer, thread_id, resumed["run_id"], 120)
    assert final["status"] == "success", final
    state = agent.threads.get_state(thread_id)
    assert state["values"]["status"] == "done", state["values"]
    backend = DemoBackend(running.settings.domain_db)
    refunds = [r for r in backend.refunds() if r["charge_id"] == "CH-3002"]
    emails = [m for m in backend.outbox() if m["recipient"] == "ada@example.com"]
    assert len(refunds) == 1, refunds
    assert len(emails) == 1, emails
    # The receipts name the user the engine authenticated, not a string the client sent.
    receipts = state["values"].get("approvals") or {}
    assert {r["approved_by"] for r in receipts.values()} == {"reviewer"}, receipts
    # Who approved is on the receipt; the run that finished was not the killed worker's.
    survivor = running.workers[1 - victim]
    finished = [
        r
        for r in survivor.log_records()
        if r.get("event") == "Worker finished run" and r.get("run_id") == resumed["run_id"]
    ]
    assert finished, survivor.log_tail()
    running.restart(victim)  # a supervisor's restart: the module's engine has two workers again

    # The engine's runs are in the flight record in the engine's PostgreSQL, as `keel run`'s
    # are: the request, the answer the killed worker took, and the run the survivor finished.
    traced = _keel(running, "trace", thread_id)
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"run {first['run_id']}  thread {thread_id}  done"), traced.stdout
    segments = [line.split("  ")[0].split(": ", 1)[1] for line in lines if "─ segment " in line]
    assert segments[0] == "run" and segments[-1] == "resume", traced.stdout
    assert "approval requested for refund_charge, send_email" in traced.stdout
    assert "tool send_email" in traced.stdout and "ended done" in traced.stdout

    # Every process read its checkpoints strictly with Keel's allow-list: no warning of a type
    # loaded (or refused) that it did not know (issue 23, item 5).
    for server in running.processes():
        log = server.log_path.read_text(errors="replace")
        assert "unregistered type" not in log and "Blocked deserialization" not in log, (
            server.name, log[-3000:]
        )  # fmt: skip


def test_an_outbox_event_wakes_the_waiting_thread_through_the_engine(running: Any) -> None:
    from graph.context import KeelContext
    from keel.engine import (
        answer_approval,
        pending_approval,
        relay_events,
        wait_for_run,
        waiting_for_event,
    )

    agent, reviewer = running.client("agent"), running.client("reviewer")
    thread_id = agent.threads.create()["thread_id"]
    request = (
        "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
        "please refund the duplicate charge"
    )
    first = agent.runs.create(thread_id, "keel", input={"request": request})
    assert wait_for_run(agent, thread_id, first["run_id"], 120)["status"] == "interrupted"
    approval = pending_approval(reviewer, thread_id)
    assert approval is not None
    resumed = answer_approval(reviewer, thread_id, approval, "approve")
    wait_for_run(reviewer, thread_id, resumed["run_id"], 120)
    # The bank has not settled the refund: the thread sleeps on its event, no e-mail yet.
    assert waiting_for_event(agent, thread_id)
    backend = DemoBackend(running.settings.domain_db)
    assert not [m for m in backend.outbox() if m["recipient"] == "katherine@example.com"]

    ctx = KeelContext.from_settings(running.settings)
    assert relay_events(agent, ctx) == []  # nothing in the outbox yet: nobody is woken
    assert backend.settle_pending_refunds()
    report = relay_events(agent, ctx)
    assert [e["type"] for e in report] == ["refund.settled"]
    assert report[0]["woke"] == [thread_id]

    def finished() -> bool:
        state = agent.threads.get_state(thread_id)
        return state["values"].get("status") == "done" and not waiting_for_event(agent, thread_id)

    _wait(finished, 120, "the woken thread to finish")
    emails = [m for m in backend.outbox() if m["recipient"] == "katherine@example.com"]
    assert len(emails) == 1, emails
    assert relay_events(agent, ctx) == []  # the event was relayed once; the cursor moved past it

    # The thread list means something (issue 23, item 6): the thread's metadata holds its title
    # (the request, cut), the status of its last run and the domain, and the SDK's search finds
    # it by them, as a client's history list does.
    from graph.served import title_of

    labels = {"keel_domain": "support_desk", "keel_title": title_of(request)}
    found = agent.threads.search(metadata=labels, limit=10)
    assert [t["thread_id"] for t in found] == [thread_id], found
    assert found[0]["metadata"]["keel_status"] == "done", found[0]["metadata"]
    assert found[0]["metadata"]["keel_title"].endswith("…")
