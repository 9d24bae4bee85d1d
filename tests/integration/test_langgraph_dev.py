"""`langgraph dev` serves Keel's graph: the SDK drives a request to its approval and resumes it.

A real server process on a free port (2024 is often taken), the real LangGraph SDK client, the
graph loaded from langgraph.json exactly as Studio loads it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client

from tests.conftest import REFUND_REQUEST
from tools.demo.backend import DemoBackend

ROOT = Path(__file__).resolve().parents[2]
LANGGRAPH = str(Path(sys.executable).parent / "langgraph")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(home: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false", LANGGRAPH_CLI_NO_ANALYTICS="1")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [LANGGRAPH, "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser",
         "--no-reload"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited:\n{(tmp_path / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"langgraph dev did not start:\n{(tmp_path / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.integration
def test_studio_server_runs_a_request_to_approval_and_resumes_it(server: str, home: Path) -> None:
    client = get_sync_client(url=server)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "keel", input={"request": REFUND_REQUEST})

    state = client.threads.get_state(thread)
    assert state["next"] == ["approve"]
    assert state["values"]["status"] == "awaiting_approval"
    (interrupt,) = [i for task in state["tasks"] for i in task["interrupts"]]
    request = interrupt["value"]
    assert [a["name"] for a in request["action_requests"]] == ["refund_charge", "send_email"]
    assert request["action_requests"][0]["args"]["amount"] == 49.0
    assert request["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject"]
    assert len(request["digests"]) == 2

    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}], "reviewer": "studio"}
    client.runs.wait(thread, "keel", command={"resume": answer})
    final = client.threads.get_state(thread)
    assert final["values"]["status"] == "done"
    backend = DemoBackend(home / "demo.sqlite")
    assert [(r["charge_id"], r["amount"]) for r in backend.refunds()] == [("CH-3002", 49.0)]
    assert [m["recipient"] for m in backend.outbox()] == ["ada@example.com"]
