"""Who may do what on the engine (issue 21, items 1, 2 and 5), against real Aegra processes.

One engine for the module (an API process, one worker process), four users: Alice and Bob are
requesters, Rita a reviewer, Olga an operator (graph/serve_auth.py; docs/serving.md).
Each attack goes through the LangGraph SDK and raw HTTP, and the test then reads the backend and
the thread: a refused write changed nothing. No model is involved (the offline runbook planner).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from domains.support_desk.backend import DemoBackend
from tests.integration.conftest import require_engine

pytestmark = pytest.mark.integration

REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
USERS = ("alice:requester", "bob:requester", "rita:reviewer", "olga:operator")


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    require_engine()
    from keel.serve import engine

    with engine(workers=1, worker_count=1, users=USERS, durable=False) as started:
        yield started


def _http(
    running: Any, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """A raw HTTP call, the token (if any) as X-Api-Key; (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{running.api.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("X-Api-Key", token)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


CLOSE = "Close ticket T-77 and tell the customer"
BANK = (
    "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
    "please refund the duplicate charge"
)


def _waiting_thread(running: Any, request: str = REQUEST) -> str:
    """A thread of Alice's, stopped at its approval (each request once: the demo has one each)."""
    from keel.engine import wait_for_run

    alice = running.client("alice")
    thread_id: str = alice.threads.create()["thread_id"]
    run = alice.runs.create(thread_id, "keel", input={"request": request})
    assert wait_for_run(alice, thread_id, run["run_id"], 120)["status"] == "interrupted"
    return thread_id


def _checkpoints(running: Any, thread_id: str) -> list[str]:
    history = running.client("olga").threads.get_history(thread_id, limit=100)
    return [h["checkpoint"]["checkpoint_id"] for h in history]


def test_a_malformed_token_setting_stops_the_engine_before_anything_starts() -> None:
    from keel.errors import ConfigError
    from keel.serve import engine

    with (
        pytest.raises(ConfigError, match=r"^KEEL_API_TOKENS: the token of user 'dave'"),
        engine(extra_env={"KEEL_API_TOKENS": "dave=short"}),
    ):
        pass  # pragma: no cover - never reached


def test_an_aegra_process_with_a_malformed_token_setting_exits_naming_it(
    running: Any, tmp_path: Any
) -> None:
    """Break 1: a process started any other way than `make serve` must not serve as anonymous."""
    from keel.errors import ConfigError
    from keel.serve import AegraServer
    from keel.servers import free_port

    server = AegraServer("bad", free_port(), tmp_path / "aegra-bad.log")
    server.start({**running.env, "WORKER_COUNT": "0", "KEEL_API_TOKENS": "dave=short"})
    try:
        with pytest.raises(ConfigError, match="exited"):
            server.wait_ready(timeout_s=120)
        log = server.log_path.read_text(errors="replace")
        assert "KEEL_API_TOKENS" in log and "short" not in log.replace("dave=short", "")
    finally:
        server.stop()


def test_the_token_works_as_x_api_key_and_no_token_gets_401(running: Any) -> None:
    from langgraph_sdk.errors import AuthenticationError

    assert _http(running, "POST", "/threads/search", {}, token=None)[0] == 401
    assert _http(running, "POST", "/threads/search", {}, token="not-a-token")[0] == 401
    status, found = _http(running, "POST", "/threads/search", {}, token=running.tokens["alice"])
    assert status == 200 and isinstance(found, list)
    alice = running.client("alice", api_key=True)  # the SDK's api_key: X-Api-Key
    assert alice.threads.create()["metadata"]["keel_owner"] == "alice"
    from langgraph_sdk import get_sync_client

    with pytest.raises(AuthenticationError):
        get_sync_client(url=running.api.url, api_key=None).threads.create()


def test_a_requester_sees_their_own_threads_and_a_reviewer_answers_them(running: Any) -> None:
    from langgraph_sdk.errors import NotFoundError, PermissionDeniedError

    from keel.engine import answer_approval, pending_approval, wait_for_run

    thread_id = _waiting_thread(running)
    bob, rita = running.client("bob"), running.client("rita")
    with pytest.raises(NotFoundError):
        bob.threads.get_state(thread_id)
    assert (
        _http(running, "GET", f"/threads/{thread_id}/state", token=running.tokens["bob"])[0] == 404
    )
    assert thread_id not in {t["thread_id"] for t in bob.threads.search(limit=100)}
    assert thread_id in {t["thread_id"] for t in running.client("alice").threads.search(limit=100)}
    with pytest.raises(NotFoundError):
        bob.runs.create(thread_id, "keel", command={"resume": {"decisions": []}})
    with pytest.raises(PermissionDeniedError):  # a reviewer answers; it does not ask
        rita.runs.create(thread_id, "keel", input={"request": REQUEST})
    with pytest.raises(PermissionDeniedError):
        rita.threads.delete(thread_id)

    request = pending_approval(rita, thread_id)
    assert request is not None
    run = answer_approval(rita, thread_id, request, "approve")
    assert wait_for_run(rita, thread_id, run["run_id"], 120)["status"] == "success"
    values = rita.threads.get_state(thread_id)["values"]
    assert values["status"] == "done"
    assert {r["approved_by"] for r in values["approvals"].values()} == {"rita"}


def test_state_writes_and_forks_are_refused_unless_the_caller_is_an_operator(
    running: Any,
) -> None:
    """Breaks 2 to 4: update_state, command.update/goto and runs from an earlier checkpoint."""
    from langgraph_sdk.errors import PermissionDeniedError

    thread_id = _waiting_thread(running, CLOSE)
    alice, rita = running.client("alice"), running.client("rita")
    backend = DemoBackend(running.settings.domain_db)
    refunds_before = len(backend.refunds())
    checkpoints = _checkpoints(running, thread_id)
    earlier = checkpoints[-2]
    attacks = [
        lambda c: c.threads.update_state(
            thread_id, {"evidence": [], "review": "approved", "status": "running"},
            as_node="approve",
        ),
        lambda c: c.threads.update_state(thread_id, {"cursor": -2}, checkpoint_id=earlier),
        lambda c: c.runs.create(
            thread_id, "keel",
            command={"update": {"results": {"__overwrite__": []}, "cursor": -1}, "goto": "execute"},
        ),
        lambda c: c.runs.create(thread_id, "keel", command={"goto": "execute"}),
        lambda c: c.runs.create(thread_id, "keel", input=None, checkpoint_id=earlier),
        lambda c: c.runs.create(
            thread_id, "keel", command={"resume": {"decisions": []}},
            config={"configurable": {"checkpoint_id": earlier}},
        ),
    ]  # fmt: skip
    for client in (alice, rita):
        for attack in attacks:
            with pytest.raises(PermissionDeniedError):
                attack(client)
    for path, body in (
        (f"/threads/{thread_id}/state", {"values": {"cursor": -2}, "as_node": "approve"}),
        (f"/threads/{thread_id}/runs", {"assistant_id": "keel", "command": {"goto": "execute"}}),
        (f"/threads/{thread_id}/runs", {"assistant_id": "keel", "checkpoint_id": earlier}),
        (f"/threads/{thread_id}/commands", {"id": 1, "method": "input.respond",
                                            "params": {"response": {}, "goto": "execute"}}),
    ):  # fmt: skip
        status, answer = _http(running, "POST", path, body, token=running.tokens["alice"])
        assert status == 403, answer
        assert "operator" in answer["message"], answer
    assert _checkpoints(running, thread_id) == checkpoints  # nothing written
    assert len(backend.refunds()) == refunds_before

    # An operator may (Studio's time travel); the guarantees behind it are not the server's.
    olga = running.client("olga")
    olga.threads.update_state(
        thread_id, {"review_note": "looked at by an operator"}, as_node="approve"
    )
    assert len(_checkpoints(running, thread_id)) == len(checkpoints) + 1
    assert olga.threads.get_state(thread_id)["values"]["review_note"] == "looked at by an operator"


def test_an_unreadable_message_is_refused_and_the_thread_still_answers(running: Any) -> None:
    """Break 7: one bad message stored as a pending write made the thread unreadable."""
    from langgraph_sdk.errors import UnprocessableEntityError

    from keel.engine import answer_approval, pending_approval, wait_for_run, waiting_for_event

    thread_id = _waiting_thread(running, BANK)
    alice, rita = running.client("alice"), running.client("rita")
    bad = {"messages": [{"type": "human", "content": 5}]}
    with pytest.raises(UnprocessableEntityError):
        alice.runs.create(thread_id, "keel", input=bad)
    status, answer = _http(
        running, "POST", f"/threads/{thread_id}/runs", {"assistant_id": "keel", "input": bad},
        token=running.tokens["alice"],
    )  # fmt: skip
    assert status == 422 and answer["message"].startswith("input refused: messages[0].content")
    status, answer = _http(
        running, "POST", f"/threads/{thread_id}/runs/wait",
        {"assistant_id": "keel", "input": {"request": "hi", "cursor": -2}},
        token=running.tokens["alice"],
    )  # fmt: skip
    assert status == 422 and "unknown input key" in answer["message"]
    assert (
        _http(running, "GET", f"/threads/{thread_id}/state", token=running.tokens["alice"])[0]
        == 200
    )
    request = pending_approval(rita, thread_id)
    assert request is not None
    run = answer_approval(rita, thread_id, request, "approve")
    # Approved and refunded; the bank's settlement is awaited (an event interrupt).
    assert wait_for_run(rita, thread_id, run["run_id"], 120)["status"] == "interrupted"
    assert waiting_for_event(alice, thread_id)
    values = alice.threads.get_state(thread_id)["values"]
    assert {r["approved_by"] for r in values["approvals"].values()} == {"rita"}
    refunds = DemoBackend(running.settings.domain_db).refunds()
    assert [r["charge_id"] for r in refunds if r["charge_id"] in ("CH-3005", "CH-3006")] == [
        "CH-3006"
    ]
