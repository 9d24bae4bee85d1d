"""The engine target: Keel served by Aegra, attacked through the LangGraph SDK or raw HTTP.

One engine (``keel.serve.engine``: PostgreSQL, Redis, Chroma, an API process and a worker
process) serves every attack; each user holds a token of ``KEEL_API_TOKENS`` with its roles
(``alice=TOKEN:requester,...``). Two transports speak the same Agent Protocol calls: ``sdk``
(``langgraph_sdk.get_sync_client``, the key as the SDK's ``api_key`` sends it: ``X-Api-Key``,
as Agent Chat UI does) and ``http`` (plain JSON requests, ``Authorization: Bearer``).
A refusal is its HTTP status; a run is followed until it ends (``interrupted`` and ``success``
are the ends of a run that worked).
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from evals.hostile.target import Reply, Target, interrupts_of, view_of
from graph.context import KeelContext
from keel.engine import ASSISTANT, relay_events
from keel.errors import ConfigError
from keel.serve import AegraServer, Engine, engine
from keel.servers import free_port

Transport = Literal["sdk", "http"]

ROLES = {
    "alice": "requester",
    "bob": "requester",
    "rita": "reviewer",
    "olga": "operator",
    "dave": "",  # no roles named: a requester and a reviewer
}
"""The suite's users and the roles ``KEEL_API_TOKENS`` gives them."""
STRANGER = "mallory"
"""A user who sends a token nobody holds."""
RUN_ENDS = ("success", "interrupted")
RUN_TIMEOUT_S = 120.0


class _Http:
    """The Agent Protocol as plain HTTP requests."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=url, headers=headers, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.client.request(method, path, json=body)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def create_thread(self) -> dict[str, Any]:
        return dict(self.call("POST", "/threads", {}))

    def create_run(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/threads/{thread}/runs",
                              {"assistant_id": ASSISTANT, **body}))  # fmt: skip

    def get_run(self, thread: str, run: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/threads/{thread}/runs/{run}"))

    def list_runs(self, thread: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/threads/{thread}/runs"))

    def get_state(self, thread: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/threads/{thread}/state"))

    def history(self, thread: str) -> list[dict[str, Any]]:
        return list(self.call("POST", f"/threads/{thread}/history", {"limit": 100}))

    def update_state(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/threads/{thread}/state", body))

    def delete(self, thread: str) -> None:
        self.call("DELETE", f"/threads/{thread}")


class _Sdk:
    """The same calls through the LangGraph SDK's sync client."""

    def __init__(self, url: str, headers: dict[str, str], api_key: str | None) -> None:
        from langgraph_sdk import get_sync_client

        self.client = get_sync_client(url=url, api_key=api_key, headers=headers)

    def create_thread(self) -> dict[str, Any]:
        return dict(self.client.threads.create())

    def create_run(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.runs.create(thread, ASSISTANT, **body))

    def get_run(self, thread: str, run: str) -> dict[str, Any]:
        return dict(self.client.runs.get(thread, run))

    def list_runs(self, thread: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.client.runs.list(thread)]

    def get_state(self, thread: str) -> dict[str, Any]:
        return dict(self.client.threads.get_state(thread))

    def history(self, thread: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.client.threads.get_history(thread, limit=100)]

    def update_state(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.threads.update_state(thread, **body))

    def delete(self, thread: str) -> None:
        self.client.threads.delete(thread)


