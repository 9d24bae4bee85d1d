"""The engine's auth hook (graph/serve_auth.py) and its config (aegra.json), without a server."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import Auth
from pydantic import ValidationError

from graph.context import _ProcessContext
from graph.serve_auth import configuration_error, make_auth, parse_tokens, user_for
from keel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _authenticate(auth: Auth, headers: dict[Any, Any]) -> Any:
    handler = auth._authenticate_handler
    assert handler is not None
    return asyncio.run(handler(headers))  # type: ignore[arg-type,call-arg]


TOKENS = (
    "alice=token-alice:requester,bob=token-bob:requester,rita=token-rita:reviewer,"
    "olga=token-olga:operator,carl=token-carl"
)


def test_tokens_parse_into_users_with_roles_and_bad_pairs_are_one_clear_error() -> None:
    users = parse_tokens("alice=aaaaaaaa,bob = bbbbbbbb:reviewer ,olga=cccccccc:operator+reviewer")
    assert {t: (u.name, sorted(u.roles)) for t, u in users.items()} == {
        "aaaaaaaa": ("alice", ["requester", "reviewer"]),
        "bbbbbbbb": ("bob", ["reviewer"]),
        "cccccccc": ("olga", ["operator", "reviewer"]),
    }
    assert users["cccccccc"].can("requester") and not users["bbbbbbbb"].can("requester")
    for bad in (
        "alice",
        "=aaaaaaaa",
        "alice=short",
        "dave=short",
        "a=aaaaaaaa,b=aaaaaaaa",
        "a=aaaaaaaa,a=bbbbbbbb",
        "alice=aaaaaaaa:admin",
        "alice=aaaaaaaa:",
        "alice=aaaa aaaa",
        "al ice=aaaaaaaa",
    ):
        with pytest.raises(ValueError, match=r"^KEEL_API_TOKENS: ") as refused:
            parse_tokens(bad)
        assert "aaaaaaaa" not in str(refused.value) and "short" not in str(refused.value)
        assert "\n" not in str(refused.value)


def test_settings_refuse_a_malformed_token_setting_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_API_TOKENS", "dave=short")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert configuration_error(refused.value).startswith("api_tokens: KEEL_API_TOKENS: ")
    assert "short" not in str(refused.value)
    monkeypatch.setenv("KEEL_API_TOKENS", TOKENS)
    users = Settings(_env_file=None).api_users()  # type: ignore[call-arg]
    assert sorted(u.name for u in users.values()) == ["alice", "bob", "carl", "olga", "rita"]


@pytest.mark.parametrize("bad", ["dave=short", "dave", "alice=aaaaaaaa:root", "a=x y z w v u"])
def test_the_module_never_raises_at_import_and_a_bad_setting_refuses_every_request(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break 1: Aegra swallows an import error and serves everyone as anonymous."""
    monkeypatch.setenv("KEEL_API_TOKENS", bad)
    # Loaded the way Aegra loads it (aegra_api.core.auth_middleware._load_from_file).
    spec = importlib.util.spec_from_file_location("auth_module_probe", ROOT / "graph/serve_auth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.auth, Auth)
    for headers in ({}, {"authorization": "Bearer short"}, {"x-api-key": "aaaaaaaa"}):
        with pytest.raises(Auth.exceptions.HTTPException) as refused:
            _authenticate(module.auth, headers)
        assert refused.value.status_code == 401
        assert "KEEL_API_TOKENS" in str(refused.value.detail)
    with pytest.raises(Auth.exceptions.HTTPException):
        asyncio.run(module.auth._global_handlers[-1](ctx=_ctx("olga", "threads", "read"), value={}))


def test_a_token_is_read_from_the_bearer_header_or_x_api_key() -> None:
    users = parse_tokens(TOKENS)
    assert user_for({"authorization": "Bearer token-alice"}, users).name == "alice"  # type: ignore[union-attr]
    assert user_for({"Authorization": "bearer  token-alice "}, users).name == "alice"  # type: ignore[union-attr]
    assert user_for({"X-Api-Key": "token-rita"}, users).name == "rita"  # type: ignore[union-attr]
    assert user_for({b"x-api-key": b"token-rita"}, users).name == "rita"  # type: ignore[union-attr]
    # The SDK adds LANGSMITH_API_KEY from the environment as X-Api-Key: an unknown one is ignored.
    both = {"authorization": "Bearer token-olga", "x-api-key": "lsv2_pt_not_ours"}
    assert user_for(both, users).name == "olga"  # type: ignore[union-attr]
    for headers in (
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer token-alicf"},
        {"authorization": "Basic token-alice"},
        {"authorization": "token-alice"},
        {"x-api-key": ""},
        {"x-api-key": "token-alic"},
        {"authorization": "Bearer token-alice", "x-api-key": "token-bob"},  # two users: nobody
    ):
        assert user_for(headers, users) is None, headers


def test_the_hook_answers_401_without_a_token_and_names_team_person_and_roles_with_one() -> None:
    auth = make_auth(parse_tokens(TOKENS), team="support")
    with pytest.raises(Auth.exceptions.HTTPException) as refused:
        _authenticate(auth, {"accept": "application/json"})
    assert refused.value.status_code == 401
    with pytest.raises(Auth.exceptions.HTTPException):
        _authenticate(auth, {"authorization": "Bearer wrong-token"})
    # Aegra passes str keys, LangGraph's own server bytes keys.
    for headers in (
        {"authorization": "Bearer token-carl"},
        {b"Authorization": b"Bearer token-carl"},
        {"x-api-key": "token-carl"},
    ):
        user = _authenticate(auth, headers)
        assert (user["identity"], user["display_name"], user["keel_user"]) == (
            "support",
            "carl",
            "carl",
        )
        assert user["permissions"] == user["keel_roles"] == ["requester", "reviewer"]
        assert user["is_authenticated"] is True


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


# Who may do what: every (resource, action) Aegra authorizes, for each role (docs/serving.md).
# Alice and Bob are requesters, Rita a reviewer, Olga an operator; thread "t-a" is Alice's,
# "t-new" does not exist. An outcome is "ok", "filter" (a metadata filter: the caller's own
# threads), or the status of the refusal.

USERS = parse_tokens(TOKENS)
ROLE_OF = {u.name: sorted(u.roles) for u in USERS.values()}
THREADS: dict[str, dict[str, Any]] = {
    "t-a": {"keel_owner": "alice", "owner": "keel"},
    "t-s": {"keel_owner": "alice", "owner": "keel", "keel_shared_with": ["bob"]},
}
A, NEW, SHARED = {"thread_id": "t-a"}, {"thread_id": "t-new"}, {"thread_id": "t-s"}
ASK = {"messages": [{"type": "human", "content": "refund the duplicate charge"}]}
APPROVE = {"resume": {"decisions": [{"type": "approve"}]}}
EVERYONE_BUT_OLGA_403 = {"alice": 403, "bob": 403, "rita": 403, "olga": "ok"}


def _run(**fields: Any) -> dict[str, Any]:
    return {"assistant_id": "keel", **A, **fields}


def _v2(method: str, **params: Any) -> dict[str, Any]:
    return {"id": 1, "method": method, "params": params, **A}


CASES: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    ("create a thread", "threads", "create", {"metadata": {"keel_owner": "olga"}},
     {"alice": "ok", "bob": "ok", "rita": 403, "olga": "ok"}),
    ("create a thread with someone's id", "threads", "create", dict(A),
     {"alice": "ok", "bob": 409, "rita": 403, "olga": "ok"}),
    ("read a thread, its state, history, a run", "threads", "read", dict(A),
     {"alice": "ok", "bob": 404, "rita": "ok", "olga": "ok"}),
    ("read a thread that does not exist", "threads", "read", dict(NEW),
     {"alice": 404, "bob": 404, "rita": 404, "olga": "ok"}),
    ("search threads", "threads", "search", {"status": "interrupted"},
     {"alice": "filter", "bob": "filter", "rita": "ok", "olga": "ok"}),
    ("list a thread's runs", "threads", "search", dict(A),
     {"alice": "filter", "bob": 404, "rita": "ok", "olga": "ok"}),
    ("update_state", "threads", "update", {**A, "values": {"cursor": -2}, "as_node": "approve"},
     EVERYONE_BUT_OLGA_403),
    ("update_state erasing a list", "threads", "update",
     {**A, "values": {"rejected": {"__overwrite__": []}}}, EVERYONE_BUT_OLGA_403),
    ("update_state at a checkpoint (Studio's copy)", "threads", "update",
     {**A, "checkpoint_id": "1ef-0", "as_node": "__copy__"}, EVERYONE_BUT_OLGA_403),
    ("POST /state with nothing to write (a read)", "threads", "update", {**A, "subgraphs": True},
     {"alice": "ok", "bob": 404, "rita": "ok", "olga": "ok"}),
    ("cancel a run", "threads", "update", {**A, "run_id": "r-1"},
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("edit a thread's metadata", "threads", "update", {**A, "metadata": {"title": "x"}},
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("hand a thread to someone else", "threads", "update", {**A, "metadata": {"keel_owner": "bob"}},
     EVERYONE_BUT_OLGA_403),
    ("forge a thread's status label", "threads", "update",
     {**A, "metadata": {"keel_status": "done"}}, EVERYONE_BUT_OLGA_403),
    ("share a thread", "threads", "update", {**A, "metadata": {"keel_shared_with": ["bob"]}},
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("share a thread with a malformed list", "threads", "update",
     {**A, "metadata": {"keel_shared_with": "bob"}}, {"alice": 422, "bob": 422, "rita": 422,
                                                      "olga": "ok"}),
    ("read a thread shared with you", "threads", "read", dict(SHARED),
     {"alice": "ok", "bob": "ok", "rita": "ok", "olga": "ok"}),
    ("write to a thread shared with you", "threads", "create_run",
     {"assistant_id": "keel", **SHARED, "input": {"request": "refund it"}},
     {"alice": "ok", "bob": 403, "rita": 403, "olga": "ok"}),
    ("cancel the team's runs by status", "threads", "update", {"status": "all"},
     EVERYONE_BUT_OLGA_403),
    ("delete a thread", "threads", "delete", dict(A), EVERYONE_BUT_OLGA_403),
    ("prune threads", "threads", "delete", {}, EVERYONE_BUT_OLGA_403),
    ("run with input", "threads", "create_run", _run(input=ASK),
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("run with a request", "threads", "create_run", _run(input={"request": "refund it"}),
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("answer with command.resume", "threads", "create_run", _run(command=APPROVE),
     {"alice": "ok", "bob": 404, "rita": "ok", "olga": "ok"}),
    ("command.update", "threads", "create_run",
     _run(command={"resume": {}, "update": {"results": {"__overwrite__": []}, "cursor": -1}}),
     EVERYONE_BUT_OLGA_403),
    ("command.goto", "threads", "create_run", _run(command={"goto": "execute"}),
     EVERYONE_BUT_OLGA_403),
    ("run from a checkpoint_id", "threads", "create_run",
     _run(checkpoint_id="1ef00000-0000-0000-0000-000000000000"), EVERYONE_BUT_OLGA_403),
    ("run from a checkpoint", "threads", "create_run",
     _run(command=APPROVE, checkpoint={"checkpoint_id": "1ef-0"}), EVERYONE_BUT_OLGA_403),
    ("run from a checkpoint named in config", "threads", "create_run",
     _run(input=ASK, config={"configurable": {"checkpoint_id": "1ef-0"}}), EVERYONE_BUT_OLGA_403),
    ("config naming the user", "threads", "create_run",
     _run(command=APPROVE, config={"configurable": {"langgraph_auth_user": {"identity": "x"}}}),
     EVERYONE_BUT_OLGA_403),
    ("config's recursion limit", "threads", "create_run",
     _run(input=ASK, config={"recursion_limit": 1}), EVERYONE_BUT_OLGA_403),
    ("a run's context", "threads", "create_run", _run(input=ASK, context={"x": 1}),
     EVERYONE_BUT_OLGA_403),
    ("breakpoints", "threads", "create_run", _run(input=ASK, interrupt_before=["execute"]),
     EVERYONE_BUT_OLGA_403),
    ("durability exit", "threads", "create_run", _run(input=ASK, durability="exit"),
     EVERYONE_BUT_OLGA_403),
    ("checkpoint_during", "threads", "create_run", _run(input=ASK, checkpoint_during=False),
     EVERYONE_BUT_OLGA_403),
    ("multitask rollback", "threads", "create_run",
     _run(command=APPROVE, multitask_strategy="rollback"), EVERYONE_BUT_OLGA_403),
    ("break 7: unreadable message", "threads", "create_run",
     _run(input={"messages": [{"type": "human", "content": 5}]}),
     {"alice": 422, "bob": 422, "rita": 422, "olga": 422}),
    ("unknown input key", "threads", "create_run", _run(input={"request": "x", "cursor": -2}),
     {"alice": 422, "bob": 422, "rita": 422, "olga": 422}),
    ("absurd resume", "threads", "create_run",
     _run(command={"resume": {"decisions": ["x" * 40_000]}}),
     {"alice": 422, "bob": 422, "rita": 422, "olga": 422}),
    ("run on a thread that does not exist", "threads", "create_run", {**_run(input=ASK), **NEW},
     {"alice": 404, "bob": 404, "rita": 404, "olga": "ok"}),
    ("run with neither input nor resume", "threads", "create_run", _run(),
     EVERYONE_BUT_OLGA_403),
    ("v2 run.start", "threads", "create_run", _v2("run.start", assistant_id="keel", input=ASK),
     {"alice": "ok", "bob": 404, "rita": 403, "olga": "ok"}),
    ("v2 run.start from a checkpoint", "threads", "create_run",
     _v2("run.start", assistant_id="keel", config={"configurable": {"checkpoint_id": "1ef-0"}}),
     EVERYONE_BUT_OLGA_403),
    ("v2 input.respond", "threads", "create_run", _v2("input.respond", response=APPROVE["resume"]),
     {"alice": "ok", "bob": 404, "rita": "ok", "olga": "ok"}),
    ("v2 input.respond with update", "threads", "create_run",
     _v2("input.respond", response={}, update={"evidence": []}), EVERYONE_BUT_OLGA_403),
    ("v2 input.respond with goto", "threads", "create_run",
     _v2("input.respond", response={}, goto="execute"), EVERYONE_BUT_OLGA_403),
    ("v2 unknown command", "threads", "create_run", _v2("state.write"), EVERYONE_BUT_OLGA_403),
    ("an action Aegra may add later", "threads", "frobnicate", dict(A), EVERYONE_BUT_OLGA_403),
    ("read an assistant", "assistants", "read", {"assistant_id": "keel"},
     {"alice": "ok", "bob": "ok", "rita": "ok", "olga": "ok"}),
    ("search assistants", "assistants", "search", {},
     {"alice": "ok", "bob": "ok", "rita": "ok", "olga": "ok"}),
    ("create an assistant (its config reaches every run)", "assistants", "create",
     {"config": {"configurable": {"checkpoint_id": "1ef-0"}}}, EVERYONE_BUT_OLGA_403),
    ("update an assistant", "assistants", "update", {}, EVERYONE_BUT_OLGA_403),
    ("delete an assistant", "assistants", "delete", {}, EVERYONE_BUT_OLGA_403),
    ("create a cron", "crons", "create", {}, EVERYONE_BUT_OLGA_403),
    ("update a cron", "crons", "update", {}, EVERYONE_BUT_OLGA_403),
    ("delete a cron", "crons", "delete", {}, EVERYONE_BUT_OLGA_403),
    ("search crons", "crons", "search", {}, EVERYONE_BUT_OLGA_403),
    ("put in the store", "store", "put", {}, EVERYONE_BUT_OLGA_403),
    ("get from the store", "store", "get", {}, EVERYONE_BUT_OLGA_403),
    ("delete from the store", "store", "delete", {}, EVERYONE_BUT_OLGA_403),
    ("search the store", "store", "search", {}, EVERYONE_BUT_OLGA_403),
    ("list the store's namespaces", "store", "list_namespaces", {}, EVERYONE_BUT_OLGA_403),
]  # fmt: skip


def _ctx(name: str, resource: str, action: str) -> Any:
    from aegra_api.models.auth import User
    from langgraph_sdk.auth.types import AuthContext

    roles = ROLE_OF[name]
    user = User(
        identity="keel", display_name=name, permissions=roles, keel_user=name, keel_roles=roles
    )
    return AuthContext(user=user, permissions=roles, resource=resource, action=action)  # type: ignore[arg-type]


async def _lookup(thread_id: str) -> dict[str, Any] | None:
    return THREADS.get(thread_id)


def _outcome(name: str, resource: str, action: str, value: dict[str, Any]) -> Any:
    auth = make_auth(USERS, threads=_lookup)
    handler = auth._global_handlers[-1]
    try:
        result = asyncio.run(handler(ctx=_ctx(name, resource, action), value=value))
    except Auth.exceptions.HTTPException as refused:
        assert refused.detail and "\n" not in refused.detail
        return refused.status_code
    if result is None:
        return "ok"
    assert result == {"keel_owner": name}, result
    return "filter"


@pytest.mark.parametrize(("what", "resource", "action", "value", "expected"), CASES)
def test_every_role_and_action_is_decided_at_the_server(
    what: str, resource: str, action: str, value: dict[str, Any], expected: dict[str, Any]
) -> None:
    got = {
        name: _outcome(name, resource, action, json.loads(json.dumps(value))) for name in expected
    }
    assert got == expected, what


def test_the_table_covers_every_resource_and_action_aegra_authorizes() -> None:
    from aegra_api.core.auth_registry import ROUTE_AUTH_MAP

    # Besides the routes' own: a run or a cron also reads its assistant (and a cron its thread).
    called = set(ROUTE_AUTH_MAP.values()) | {("assistants", "read"), ("threads", "read")}
    covered = {(resource, action) for _, resource, action, _, _ in CASES}
    assert called <= covered, called - covered


def test_the_owner_of_a_new_thread_is_the_authenticated_user_whatever_the_client_says() -> None:
    handler = make_auth(USERS, threads=_lookup)._global_handlers[-1]
    value: dict[str, Any] = {"metadata": {"keel_owner": "olga", "title": "refund"}}
    asyncio.run(handler(ctx=_ctx("alice", "threads", "create"), value=value))
    assert value["metadata"] == {"keel_owner": "alice", "title": "refund"}
    value = {"metadata": None}
    asyncio.run(handler(ctx=_ctx("carl", "threads", "create"), value=value))
    assert value["metadata"] == {"keel_owner": "carl"}


def test_a_new_thread_names_the_domain_that_serves_it() -> None:
    """A client's thread list can show (and filter by) the domain from the first moment."""
    handler = make_auth(USERS, threads=_lookup, domain="support_desk")._global_handlers[-1]
    value: dict[str, Any] = {"metadata": {"keel_domain": "other", "title": "refund"}}
    asyncio.run(handler(ctx=_ctx("alice", "threads", "create"), value=value))
    assert value["metadata"] == {"keel_owner": "alice", "keel_domain": "support_desk",
                                 "title": "refund"}  # fmt: skip
