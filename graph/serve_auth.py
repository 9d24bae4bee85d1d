"""Authentication at the engine: a bearer token per user, checked by Aegra's auth hook.

Aegra (``make serve``; README, "Past one machine") loads ``auth`` through ``aegra.json``
(``"auth": {"path": "./graph/serve_auth.py:auth"}``) and calls it on every request. A request
without ``Authorization: Bearer <token>``, or with a token no user holds, is answered 401. The
user it returns is the one Aegra writes into each run's config as
``config["configurable"]["langgraph_auth_user"]``: its ``identity`` is the team (Aegra scopes
threads by it), its ``display_name`` the person, which is how the graph knows who answered an
approval.

The tokens come from the secret setting ``KEEL_API_TOKENS`` (``alice=TOKEN,bob=TOKEN``; the team
is ``KEEL_API_TEAM``, default ``keel``), read
once when the server loads this file. With no tokens set every request is refused: a server that
was meant to be protected is never silently open.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from langgraph_sdk import Auth

from keel.errors import ConfigError
from keel.settings import Settings


def parse_tokens(raw: str) -> dict[str, str]:
    """``alice=TOKEN,bob=TOKEN`` as {token: user}; a malformed pair is a ConfigError.

    Example:
        >>> parse_tokens("alice=s3cret-a, bob=s3cret-b")
        {'s3cret-a': 'alice', 's3cret-b': 'bob'}
    """
    users: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        user, sep, token = pair.partition("=")
        user, token = user.strip(), token.strip()
        if not sep or not user or len(token) < 8:
            raise ConfigError(
                "KEEL_API_TOKENS: expected user=token pairs separated by commas, each token at "
                "least 8 characters"
            )
        if token in users:
            raise ConfigError(f"KEEL_API_TOKENS: users {users[token]!r} and {user!r} share a token")
        users[token] = user
    return users


def user_for(authorization: str | None, tokens: dict[str, str]) -> str | None:
    """The user a ``Bearer`` header names, or None; every token is compared in constant time.

    Example:
        >>> user_for("Bearer s3cret-a", {"s3cret-a": "alice"}), user_for(None, {"x" * 8: "a"})
        ('alice', None)
    """
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    found = None
    for token, user in tokens.items():
        if hmac.compare_digest(token.encode(), presented.strip().encode()):
            found = user
    return found


def _header(headers: Mapping[Any, Any], name: str) -> str | None:
    for key, value in headers.items():
        text = key.decode() if isinstance(key, bytes) else str(key)
        if text.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def make_auth(tokens: dict[str, str], team: str = "keel") -> Auth:
    """An ``Auth`` whose hook admits exactly the holders of ``tokens`` ({token: user}).

    Aegra scopes threads and runs by the authenticated ``identity``: it is the ``team``, so
    every user of the deployment sees the team's threads (a reviewer must see the thread whose
    approval another user's run asked for). The person is ``display_name`` (and ``keel_user``),
    which is what a receipt names as the reviewer.
    """
    made = Auth()

    @made.authenticate
    async def authenticate(headers: Mapping[Any, Any]) -> Auth.types.MinimalUserDict:
        """The engine's hook: the user behind the bearer token, or 401.

        Aegra passes the headers as the one positional argument (str keys); LangGraph's own
        server injects them by this parameter's name (bytes keys): both are read.
        """
        user = user_for(_header(headers, "authorization"), tokens)
        if user is None:
            raise Auth.exceptions.HTTPException(
                status_code=401, detail="a valid bearer token is needed"
            )
        return {
            "identity": team,
            "display_name": user,
            "is_authenticated": True,
            "keel_user": user,  # type: ignore[typeddict-unknown-key]
        }

    return made


def _configured() -> Auth:
    settings = Settings()
    secret = settings.api_tokens
    tokens = parse_tokens(secret.get_secret_value()) if secret is not None else {}
    return make_auth(tokens, settings.api_team)


auth = _configured()
"""What ``aegra.json`` names: the hook over the tokens the environment held at start-up."""
