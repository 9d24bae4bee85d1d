"""Who may call the engine and what each caller may do: Aegra's auth hook and handlers.

Aegra (``make serve``; docs/serving.md) loads ``auth`` through ``aegra.json``
(``"auth": {"path": "./graph/serve_auth.py:auth"}``).

**Authentication** (a token as ``Authorization: Bearer`` or ``X-Api-Key``, compared in constant
time with ``KEEL_API_TOKENS``; anything else is 401) and the user it writes into each run's config
(the team as ``identity``, the person, the roles; read by ``graph.reviewer``) are explained in
``docs/serving.md`` ("Who may do what").

**Failing closed.** Aegra imports this file on the first request and, if the import raises, logs
the error and serves every caller as ``anonymous`` (``aegra_api.core.auth_middleware``). So this
module never raises at import: a configuration it cannot read gives an ``auth`` that refuses every
request, saying which setting is wrong. The processes do not start at all with such a setting:
``Settings`` refuses it, and ``graph/studio.py:engine_graph``, which every Aegra process calls at
start-up, builds them (an error Aegra does not catch); ``keel/serve.py`` checks it before
starting anything.

**Authorization** is one ``@auth.on`` handler for every protocol route, through :func:`decide`:
a table of roles and actions (``docs/serving.md``). Aegra ignores the filter a handler returns on
the routes it dispatches itself, so a requester's access to one thread is decided here from the
thread's metadata, whose owner the ``threads.create`` handler writes from the authenticated user,
never from the client.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from langgraph_sdk import Auth
from pydantic import ValidationError

from graph.run_input import input_refusal, resume_refusal
from keel.errors import first_error
from keel.settings import ApiRole, ApiUser, Settings, domain_folder, parse_api_tokens

OWNER_KEY = "keel_owner"
"""The thread metadata key naming the user who created the thread (set by the server)."""
DOMAIN_KEY = "keel_domain"
"""The thread metadata key naming the domain that serves it (set by the server at creation;
each run's end sets it again with the thread's title and status: ``graph.served``)."""

SHARED_KEY = "keel_shared_with"
"""The thread metadata key an owner (or an operator) sets to let other users read the thread: a
list of user names. Sharing gives sight, not a say: only the owner writes to the thread, only
reviewers answer its approvals."""
SERVER_KEYS = frozenset({OWNER_KEY, DOMAIN_KEY, "keel_title", "keel_status"})
"""Thread metadata only the server writes (the owner and domain at creation; the title and status
after each run, ``graph.served``): a client's value is dropped at creation, refused after it."""

ThreadLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]
"""A thread's metadata by id within the team, or None when the team has no such thread."""

STATE_WRITE_KEYS = ("values", "as_node", "checkpoint_id", "checkpoint")
"""What makes ``POST /threads/{id}/state`` a state write rather than a read."""
RESERVED_CONFIGURABLE = frozenset(
    {"thread_id", "run_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map", "user_id",
     "user_display_name", "assistant_id", "graph_id"}
)  # fmt: skip
"""``config.configurable`` keys a server sets (or that select a checkpoint): never a client's."""
CLIENT_CONFIG_KEYS = frozenset({"configurable", "tags", "metadata", "run_name"})
"""The ``config`` keys a client who is not an operator may set."""


def parse_tokens(raw: str) -> dict[str, ApiUser]:
    """``KEEL_API_TOKENS`` as {token: user}; a malformed value is one ValueError naming it.

    Example:
        >>> users = parse_tokens("alice=s3cret-a1:requester, rita=s3cret-r1:reviewer")
        >>> users["s3cret-r1"].name, sorted(users["s3cret-r1"].roles)
        ('rita', ['reviewer'])
    """
    return parse_api_tokens(raw)


