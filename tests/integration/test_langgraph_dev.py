"""`langgraph dev` serves Keel's graph: the SDK drives a request to its approval and resumes it.

A real server process (``langgraph dev``, loading langgraph.json from the repository root exactly
as Studio does) on a free port, driven by the real LangGraph SDK client. The server brings its own
in-memory checkpointer and passes no Keel context, so the nodes build theirs from ``KEEL_HOME``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from keel.settings import Settings
from stores.ledger import SqliteLedger
from tests.conftest import REFUND_REQUEST
from tests.integration.js_client import js_client, js_sdk
from tests.otlp import Received, one, otlp_receiver

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = str(Path(sys.executable).parent / "langgraph")
KEEL = str(Path(sys.executable).parent / "keel")
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 180.0


@dataclass
class Server:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group (it was started in a session of its own)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=10)


@contextmanager
def serving(home: Path, tmp_path: Path, **keel_env: str) -> Iterator[Server]:
    """``langgraph dev`` on a free port with KEEL_HOME=home (and ``keel_env``'s variables);
    always stopped, log in tmp_path."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", LANGGRAPH_CLI_NO_ANALYTICS="1")
    env.update(keel_env)
    served = Server(url=f"http://127.0.0.1:{port}", log_path=tmp_path / "langgraph-dev.log")
    argv = [LANGGRAPH, "dev", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-browser", "--no-reload", "--config", str(ROOT / "langgraph.json")]
    with served.log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _answers(served.url):
                if proc.poll() is not None:
                    pytest.fail(f"langgraph dev exited ({proc.returncode}):\n{served.log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"langgraph dev not up after {START_TIMEOUT_S}s:\n{served.log()}")
                time.sleep(0.25)
            yield served
        finally:
            _stop(proc)
            # Shown by pytest only when the test failed.
            print(f"--- langgraph dev log ({served.log_path}) ---\n{served.log()}")


@pytest.fixture
def server(home: Path, tmp_path: Path) -> Iterator[Server]:
    with serving(home, tmp_path) as served:
        yield served


def keel_cli(home: Path, *argv: str, **keel_env: str) -> subprocess.CompletedProcess[str]:
    """``keel ARGV`` in a process of its own on ``home`` (as a user reads the record)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", **keel_env)
    return subprocess.run(
        [KEEL, *argv], env=env, cwd=home, capture_output=True, text=True, timeout=120
    )


def _values(state: Any) -> dict[str, Any]:
    values = state["values"]
    assert isinstance(values, dict), values
    return values


def _interrupt_values(state: Any) -> list[Any]:
    """The values of a thread state's pending interrupts (top level, else its tasks')."""
    interrupts = state.get("interrupts") or [
        item for task in state.get("tasks", []) for item in task.get("interrupts", [])
    ]
    return [item["value"] for item in interrupts]


@pytest.mark.integration
def test_langgraph_dev_runs_a_request_to_its_approval_and_resumes_it(
    server: Server, home: Path
) -> None:
    client = get_sync_client(url=server.url, timeout=RUN_TIMEOUT_S)
    assistants = client.assistants.search(graph_id="keel")
    assert [a["graph_id"] for a in assistants] == ["keel"], server.log()

    thread_id = client.threads.create()["thread_id"]
    # One run at a time on the thread; a dropped client must not cancel a half-done execution.
    run = functools.partial(
        client.runs.wait, thread_id, "keel", multitask_strategy="reject", on_disconnect="continue"
    )
    # As Studio's chat and Agent Chat UI send it: chat messages, the last human one the request.
    run(input={"messages": [{"type": "human", "content": REFUND_REQUEST}]})

    state = client.threads.get_state(thread_id)
    assert state["next"] == ["approve"], server.log()
    assert _values(state)["status"] == "awaiting_approval"
    (request,) = _interrupt_values(state)
    actions = request["action_requests"]
    assert [a["name"] for a in actions] == ["refund_charge", "send_email"]
    assert actions[0]["args"]["amount"] == 49.0
    assert actions[0]["args"]["charge_id"] == "CH-3002"
    assert len(request["digests"]) == len(actions)
    assert len(set(request["digests"])) == len(actions)

    # Nothing irreversible happened before the approval.
    backend = DemoBackend(home / "support_desk.sqlite")
    assert backend.refunds() == []
    assert backend.outbox() == []

    # Agent Chat UI's "Approve All" (no digests), with a reviewer name the caller claims.
    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}], "reviewer": "studio-test"}
    run(command={"resume": answer})

    final = client.threads.get_state(thread_id)
    values = _values(final)
    assert final["next"] == []
    assert values["status"] == "done", values
    assert _interrupt_values(final) == []
    # The receipts (pydantic objects in the state) come back through the API as JSON.
    receipts = values["approvals"]
    assert sorted(receipts) == sorted(request["digests"])
    # langgraph dev, without auth, passes no user in the run's config: the answer's own name
    # counts, as for a local caller (Aegra passes its anonymous user: tests/graph/test_chat.py).
    assert {r["approved_by"] for r in receipts.values()} == {"studio-test"}
    # The answer in the chat: an AI message carrying the outcome, after the human's request.
    human, ai = values["messages"]
    assert (human["type"], human["content"]) == ("human", REFUND_REQUEST)
    assert ai["type"] == "ai" and ai["content"] == values["answer"]
    assert ai["additional_kwargs"]["keel"] == {"status": "done"}
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]

    # Studio's thread list shows what the thread's metadata says: its title (the first request),
    # status and domain, written through the server's own API at each run's end (issue 23, 4).
    labelled: list[dict[str, Any]] = []
    for _ in range(50):  # the label is written after the run's end, not waited for by it
        labelled = client.threads.search(metadata={"keel_status": "done", "keel_domain":
                                                   "support_desk"}, limit=50)  # fmt: skip
        if any(t["thread_id"] == thread_id for t in labelled):
            break
        time.sleep(0.1)
    [mine] = [t for t in labelled if t["thread_id"] == thread_id]
    assert mine["metadata"]["keel_title"].startswith("Customer C-1001 was charged twice"), mine

    # Both runs are in the flight record, one Keel run named by the server's first run id, as
    # `keel run` and `keel resume` record theirs: `keel trace` and `keel runs` show them.
    first_run = client.runs.list(thread_id)[-1]["run_id"]
    traced = keel_cli(home, "trace", thread_id)
    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"run {first_run}  thread {thread_id}  done"), traced.stdout
    assert [line.split(":")[0] for line in lines if "segment" in line] == [
        "├─ segment 0", "└─ segment 1"
    ], traced.stdout  # fmt: skip
    assert "segment 0: run" in traced.stdout and "segment 1: resume" in traced.stdout
    assert "approval requested for refund_charge, send_email" in traced.stdout
    assert "tool refund_charge" in traced.stdout and "tool send_email" in traced.stdout
    listed = keel_cli(home, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout)["runs"] if r["thread_id"] == thread_id]
    assert (row["run_id"], row["status"], row["segments"]) == (first_run, "done", 2), row

    # Time travel through the SDK: a run started from an earlier checkpoint forks the thread
    # there. Forked from just before the plan check, Keel checks the plan again against the
    # world as it is now, where the duplicate was refunded on the first branch: the fork is
    # refused, and time travel repeats nothing irreversible.
    history = client.threads.get_history(thread_id, limit=50)
    checked = [h for h in history if h["next"] == ["check_plan"]]
    assert checked, [h["next"] for h in history]
    run(input=None, checkpoint_id=checked[0]["checkpoint"]["checkpoint_id"])
    forked = _values(client.threads.get_state(thread_id))
    assert forked["status"] == "refused", forked
    assert "already refunded" in forked["answer"]
    assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1
    assert len(client.threads.get_history(thread_id, limit=200)) > len(history)

    # The server read its checkpoints strictly with Keel's allow-list: no type it did not know
    # was loaded (nor refused) with a warning (issue 23, item 5).
    log = server.log()
    assert "LANGGRAPH_STRICT_MSGPACK=true" in log, log
    assert "unregistered type" not in log and "Blocked deserialization" not in log, log


@pytest.mark.integration
def test_langgraph_dev_on_a_fresh_clone_plans_the_first_request(
    indexed_home: Path, tmp_path: Path
) -> None:
    """The README's recipe (docs/usage.md) on a fresh clone: ``keel ingest``, then ``langgraph
    dev``; nobody ran ``keel seed`` or ``keel demo``. The server prepares the domain before it
    takes a request."""
    home = tmp_path / "home"
    shutil.copytree(indexed_home, home)
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    settings.domain_db.unlink(missing_ok=True)
    with serving(home, tmp_path) as served:
        client = get_sync_client(url=served.url, timeout=RUN_TIMEOUT_S)
        thread_id = client.threads.create()["thread_id"]
        client.runs.wait(
            thread_id, "keel", input={"messages": [{"type": "human", "content": REFUND_REQUEST}]}
        )
        values = _values(client.threads.get_state(thread_id))
        assert values["status"] == "awaiting_approval", served.log()


SLOW_EMAIL = '{"latency_s": 4, "integrations": ["email"]}'
"""The e-mail integration answers after 4 s: a cancel lands while the e-mail is in flight."""


def _until(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _last_answer(values: dict[str, Any]) -> str:
    ai = [m for m in values["messages"] if m["type"] == "ai"]
    content = ai[-1]["content"]
    assert isinstance(content, str)
    return content


@pytest.mark.integration
@pytest.mark.parametrize("stop", ["runs.cancel", "on_disconnect=cancel"])
def test_a_run_cancelled_while_the_email_is_in_flight_is_accounted_for_truly(
    home: Path, tmp_path: Path, stop: str
) -> None:
    """Approve, then stop the run after the refund while the e-mail is being sent (the SDK's
    cancel, or Agent Chat UI's shape: a resume with ``on_disconnect="cancel"`` whose client goes
    away). The e-mail call goes on in its thread and is sent after the cancel. A chat message then
    gets an account that says the e-mail may have happened and is being checked (never "not
    done"), and once it went out, the next message says it was sent. Nothing runs twice."""
    backend = DemoBackend(home / "support_desk.sqlite")
    with serving(home, tmp_path, KEEL_FAULTS=SLOW_EMAIL, KEEL_TOOL_TIMEOUT_S="10") as served:
        client = get_sync_client(url=served.url, timeout=RUN_TIMEOUT_S)
        thread_id = client.threads.create()["thread_id"]
        client.runs.wait(
            thread_id, "keel", input={"messages": [{"type": "human", "content": REFUND_REQUEST}]}
        )
        assert _values(client.threads.get_state(thread_id))["status"] == "awaiting_approval"
        approve = {"resume": {"decisions": [{"type": "approve"}, {"type": "approve"}]}}
        if stop == "runs.cancel":
            run = client.runs.create(
                thread_id, "keel", command=approve, multitask_strategy="reject"
            )
            _until(lambda: len(backend.refunds()) == 1, "the refund")
            client.runs.cancel(thread_id, run["run_id"], wait=True)
        else:
            parts = client.runs.stream(
                thread_id, "keel", command=approve, stream_mode="values", on_disconnect="cancel"
            )
            # The run's first event says it started; the steps then run in one ``execute``
            # task (issue 26), which streams nothing more until it ends: watch the stores.
            next(iter(parts))
            _until(lambda: len(backend.refunds()) == 1, "the refund")
            ledger = SqliteLedger(Settings(home=home, _env_file=None).intent_db)  # type: ignore[call-arg]
            _until(
                lambda: any(i["tool"] == "send_email" and i["status"] == "pending"
                            for i in ledger.for_thread(thread_id)),
                "the e-mail's call under way",
            )  # fmt: skip
            parts.close()  # type: ignore[attr-defined]  # the client goes away: a page reload
            _until(
                lambda: client.runs.list(thread_id)[0]["status"] not in ("pending", "running"),
                "the server cancels the run",
            )
        assert backend.outbox() == [], "the e-mail is still in flight"

        client.runs.wait(
            thread_id, "keel", input={"messages": [{"type": "human", "content": "any news?"}]}
        )
        values = _values(client.threads.get_state(thread_id))
        assert values["status"] == "escalated", served.log()
        answer = _last_answer(values)
        assert "worker died" not in answer and "stopped before it finished" in answer, answer
        assert "Refunded 49.00 of charge CH-3002" in answer, answer
        assert "May have happened, being checked:" in answer, answer
        unsure = answer.split("May have happened, being checked:")[1].split("Not done:")[0]
        assert "ada@example.com" in unsure, answer
        assert "Not done" not in answer or "ada@example.com" not in answer.split("Not done:")[1]

        _until(lambda: len(backend.outbox()) == 1, "the e-mail sent after the cancel")
        client.runs.wait(
            thread_id, "keel", input={"messages": [{"type": "human", "content": "and now?"}]}
        )
        values = _values(client.threads.get_state(thread_id))
        answer = _last_answer(values)
        assert "May have happened" not in answer, answer
        assert "E-mailed ada@example.com" in answer, answer
        assert values["escalation"]["unsure"] == []
        assert len(backend.refunds()) == 1 and len(backend.outbox()) == 1


@pytest.fixture(scope="module")
def otlp() -> Iterator[tuple[str, Received]]:
    """A real OTLP/HTTP receiver on loopback (``tests/otlp.py``) for the module's server."""
    with otlp_receiver() as receiving:
        yield receiving


@pytest.fixture(scope="module")
def chat_server(
    indexed_home: Path, tmp_path_factory: pytest.TempPathFactory, otlp: tuple[str, Received]
) -> Iterator[tuple[Server, Path]]:
    """One ``langgraph dev`` for the module's client tests, exporting spans to ``otlp``."""
    root = tmp_path_factory.mktemp("chat-dev")
    home = root / "home"
    shutil.copytree(indexed_home, home)
    SupportDesk().prepare(Settings(home=home, _env_file=None), reset=True)  # type: ignore[call-arg]
    # Spans leave every 200 ms (the SDK's default batch delay is 5 s).
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp[0], "OTEL_BSP_SCHEDULE_DELAY": "200"}
    with serving(home, root, **env) as served:
        yield served, home


@pytest.mark.integration
def test_agent_chat_ui_s_client_rejects_edits_and_approves_on_langgraph_dev(
    chat_server: tuple[Server, Path], otlp: tuple[str, Received]
) -> None:
    server, home = chat_server
    script = js_sdk()
    backend = DemoBackend(home / "support_desk.sqlite")
    ask = {"messages": [{"type": "human", "content": REFUND_REQUEST}]}

    # A request, streamed as useStream streams it, stops at the approval.
    asked = js_client(script, "stream", url=server.url, input=ask)
    assert "error" not in asked, asked
    assert {"values", "updates"} <= set(asked["kinds"]), asked["kinds"]
    # Each node's update, and the interrupt as Agent Chat UI reads it from the stream.
    assert {"intake", "plan", "check_plan", "__interrupt__"} <= set(asked["nodes"]), asked["nodes"]
    assert asked["next"] == ["approve"] and asked["status"] == "awaiting_approval", asked
    [request] = asked["interrupts"]
    assert [a["name"] for a in request["action_requests"]] == ["refund_charge", "send_email"]

    # Reject, with a message, one decision per action and no digest: nothing happens.
    why = "Not a duplicate: the customer ordered twice"
    rejected = js_client(
        script, "stream", url=server.url, threadId=asked["thread_id"],
        command={"resume": {"decisions": [{"type": "reject", "message": why}] * 2}},
    )  # fmt: skip
    assert "error" not in rejected, rejected
    assert rejected["status"] == "refused" and rejected["next"] == [], rejected["ai_messages"]
    said = rejected["ai_messages"][-1]
    assert said.startswith("Rejected by") and why in said, said
    assert backend.refunds() == [] and backend.outbox() == []

    # Edit (the arguments as the UI's form sends them: every value a string), approve the rest.
    again = js_client(script, "stream", url=server.url, input=ask)
    [request] = again["interrupts"]
    refund = request["action_requests"][0]
    edited = {"name": refund["name"], "args": {k: str(v) for k, v in refund["args"].items()}}
    assert edited["args"]["amount"] == "49"  # as a JavaScript number prints
    decisions = [{"type": "edit", "edited_action": edited}, {"type": "approve"}]
    done = js_client(
        script, "stream", url=server.url, threadId=again["thread_id"],
        command={"resume": {"decisions": decisions}},
    )  # fmt: skip
    assert "error" not in done, done
    assert done["status"] == "done", done
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]
    # What the client shows: an AI message in words, streamed too (messages mode).
    answer = done["ai_messages"][-1]
    assert "49.00" in answer and "CH-3002" in answer and "ada@example.com" in answer, answer
    assert "{'" not in answer, answer  # no Python dict reprs
    assert "messages" in done["kinds"] and answer in done["streamed_ai"].values(), done

    found = js_client(script, "search", url=server.url, metadata={}, limit=50)
    ids = {t["thread_id"] for t in found["threads"]}
    assert {asked["thread_id"], again["thread_id"]} <= ids, found

    # The served runs' spans reached the OTLP receiver, with Keel's ids and the GenAI shape.
    _, received = otlp
    thread = again["thread_id"]

    def complete(spans: list[dict[str, Any]]) -> bool:
        mine = [s for s in spans if s["attributes"].get("gen_ai.conversation.id") == thread]
        return {"invoke_workflow keel", "execute_tool send_email"} <= {s["name"] for s in mine}

    spans = [
        s for s in received.wait(complete)
        if s["attributes"].get("gen_ai.conversation.id") == thread
    ]  # fmt: skip
    roots = [s for s in spans if s["name"] == "invoke_workflow keel"]
    assert [r["attributes"]["keel.mode"] for r in roots] == ["run", "resume"], roots
    # One Keel run: named by the server's id of the request's run, as `keel trace` shows it.
    assert {r["attributes"]["keel.run_id"] for r in roots} == {again["run_id"]}, roots
    refund_span = one(spans, "execute_tool refund_charge")
    assert refund_span["attributes"]["keel.tool.outcome"] == "ok"
    assert refund_span["attributes"]["gen_ai.operation.name"] == "execute_tool"
    names = {s["name"] for s in spans}
    assert {"invoke_agent plan", "invoke_agent approve", "invoke_agent execute"} <= names, names
    [answered] = [e for e in roots[1]["events"] if e["name"] == "keel.approval.answered"]
    assert answered["attributes"]["keel.approval.decisions"] == ["edit", "approve"]
