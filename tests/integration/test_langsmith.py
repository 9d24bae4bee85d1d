"""LangSmith tracing through the real SDK, against a local HTTP server standing in for LangSmith.

A ``keel run`` process traces with ``LANGSMITH_TRACING=true`` and ``LANGSMITH_ENDPOINT`` on
loopback; the server keeps what the SDK actually POSTs. The runs must carry the agent names,
the thread and Keel run ids, point at the flight record, and hold no sensitive field.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.settings import Settings
from observability.record_events import RunStarted
from stores.flight_record import SqliteFlightRecord
from tests.conftest import BILLING_ADDRESS, BILLING_REQUEST, EMAIL_PATTERN, REFUND_REQUEST

KEEL = str(Path(sys.executable).parent / "keel")


class FakeLangSmith(BaseHTTPRequestHandler):
    """Answers ``/info`` and keeps every run the SDK creates or updates, by id."""

    runs: dict[str, dict[str, Any]]
    paths: list[str]

    def log_message(self, *args: Any) -> None:
        return None

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.paths.append(f"GET {self.path}")
        if self.path.startswith("/info"):
            # No zstd flag: the SDK sends plain multipart, with its default batch settings.
            self._reply(200, {"version": "0.10.0", "instance_flags": {}})
        else:
            self._reply(404, {"detail": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.paths.append(f"POST {self.path}")
        if self.path.startswith("/runs/multipart"):
            self._multipart(body)
        elif self.path.startswith("/runs/batch"):
            batch = json.loads(body)
            for run in batch.get("post", []) + batch.get("patch", []):
                self.runs.setdefault(run["id"], {}).update(run)
        self._reply(202, {})

    def _multipart(self, body: bytes) -> None:
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition") or ""
            value = json.loads(part.get_payload(decode=True) or b"null")
            _, run_id, *field = str(name).split(".")
            run = self.runs.setdefault(run_id, {"id": run_id})
            if field:
                run[field[0]] = value
            else:
                run.update(value)


@pytest.fixture
def langsmith() -> Iterator[tuple[str, FakeLangSmith]]:
    handler = type("Handler", (FakeLangSmith,), {"runs": {}, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_a_traced_run_posts_agent_runs_with_the_record_ids(
    home: Path, langsmith: tuple[str, Any]
) -> None:
    endpoint, server = langsmith
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_", "LANG"))}
    env.update(
        KEEL_HOME=str(home),
        KEEL_SENSITIVE_FIELDS='["request", "token"]',
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=endpoint,
        LANGSMITH_API_KEY="lsv2-fake-key-for-a-local-server",
        LANGSMITH_PROJECT="keel-test",
    )
    done = subprocess.run(
        [KEEL, "run", REFUND_REQUEST, "--json"],
        env=env, cwd=home, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "awaiting_approval"

    runs: dict[str, dict[str, Any]] = server.runs
    assert any(p.startswith("POST /runs") for p in server.paths), server.paths
    by_name: dict[str, list[dict[str, Any]]] = {}
    for run in runs.values():
        by_name.setdefault(run.get("name", ""), []).append(run)

    # One run per agent node, each carrying the thread and the Keel run id.
    for agent in ("intake", "retrieve", "plan", "check_plan", "approve"):
        assert agent in by_name, sorted(by_name)
        metadata = by_name[agent][0]["extra"]["metadata"]
        assert metadata["thread_id"] == outcome["thread_id"]
        assert metadata["keel_run_id"] == outcome["run_id"]
        assert metadata["langgraph_node"] == agent
        assert f"keel-run:{outcome['run_id']}" in by_name[agent][0]["tags"]
        assert f"agent:{agent}" in by_name[agent][0]["tags"]

    # The trace's root run is the one the record names; every agent run is in that trace.
    [root] = by_name["keel"]
    store = SqliteFlightRecord(Settings(home=home, _env_file=None).records_db)  # type: ignore[call-arg]
    started = [e.payload for e in store.events(outcome["run_id"]) if e.kind == "run_started"]
    assert isinstance(started[0], RunStarted) and root["id"] == started[0].trace_id
    assert all(r["trace_id"] == root["id"] for name in ("intake", "plan") for r in by_name[name])

    # The request was configured as sensitive: it never left the process.
    posted = json.dumps(list(runs.values()))
    assert REFUND_REQUEST not in posted
    assert root["inputs"]["request"] == "[redacted]"


@pytest.mark.integration
def test_a_sensitive_pattern_keeps_an_address_out_of_every_posted_run(
    home: Path, langsmith: tuple[str, Any]
) -> None:
    endpoint, server = langsmith
    address = BILLING_ADDRESS
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_", "LANG"))}
    env.update(
        KEEL_HOME=str(home),
        KEEL_SENSITIVE_PATTERNS=json.dumps([EMAIL_PATTERN]),
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=endpoint,
        LANGSMITH_API_KEY="lsv2-fake-key-for-a-local-server",
        LANGSMITH_PROJECT="keel-test",
    )
    done = subprocess.run(
        [KEEL, "run", BILLING_REQUEST, "--json"],
        env=env, cwd=home, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)

    runs: dict[str, dict[str, Any]] = server.runs
    names = {run.get("name") for run in runs.values()}
    assert {"keel", "intake", "plan", "check_plan"} <= names, sorted(map(str, names))
    # Inputs, outputs (plans as nested models included), errors and metadata of every run.
    posted = json.dumps(list(runs.values()))
    assert address not in posted
    assert "Please update the billing e-mail of C-1002 to [redacted]" in posted
    [plan] = [r for r in runs.values() if r.get("name") == "plan" and r.get("outputs")]
    assert plan["outputs"]["plan"]["steps"][0]["args"]["email"] == "[redacted]"
    # ... and the record holds no more of it than the trace.
    store = SqliteFlightRecord(Settings(home=home, _env_file=None).records_db)  # type: ignore[call-arg]
    assert all(address not in e.model_dump_json() for e in store.events(outcome["run_id"]))


@pytest.mark.integration
def test_a_traced_model_call_carries_its_usage_cost_and_reservation(
    home: Path, langsmith: tuple[str, Any]
) -> None:
    """The planner's model (a costly fake over HTTP) is traced with the provider's token usage,
    its cost at Keel's prices, and the meter's reservation and budgets in its run metadata."""
    from evals.budgets_eval import MODEL, PRICES
    from evals.costly_server import costly_server

    endpoint, server = langsmith
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_", "LANG"))}
    with costly_server(PRICES, MODEL) as model:
        env.update(
            KEEL_HOME=str(home),
            KEEL_PLANNER_MODEL=MODEL,
            KEEL_OPENAI_BASE_URL=model.url,
            KEEL_MODEL_PRICES=json.dumps({MODEL: {"input": 2.5, "output": 10.0}}),
            KEEL_BUDGETS='[{"scope": "thread", "calls": 1}]',
            KEEL_MODEL_MAX_RETRIES="0",
            LANGSMITH_TRACING="true",
            LANGSMITH_ENDPOINT=endpoint,
            LANGSMITH_API_KEY="lsv2-fake-key-for-a-local-server",
            LANGSMITH_PROJECT="keel-test",
        )
        done = subprocess.run(
            [KEEL, "run", f"{REFUND_REQUEST} (ref loop-1)", "--json"],
            env=env, cwd=home, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        billed = model.bills["loop-1"]
    assert done.returncode == 0, done.stderr
    assert len(billed) == 1  # the budget allowed one call

    llm = [r for r in server.runs.values() if r.get("run_type") == "llm"]
    assert len(llm) == 1, [r.get("name") for r in server.runs.values()]
    metadata = llm[0]["extra"]["metadata"]
    usage = metadata["usage_metadata"]
    assert usage["input_tokens"] + usage["output_tokens"] == billed[0][0]
    assert metadata["keel_cost_usd"] == billed[0][1] / 1_000_000
    assert metadata["keel_reservation_id"].startswith("call-")
    assert metadata["keel_role"] == "planner"
    assert metadata["keel_budgets"] == [f"thread:{json.loads(done.stdout)['thread_id']}:lifetime:"]