def _header(headers: Mapping[Any, Any], name: str) -> str | None:
    for key, value in headers.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        if text.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def presented_tokens(headers: Mapping[Any, Any]) -> list[str]:
    """The tokens a request presents: ``Authorization: Bearer X`` and ``X-Api-Key: X``.

    Example:
        >>> presented_tokens({"authorization": "Bearer abc", "x-api-key": " def "})
        ['abc', 'def']
        >>> presented_tokens({"authorization": "Basic abc"})
        []
    """
    found = []
    scheme, _, bearer = (_header(headers, "authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and bearer.strip():
        found.append(bearer.strip())
    api_key = (_header(headers, "x-api-key") or "").strip()
    if api_key:
        found.append(api_key)
    return found


def user_for(headers: Mapping[Any, Any], users: Mapping[str, ApiUser]) -> ApiUser | None:
    """The one user the request's tokens name, or None.

    Every presented token is compared with every configured one in constant time (no early
    exit). A token nobody holds beside one somebody holds is ignored (the SDK adds a LangSmith
    key from the environment as ``X-Api-Key``), but two tokens naming two users name nobody.

    Example:
        >>> users = parse_tokens("alice=s3cret-a1,bob=s3cret-b1")
        >>> user_for({"X-Api-Key": "s3cret-a1"}, users).name
        'alice'
        >>> user_for({"authorization": "Bearer s3cret-a1", "x-api-key": "s3cret-b1"}, users)
    """
    named: dict[str, ApiUser] = {}
    for presented in presented_tokens(headers):
        for token, user in users.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                named[user.name] = user
    return next(iter(named.values())) if len(named) == 1 else None


def _refuse(status: int, reason: str) -> Auth.exceptions.HTTPException:
    return Auth.exceptions.HTTPException(status_code=status, detail=reason)


class Caller:
    """The authenticated user as the handlers see it: the person and their roles."""

    def __init__(self, name: str, roles: frozenset[str]) -> None:
        self.name = name
        self.roles = roles

    @classmethod
    def of(cls, user: Any, permissions: Any = ()) -> Caller:
        """From the engine's user (Aegra's ``User`` model, LangGraph's user, or a mapping)."""

        def field(name: str) -> Any:
            try:
                return user.get(name) if isinstance(user, Mapping) else getattr(user, name, None)
            except Exception:  # a user object that cannot answer has no such field
                return None

        name = field("keel_user") or field("display_name") or field("identity") or ""
        roles = field("keel_roles") or permissions or ()
        return cls(str(name), frozenset(str(r) for r in roles))

    def can(self, role: ApiRole) -> bool:
        """Whether the caller holds ``role``; an operator holds every role."""
        return role in self.roles or "operator" in self.roles

    def owns(self, thread: Mapping[str, Any] | None) -> bool:
        """Whether ``thread`` (its metadata) was created by this caller."""
        return thread is not None and thread.get(OWNER_KEY) == self.name

    def shares(self, thread: Mapping[str, Any] | None) -> bool:
        """Whether the thread's owner shared it with this caller (``SHARED_KEY``)."""
        shared = thread.get(SHARED_KEY) if thread is not None else None
        return isinstance(shared, list | tuple) and self.name in shared


def _non_empty(value: Any) -> bool:
    return value is not None and value != {} and value != [] and value != ""


def _run_request(value: Mapping[str, Any]) -> dict[str, Any]:
    """A run's parts from either shape Aegra authorizes as ``threads.create_run``: a
    ``RunCreate`` body, or an Agent Protocol v2 command (``{"method": "run.start" |
    "input.respond", "params": ...}``, ``POST /threads/{id}/commands``)."""
    method = value.get("method")
    if method is None:
        return dict(value)
    params = value.get("params") if isinstance(value.get("params"), Mapping) else {}
    assert isinstance(params, Mapping)
    if method == "run.start":
        return {
            "input": params.get("input"),
            "config": params.get("config"),
            "context": params.get("context"),
            "interrupt_before": params.get("interrupt_before"),
            "interrupt_after": params.get("interrupt_after"),
            "multitask_strategy": params.get("multitaskStrategy", params.get("multitask_strategy")),
        }
    if method == "input.respond":
        resume = params.get("responses", params.get("response"))
        command = {"resume": resume, "update": params.get("update"), "goto": params.get("goto")}
        return {
            "command": command,
            "config": params.get("config"),
            "context": params.get("context"),
        }
    return {"unknown_method": str(method)[:40]}


def _check_run(caller: Caller, value: Mapping[str, Any], thread: Mapping[str, Any] | None) -> None:
    """``threads.create_run``: the input is readable (everyone); the rest by role."""
    run = _run_request(value)
    run_input, command = run.get("input"), run.get("command")
    if command is not None and not isinstance(command, Mapping):
        raise _refuse(422, "command must be an object")
    reason = input_refusal(run_input)
    if reason is None and command is not None and "resume" in command:
        reason = resume_refusal(command["resume"])
    if reason is not None:
        raise _refuse(422, reason)
    if caller.can("operator"):
        return
    if "unknown_method" in run:
        raise _refuse(403, f"the command {run['unknown_method']!r} is for operators")
    if _non_empty(run.get("checkpoint")) or _non_empty(run.get("checkpoint_id")):
        raise _refuse(403, "a run from an earlier checkpoint (a fork) is for operators")
    if command is not None:
        written = sorted(k for k, v in command.items() if k != "resume" and v is not None)
        if written:
            raise _refuse(
                403, f"command.{written[0]} writes the thread's state: for operators only; "
                "answer with command.resume",
            )  # fmt: skip
    config = run.get("config") or {}
    if not isinstance(config, Mapping):
        raise _refuse(422, "config must be an object")
    extra = sorted(set(config) - CLIENT_CONFIG_KEYS)
    if extra:
        raise _refuse(403, f"config.{extra[0]} is for operators")
    configurable = config.get("configurable") or {}
    if not isinstance(configurable, Mapping):
        raise _refuse(422, "config.configurable must be an object")
    reserved = sorted(
        k for k in configurable if k in RESERVED_CONFIGURABLE or k.startswith(("__", "langgraph_"))
    )
    if reserved:
        what = (
            "a fork from a checkpoint"
            if reserved[0].startswith("checkpoint")
            else "set by the server"
        )
        raise _refuse(403, f"config.configurable.{reserved[0]} is {what}: for operators only")
    if _non_empty(run.get("context")):
        raise _refuse(403, "a run's context is set by the server: for operators only")
    if _non_empty(run.get("interrupt_before")) or _non_empty(run.get("interrupt_after")):
        raise _refuse(403, "breakpoints (interrupt_before/after) are for operators")
    if run.get("multitask_strategy") == "rollback":
        raise _refuse(403, "multitask_strategy 'rollback' deletes a run's checkpoints: operators")
    if run.get("durability") not in (None, "sync") or run.get("checkpoint_during") is not None:
        raise _refuse(403, "a run's durability is the server's ('sync'): for operators only")
    resumes = command is not None and "resume" in command
    if run_input is not None and resumes:
        raise _refuse(422, "send input or command.resume, not both")
    if thread is None:
        raise _refuse(
            404, f"thread {value.get('thread_id')!s:.64} not found (create it first: POST /threads)"
        )
    if run_input is not None:
        if not caller.can("requester"):
            raise _refuse(
                403, f"{caller.name} is not a requester: a reviewer answers, with command.resume"
            )
        if not caller.owns(thread):
            if _sees(caller, thread):
                raise _refuse(
                    403, "only the thread's requester writes to it (it is shared to read)"
                )
            raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")
        return
    if resumes:
        if caller.can("reviewer") or (caller.can("requester") and caller.owns(thread)):
            return
        raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")
    raise _refuse(
        403, "a run needs input or command.resume; continuing without either is for operators"
    )


def _sees(caller: Caller, thread: Mapping[str, Any] | None) -> bool:
    """Whether the caller may read the thread: its owner, whom the owner shared it with, any
    reviewer (they answer the team's approvals), an operator."""
    return thread is not None and (
        caller.can("reviewer") or caller.owns(thread) or caller.shares(thread)
    )


def _check_update(
    caller: Caller, value: Mapping[str, Any], thread: Mapping[str, Any] | None
) -> None:
    """``threads.update``: a state write (``update_state``), a run's cancel, a metadata edit,
    or (``POST /threads/{id}/state`` with nothing to write) a read."""
    if caller.can("operator"):
        return
    if any(_non_empty(value.get(k)) for k in STATE_WRITE_KEYS):
        raise _refuse(403, "writing a thread's state (update_state) is for operators")
    metadata = value.get("metadata")
    if isinstance(metadata, Mapping):
        forged = sorted(SERVER_KEYS & set(metadata))
        if forged:
            raise _refuse(403, f"metadata.{forged[0]} is set by the server")
        shared = metadata.get(SHARED_KEY)
        if shared is not None and not (
            isinstance(shared, list) and all(isinstance(u, str) for u in shared)
        ):
            raise _refuse(422, f"metadata.{SHARED_KEY} must be a list of user names")
    if "thread_id" not in value:
        raise _refuse(403, "cancelling runs across threads is for operators")
    run_or_thread = any(k in value for k in ("run_id", "run_ids", "status", "metadata", "ttl"))
    if run_or_thread:
        if caller.can("requester") and caller.owns(thread):
            return
        if thread is not None and _sees(caller, thread):
            raise _refuse(403, "only the thread's requester or an operator may change its runs")
        raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")
    if not _sees(caller, thread):
        raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")


def decide(
    caller: Caller,
    resource: str,
    action: str,
    value: dict[str, Any],
    thread: Mapping[str, Any] | None,
    domain: str | None = None,
) -> dict[str, Any] | None:
    """What the engine does with one request: None (go on), a metadata filter (go on, showing
    only the threads it matches), or an ``Auth.exceptions.HTTPException`` raised with a
    one-line reason. ``thread`` is the metadata of the thread ``value["thread_id"]`` names, None
    when the team has none (or the value names none). ``threads.create`` writes the owner (and
    the serving ``domain``) into ``value["metadata"]``, which Aegra keeps.

    Example:
        >>> alice = Caller("alice", frozenset({"requester"}))
        >>> decide(alice, "threads", "search", {}, None)
        {'keel_owner': 'alice'}
        >>> decide(alice, "threads", "delete", {"thread_id": "t"}, {"keel_owner": "alice"})
        Traceback (most recent call last):
        ...
        langgraph_sdk.auth.exceptions.HTTPException: 403: deleting a thread is for operators
    """
    if resource == "threads":
        if action == "create_run":
            _check_run(caller, value, thread)
            return None
        if action == "create":
            if not caller.can("requester"):
                raise _refuse(
                    403, f"{caller.name} is not a requester: only requesters start threads"
                )
            taken = thread is not None and not caller.owns(thread)
            if value.get("thread_id") and taken and not caller.can("operator"):
                raise _refuse(409, f"thread {value['thread_id']!s:.64} already exists")
            metadata = value.get("metadata")
            value["metadata"] = {
                **{
                    k: v
                    for k, v in (metadata if isinstance(metadata, Mapping) else {}).items()
                    if k not in SERVER_KEYS
                },
                **({DOMAIN_KEY: domain} if domain else {}),
                OWNER_KEY: caller.name,
            }
            return None
        if action == "update":
            _check_update(caller, value, thread)
            return None
        if caller.can("operator"):
            return None
        if action == "read":
            if not _sees(caller, thread):
                raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")
            return None
        if action == "search":
            if "thread_id" in value and not _sees(caller, thread):
                raise _refuse(404, f"thread {value.get('thread_id')!s:.64} not found")
            return None if caller.can("reviewer") else {OWNER_KEY: caller.name}
        if action == "delete":
            raise _refuse(403, "deleting a thread is for operators")
    if resource == "assistants" and action in ("read", "search"):
        return None
    if caller.can("operator"):
        return None
    raise _refuse(403, f"{resource}.{action} is for operators")


async def aegra_thread(thread_id: str, team: str) -> Mapping[str, Any] | None:
    """The metadata of the team's thread ``thread_id`` in Aegra's own table, or None."""
    # Aegra is this module's host, not a dependency of Keel's runtime: only the engine's
    # processes have it (the `serve` extra), and they import it before they import this file.
    from aegra_api.core.orm import Thread, get_session_maker
    from sqlalchemy import select

    async with get_session_maker()() as session:
        row = (
            await session.execute(
                select(Thread.thread_id, Thread.metadata_json).where(
                    Thread.thread_id == thread_id, Thread.user_id == team
                )
            )
        ).first()
    if row is None:
        return None
    metadata = row[1]
    return metadata if isinstance(metadata, Mapping) else {}


def make_auth(
    users: Mapping[str, ApiUser],
    team: str = "keel",
    threads: ThreadLookup | None = None,
    domain: str | None = None,
) -> Auth:
    """An ``Auth`` that admits exactly the holders of ``users``' tokens ({token: user}) and
    decides each request with :func:`decide`; ``threads`` finds a thread's metadata (default:
    Aegra's table, for ``team``).

    Example:
        >>> auth = make_auth(parse_tokens("alice=s3cret-a1:requester"))
        >>> auth._authenticate_handler is not None, len(auth._global_handlers)
        (True, 1)
    """
    made = Auth()
    known = dict(users)

    async def lookup(thread_id: str) -> Mapping[str, Any] | None:
        return await (threads(thread_id) if threads is not None else aegra_thread(thread_id, team))

    @made.authenticate
    async def authenticate(headers: Mapping[Any, Any]) -> Auth.types.MinimalUserDict:
        """The engine's hook: the user behind the token, or 401.

        Aegra passes the headers as the one positional argument (str keys); LangGraph's own
        server injects them by this parameter's name (bytes keys): both are read.
        """
        user = user_for(headers, known)
        if user is None:
            raise _refuse(
                401, "a valid token is needed (Authorization: Bearer TOKEN or X-Api-Key: TOKEN)"
            )
        roles = sorted(user.roles)
        return {
            "identity": team,
            "display_name": user.name,
            "is_authenticated": True,
            "permissions": roles,
            "keel_user": user.name,  # type: ignore[typeddict-unknown-key]
            "keel_roles": roles,  # type: ignore[typeddict-unknown-key]
        }

    @made.on
    async def authorize(ctx: Auth.types.AuthContext, value: Any) -> Any:
        """Every resource and action Aegra authorizes: :func:`decide`, with the thread's
        metadata looked up when a non-operator names one."""
        caller = Caller.of(ctx.user, ctx.permissions)
        body: dict[str, Any] = value if isinstance(value, dict) else {}
        thread_id = body.get("thread_id")
        thread = None
        named = ctx.resource == "threads" and isinstance(thread_id, str) and bool(thread_id)
        if named and (not caller.can("operator") or ctx.action == "create"):
            thread = await lookup(str(thread_id))
        return decide(caller, ctx.resource, ctx.action, body, thread, domain)

    return made


def refusing_auth(reason: str) -> Auth:
    """An ``Auth`` that refuses every request with ``reason``: what a configuration that cannot
    be read gives, instead of an import error Aegra would answer by serving everyone."""
    made = Auth()
    detail = f"the server refuses every request: {reason}"

    @made.authenticate
    async def authenticate(headers: Mapping[Any, Any]) -> Auth.types.MinimalUserDict:
        raise _refuse(401, detail)

    @made.on
    async def authorize(ctx: Auth.types.AuthContext, value: Any) -> Any:
        raise _refuse(403, detail)

    return made


def configuration_error(err: Exception) -> str:
    """One line for a settings error: the setting and what is wrong, never the value."""
    text = first_error(err) if isinstance(err, ValidationError) else str(err)
    line = text.splitlines()[0] if text else type(err).__name__
    return line.replace("Value error, ", "")


def configured_auth() -> Auth:
    """The auth the environment's settings describe, or one that refuses everyone when they
    cannot be read (this module must not raise at import)."""
    try:
        settings = Settings()
        domain = domain_folder(settings.domain).name
        return make_auth(settings.api_users(), settings.api_team, domain=domain)
    except Exception as err:  # whatever it is, refusing every request is the safe answer
        return refusing_auth(configuration_error(err))


auth = configured_auth()
"""What ``aegra.json`` names: the hook and handlers over the environment's tokens and roles."""
