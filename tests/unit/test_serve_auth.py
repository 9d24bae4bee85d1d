"""The engine's auth hook (graph/serve_auth.py) and its config (aegra.json), without a server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import Auth

from graph.context import _ProcessContext
from graph.serve_auth import make_auth, parse_tokens, user_for
from keel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _authenticate(auth: Auth, headers: dict[Any, Any]) -> Any:
    handler = auth._authenticate_handler
    assert handler is not None
    return asyncio.run(handler(headers))  # type: ignore[arg-type,call-arg]


def test_tokens_parse_into_users_and_bad_pairs_are_one_clear_error() -> None:
    assert parse_tokens("alice=aaaaaaaa,bob = bbbbbbbb ,") == {
        "aaaaaaaa": "alice",
        "bbbbbbbb": "bob",
    }
    for bad in ("alice", "=aaaaaaaa", "alice=short", "a=aaaaaaaa,b=aaaaaaaa"):
        with pytest.raises(ConfigError, match="KEEL_API_TOKENS"):
            parse_tokens(bad)


def test_only_a_bearer_token_someone_holds_names_a_user() -> None:
    tokens = {"aaaaaaaa": "alice"}
    assert user_for("Bearer aaaaaaaa", tokens) == "alice"
    assert user_for("bearer aaaaaaaa", tokens) == "alice"
    for header in (None, "", "Bearer", "Bearer aaaaaaab", "Basic aaaaaaaa", "aaaaaaaa"):
        assert user_for(header, tokens) is None


def test_the_hook_answers_401_without_a_token_and_names_team_and_person_with_one() -> None:
    auth = make_auth({"aaaaaaaa": "alice"}, team="support")
    with pytest.raises(Auth.exceptions.HTTPException) as refused:
        _authenticate(auth, {"accept": "application/json"})
    assert refused.value.status_code == 401
    with pytest.raises(Auth.exceptions.HTTPException):
        _authenticate(auth, {"authorization": "Bearer wrong-token"})
    # Aegra passes str keys, LangGraph's own server bytes keys.
    for headers in ({"authorization": "Bearer aaaaaaaa"}, {b"Authorization": b"Bearer aaaaaaaa"}):
        user = _authenticate(auth, headers)
        assert (user["identity"], user["display_name"], user["keel_user"]) == (
            "support",
            "alice",
            "alice",
        )


def test_with_no_tokens_configured_every_request_is_refused() -> None:
    auth = make_auth({})
    with pytest.raises(Auth.exceptions.HTTPException) as refused:
        _authenticate(auth, {"authorization": "Bearer anything-at-all"})
    assert refused.value.status_code == 401


def test_aegra_json_serves_langgraph_json_s_graph_with_its_allow_list_and_the_hook() -> None:
    aegra = json.loads((ROOT / "aegra.json").read_text())
    langgraph = json.loads((ROOT / "langgraph.json").read_text())
    assert aegra["graphs"] == {"keel": "./graph/studio.py:engine_graph"}
    assert langgraph["graphs"] == {"keel": "graph.studio:graph"}
    assert aegra["auth"] == {"path": "./graph/serve_auth.py:auth"}
    assert aegra["checkpointer"]["serde"] == langgraph["checkpointer"]["serde"]
    assert aegra["checkpointer"]["durability"] == "sync"  # TRAPS.md, "Exactly once"
    assert (ROOT / "graph/studio.py").exists() and (ROOT / "graph/serve_auth.py").exists()


def test_a_process_builds_its_context_once_however_many_runs_ask_at_once() -> None:
    started = threading.Barrier(8)
    built: list[object] = []

    def build() -> Any:
        time.sleep(0.05)  # long enough that, unlocked, every asker would build its own
        built.append(object())
        return built[-1]

    shared = _ProcessContext(build)
    seen: list[object] = []

    def ask() -> None:
        started.wait()
        seen.append(shared.get())

    askers = [threading.Thread(target=ask) for _ in range(8)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert shared.builds == 1 and len(built) == 1
    assert len(seen) == 8 and all(s is built[0] for s in seen)
