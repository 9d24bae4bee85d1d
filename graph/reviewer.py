"""Who answered an approval: the serving engine's authenticated user when there is one.

A serving engine puts the user it authenticated into the run's config, as LangGraph's own server
does, under ``config["configurable"]["langgraph_auth_user"]`` (Aegra 0.11 puts its ``User`` model
there, with ``identity`` and ``is_authenticated``; LangGraph's server a ``BaseUser`` that is also a
mapping). That user is the reviewer: its ``keel_user`` field when the auth hook names the person
there (Keel's hook for Aegra does, its ``identity`` being the team), else its ``identity``. The
``reviewer`` string in an answer is the caller's claim: it names the reviewer only where no engine
stands in front of the graph (``keel resume --as``, ``KeelApp``), and it never overrides an
authenticated user.

An engine that serves the graph without authenticating the caller (Aegra with no auth hook, a
hook that failed to load) vouches for nobody: no receipt is signed then (:func:`answer_refusal`),
whatever name the answer claims. Nor for a user whose roles, given by Keel's hook
(``keel_roles``), include neither ``reviewer`` nor ``operator``. ``langgraph dev`` without auth
puts no user in the config: it is a local caller here, as ``KeelApp`` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from graph.state import Reviewer

AUTH_USER_KEY = "langgraph_auth_user"
"""Where LangGraph's server and Aegra put the authenticated user in ``config["configurable"]``."""

UNAUTHENTICATED = "unauthenticated:"
"""Prefix of a reviewer an engine served without authenticating them: nobody vouched for it."""

MAX_NAME = 100


ROLES_FIELD = "keel_roles"
"""The user's roles, when Keel's auth hook (``graph/serve_auth.py``) gave them."""
APPROVING_ROLES = frozenset({"reviewer", "operator"})

PERSON_FIELD = "keel_user"
"""The person, when the auth hook names one besides ``identity``. Keel's Aegra hook must set
``identity`` to the team (Aegra scopes threads by identity, and a reviewer has to see the thread
someone else started) and puts the person here."""


def _field(user: Any, name: str) -> Any:
    """A field of the engine's user: a mapping, a pydantic model with extra fields (Aegra's
    ``User``) or LangGraph's ``ProxyUser``, whose ``__getattr__`` may raise anything."""
    try:
        if isinstance(user, Mapping):
            return user.get(name)
        return getattr(user, name, None)
    except Exception:  # a user object that cannot answer has no such field
        return None


def reviewer_of(config: RunnableConfig | None, claimed: str | None) -> Reviewer:
    """The reviewer of an answer given in a run with this config.

    With an engine's authenticated user in the config, that user's ``keel_user`` (the person,
    when Keel's auth hook names one) or else its ``identity``. From an engine that
    authenticated nobody (Aegra's anonymous user, ``langgraph dev``'s empty one), the answer's own
    name or the engine's, marked ``unauthenticated:``. With no engine (a local caller), the
    answer's own ``reviewer`` or ``unknown``.

    Example:
        >>> reviewer_of({"configurable": {"langgraph_auth_user": {"identity": "ann"}}}, "bob")
        Reviewer(name='ann', authenticated=True, claimed='bob')
        >>> reviewer_of({"configurable": {}}, "bob")
        Reviewer(name='bob', authenticated=False, claimed=None)
        >>> team = {"identity": "keel", "keel_user": "alice", "display_name": "alice"}
        >>> reviewer_of({"configurable": {"langgraph_auth_user": team}}, None).name
        'alice'
        >>> anonymous = {"identity": "anonymous", "is_authenticated": False}
        >>> reviewer_of({"configurable": {"langgraph_auth_user": anonymous}}, "bob").name
        'unauthenticated:bob'
    """
    claim = claimed.strip()[:MAX_NAME] if isinstance(claimed, str) and claimed.strip() else None
    configurable = (config or {}).get("configurable") or {}
    user = configurable.get(AUTH_USER_KEY)
    if user is None:
        return Reviewer(name=claim or "unknown", authenticated=False)
    identity = _field(user, PERSON_FIELD) or _field(user, "identity")
    identity = str(identity).strip()[:MAX_NAME] if identity else ""
    vouched = _field(user, "is_authenticated")
    authenticated = bool(identity) and (vouched is None or bool(vouched))
    if authenticated:
        return Reviewer(
            name=identity, authenticated=True, claimed=claim if claim != identity else None
        )
    return Reviewer(
        name=f"{UNAUTHENTICATED}{claim or identity or 'anonymous'}", authenticated=False
    )


def answer_refusal(config: RunnableConfig | None) -> str | None:
    """Why the engine's user of this run may not answer an approval, or None when they may.

    None with no engine user (a local caller, ``langgraph dev`` without auth). Refused: a user
    the engine did not authenticate, and one whose Keel roles hold neither ``reviewer`` nor
    ``operator``.

    Example:
        >>> answer_refusal({"configurable": {}}) is None
        True
        >>> anonymous = {"identity": "anonymous", "is_authenticated": False}
        >>> answer_refusal({"configurable": {"langgraph_auth_user": anonymous}})[:40]
        'the server did not authenticate who answ'
        >>> alice = {"identity": "keel", "keel_user": "alice", "keel_roles": ["requester"]}
        >>> answer_refusal({"configurable": {"langgraph_auth_user": alice}})
        'alice may not approve: the reviewer role is needed'
    """
    configurable = (config or {}).get("configurable") or {}
    user = configurable.get(AUTH_USER_KEY)
    if user is None:
        return None
    reviewer = reviewer_of(config, None)
    if not reviewer.authenticated:
        return (
            "the server did not authenticate who answered (no token, or no auth configured): "
            "an approval needs an authenticated reviewer"
        )
    roles = _field(user, ROLES_FIELD)
    if isinstance(roles, list | tuple | set | frozenset) and not APPROVING_ROLES & set(roles):
        return f"{reviewer.name} may not approve: the reviewer role is needed"
    return None


def team_of(config: RunnableConfig | None) -> str | None:
    """The team of the engine's authenticated user: its ``identity`` when Keel's auth hook names
    the person apart (``keel_user``), else None (the engine knows no team; the settings' applies).

    Example:
        >>> user = {"identity": "ops", "keel_user": "ann"}
        >>> team_of({"configurable": {"langgraph_auth_user": user}})
        'ops'
        >>> team_of({"configurable": {"langgraph_auth_user": {"identity": "ann"}}}) is None
        True
    """
    user = ((config or {}).get("configurable") or {}).get(AUTH_USER_KEY)
    if user is None or not _field(user, PERSON_FIELD):
        return None
    identity = _field(user, "identity")
    return str(identity).strip()[:MAX_NAME] or None if identity else None
