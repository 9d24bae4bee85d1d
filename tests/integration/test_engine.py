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
from tests.integration.js_client import js_client, js_sdk
from tests.otlp import Received, one, otlp_receiver

pytestmark = pytest.mark.integration
KEEL = str(Path(sys.executable).parent / "keel")

REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)


@pytest.fixture(scope="module")
def otlp() -> Iterator[tuple[str, Received]]:
    """A real OTLP/HTTP receiver on loopback (``tests/otlp.py``): the engine's spans go there."""
    with otlp_receiver() as receiving:
        yield receiving


@pytest.fixture(scope="module")
def running(otlp: tuple[str, Received]) -> Iterator[Any]:
    require_engine()
    from keel.serve import engine

    # Every e-mail takes 1.5 s (the demo integrations' fault layer, under the 2 s tool timeout):
    # the window in which the refund is made and the run is still in flight.
    slow_email = '{"latency_s": 1.5, "integrations": ["email"]}'
    env = {
        "KEEL_FAULTS": slow_email,
        # Every process exports its runs' spans, sent every 200 ms (the SDK's default is 5 s).
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp[0],
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with engine(workers=2, worker_count=1, lease_s=6, durable=False, extra_env=env) as started:
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


def test_agent_chat_ui_s_client_with_its_api_key_on_the_engine(
    running: Any, otlp: tuple[str, Received]
) -> None:
    """The JavaScript SDK as Agent Chat UI uses it: X-Api-Key, its stream modes, one decision per
    action with no digest, on_disconnect "cancel", the thread list by metadata. Last in the
    module: it seeds the demo backend afresh (the tests above refunded the duplicate)."""
    from graph.served import title_of

    script = js_sdk()
    backend = DemoBackend(running.settings.domain_db)
    backend.seed(reset=True)
    url = running.api.url
    ask = {"messages": [{"type": "human", "content": REQUEST}]}

    nobody = js_client(script, "stream", url=url, input=ask)
    assert nobody.get("status") == 401, nobody

    asked = js_client(script, "stream", url=url, apiKey=running.tokens["agent"], input=ask)
    assert "error" not in asked, asked
    assert {"values", "updates"} <= set(asked["kinds"]), asked["kinds"]
    assert asked["status"] == "awaiting_approval", asked
    [request] = asked["interrupts"]
    assert [a["name"] for a in request["action_requests"]] == ["refund_charge", "send_email"]
    # The reviewer answers with the UI's "Approve All": one decision per action, no digest.
    approve = {"resume": {"decisions": [{"type": "approve"}, {"type": "approve"}]}}
    thread_id = asked["thread_id"]
    done = js_client(
        script, "stream", url=url, apiKey=running.tokens["reviewer"], threadId=thread_id,
        command=approve,
    )  # fmt: skip
    assert "error" not in done, done
    assert done["status"] == "done", done
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]
    answer = done["ai_messages"][-1]
    assert "49.00" in answer and "CH-3002" in answer and "ada@example.com" in answer, answer
    assert "{'" not in answer, answer

    # The thread list: found by the metadata the engine keeps (title, domain), with its status.
    labels = {"keel_title": title_of(REQUEST), "keel_domain": "support_desk"}
    found = js_client(script, "search", url=url, apiKey=running.tokens["agent"], metadata=labels)
    [thread] = [t for t in found["threads"] if t["thread_id"] == thread_id]
    assert thread["metadata"]["keel_status"] == "done", thread

    # The engine workers' spans reached the OTLP receiver, with Keel's ids.
    _, received = otlp

    def complete(spans: list[dict[str, Any]]) -> bool:
        mine = [s for s in spans if s["attributes"].get("gen_ai.conversation.id") == thread_id]
        ended = [s for s in mine if s["attributes"].get("keel.status") == "done"]
        return bool(ended) and "execute_tool send_email" in {s["name"] for s in mine}

    spans = [
        s for s in received.wait(complete, timeout_s=30)
        if s["attributes"].get("gen_ai.conversation.id") == thread_id
    ]  # fmt: skip
    roots = [s for s in spans if s["name"] == "invoke_workflow keel"]
    assert [r["attributes"]["keel.mode"] for r in roots] == ["run", "resume"], roots
    assert {r["attributes"]["keel.run_id"] for r in roots} == {asked["run_id"]}
    assert one(spans, "execute_tool refund_charge")["attributes"]["keel.tool.outcome"] == "ok"
    [answered] = [e for e in roots[1]["events"] if e["name"] == "keel.approval.answered"]
    assert answered["attributes"]["keel.approval.decisions"] == ["approve", "approve"]