class EngineTarget:
    """``Target`` over a running engine, one transport, the users' credentials."""

    def __init__(
        self,
        running: Engine,
        transport: Transport,
        credentials: dict[str, str],
        *,
        url: str | None = None,
        api_key_header: bool = False,
        relay_context: Callable[[], KeelContext] | None = None,
    ) -> None:
        self.running = running
        self.settings = running.settings
        self.transport = transport
        self.url = url or running.api.url
        self.name = f"engine:{transport}"
        self.credentials = credentials
        self.api_key_header = api_key_header
        self._relay_context = relay_context
        self._clients: dict[str, Any] = {}

    def _client(self, by: str) -> Any:
        if by not in self._clients:
            token = self.credentials.get(by)
            if by == STRANGER:
                token = "not-a-token-" + secrets.token_hex(8)
            if self.transport == "sdk":
                use_key = token is not None and self.api_key_header
                headers = {"Authorization": f"Bearer {token}"} if token and not use_key else {}
                self._clients[by] = _Sdk(self.url, headers, token if use_key else None)
            else:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                self._clients[by] = _Http(self.url, headers)
        return self._clients[by]

    @staticmethod
    def _refused(err: Exception) -> Reply:
        if isinstance(err, httpx.HTTPStatusError):
            detail = err.response.text[:200]
            return Reply(False, code=err.response.status_code, error=detail)
        return Reply(False, error=f"{type(err).__name__}: {err}"[:300])

    def _wait(self, client: Any, thread: str, run: dict[str, Any]) -> Reply:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while run.get("status") in ("pending", "running"):
            if time.monotonic() > deadline:
                return Reply(False, code=200, error=f"run still {run.get('status')}")
            time.sleep(0.1)
            run = client.get_run(thread, run["run_id"])
        status = str(run.get("status"))
        if status in RUN_ENDS:
            return Reply(True, code=200, data=run)
        return Reply(False, code=200, error=f"the run ended {status}", data=run)

    def start(self, by: str, payload: dict[str, Any]) -> Reply:
        client = self._client(by)
        try:
            thread = client.create_thread()["thread_id"]
        except Exception as err:  # a refusal is the answer
            return self._refused(err)
        reply = self.run(by, thread, input=payload)
        reply.data = thread
        return reply

    def run(
        self,
        by: str,
        thread: str,
        *,
        input: dict[str, Any] | None = None,
        command: dict[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        client = self._client(by)
        body: dict[str, Any] = {"input": input}
        if command is not None:
            body["command"] = command
        if checkpoint_id is not None:
            body["checkpoint_id"] = checkpoint_id
        try:
            run = client.create_run(thread, body)
            return self._wait(client, thread, run)
        except Exception as err:  # as start()
            return self._refused(err)

    def state(self, by: str, thread: str) -> Reply:
        try:
            state = self._client(by).get_state(thread)
        except Exception as err:  # an unreadable thread is what the suite looks for
            return self._refused(err)
        interrupts = [i.get("value") for i in interrupts_of(state)]
        values = state.get("values") or {}
        if not isinstance(values, dict):
            values = {}
        errors = [str(t.get("error")) for t in state.get("tasks") or [] if t.get("error")]
        return Reply(True, code=200, data=view_of(values, list(state.get("next") or []),
                                                  interrupts, errors))  # fmt: skip

    def history(self, by: str, thread: str) -> Reply:
        try:
            rows = self._client(by).history(thread)
        except Exception as err:  # as state()
            return self._refused(err)
        return Reply(True, code=200, data=[
            {"checkpoint_id": (r.get("checkpoint") or {}).get("checkpoint_id"),
             "next": list(r.get("next") or [])} for r in rows
        ])  # fmt: skip

    def update_state(
        self,
        by: str,
        thread: str,
        values: dict[str, Any] | None,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Reply:
        body: dict[str, Any] = {"values": values}
        if as_node is not None:
            body["as_node"] = as_node
        if checkpoint_id is not None:
            body["checkpoint_id"] = checkpoint_id
        try:
            written = self._client(by).update_state(thread, body)
        except Exception as err:  # a refused write
            return self._refused(err)
        checkpoint = (written or {}).get("checkpoint") or {}
        return Reply(True, code=200, data=checkpoint.get("checkpoint_id"))

    def delete(self, by: str, thread: str) -> Reply:
        try:
            self._client(by).delete(thread)
        except Exception as err:  # as update_state()
            return self._refused(err)
        return Reply(True, code=204)

    def relay(self) -> None:
        """``keel events`` through the engine, as an operator; then wait for the woken runs."""
        from langgraph_sdk import get_sync_client

        if self._relay_context is None:
            return
        operator = get_sync_client(
            url=self.url, api_key=None,
            headers={"Authorization": f"Bearer {self.credentials['olga']}"},
        )  # fmt: skip
        report = relay_events(operator, self._relay_context())
        client = self._client("olga")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for thread in {t for event in report for t in event["woke"]}:
            while time.monotonic() < deadline and any(
                r.get("status") in ("pending", "running") for r in client.list_runs(thread)
            ):
                time.sleep(0.1)

    @contextlib.contextmanager
    def misconfigured(self, tokens: str) -> Iterator[Target | Reply]:
        """A server process of this deployment (an API and one worker loop) started with
        ``KEEL_API_TOKENS=tokens``; stopped on exit."""
        with tempfile.TemporaryDirectory(prefix="keel-hostile-") as tmp:
            server = AegraServer("misconfigured", free_port(), Path(tmp) / "aegra.log")
            env = {**self.running.env, "KEEL_API_TOKENS": tokens, "WORKER_COUNT": "1"}
            try:
                server.start(env)
                try:
                    server.wait_ready(timeout_s=90)
                except ConfigError as err:
                    yield Reply(False, error=f"refused to start: {str(err)[-200:]}")
                    return
                yield EngineTarget(self.running, self.transport, {}, url=server.url)
            finally:
                server.stop()


@contextlib.contextmanager
def hostile_engine(say: Callable[[str], None] | None = None) -> Iterator[list[EngineTarget]]:
    """Start one engine for the suite, its users' tokens with their roles; yield its two
    targets (the SDK, sending the key as ``X-Api-Key``; raw HTTP, as a bearer token)."""
    users = [f"{user}:{roles}" if roles else user for user, roles in ROLES.items()]
    with engine(workers=1, worker_count=3, durable=False, users=users, say=say) as running:
        contexts: list[KeelContext] = []

        def relay_context() -> KeelContext:
            if not contexts:
                contexts.append(KeelContext.from_settings(running.settings))
            return contexts[0]

        yield [
            EngineTarget(running, transport, dict(running.tokens), api_key_header=True,
                         relay_context=relay_context)
            for transport in ("sdk", "http")
        ]  # fmt: skip
