"""The one error hierarchy a Keel user catches: everything Keel raises on purpose is a KeelError.

Expected outcomes (a denial, a failed validation, a refused request) are values in the graph's
state; these exceptions are for broken input, broken infrastructure and bugs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class KeelError(Exception):
    """Root of every error Keel raises deliberately."""


class ConfigError(KeelError):
    """A setting is missing or wrong; the message names the setting to fix."""


class CorpusMissing(KeelError):
    """The corpus or its index is not where the settings say."""


class BadRequest(KeelError):
    """The user's input (a request, an edit, a resume payload) cannot be used."""


class ThreadNotFound(KeelError):
    """No checkpoint exists for the thread id."""


class NoPendingApproval(KeelError):
    """A resume was asked for a thread that is not waiting for a human."""


class LeaseHeld(KeelError):
    """Another live worker is running the thread: two runs of one thread never execute at once.

    Example:
        >>> str(LeaseHeld("t-1", "host-a pid 41", 2.0))  # doctest: +ELLIPSIS
        'thread t-1 is being run by host-a pid 41 (heartbeat 2.0 s ago); ...'
    """

    def __init__(self, thread_id: str, owner: str, heartbeat_age_s: float) -> None:
        super().__init__(thread_id, owner, heartbeat_age_s)
        self.thread_id = thread_id
        self.owner = owner
        self.heartbeat_age_s = heartbeat_age_s

    def __str__(self) -> str:
        return (
            f"thread {self.thread_id} is being run by {self.owner} "
            f"(heartbeat {self.heartbeat_age_s:.1f} s ago); one worker at a time: wait for it, "
            "or, if that worker died, recover it once its lease is dead (a worker on this "
            "machine: at once; on another: KEEL_LEASE_TTL_S after its last heartbeat)"
        )


class RelayBusy(KeelError):
    """Another event relay (``keel events``) kept the inbox past the wait: one relay at a time
    reads the outbox, so two never resume the same thread with the same event at once."""


class RecoveryIncomplete(KeelError):
    """``recover --all`` left a thread stalled, refused (a live worker) or failed."""


class PermissionDenied(KeelError):
    """The permission gate refused a call; it was not made. ``rule`` names what refused it."""

    def __init__(self, reason: str, *, rule: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


class IntegrationError(KeelError):
    """A tool or model integration failed."""


class Retryable(IntegrationError):
    """A transient fault: a timeout, a connection error, a 429 or a 5xx."""


class Permanent(IntegrationError):
    """A fault that retrying will not fix: a 4xx, expired credentials, a changed response shape."""


class Unauthorized(Permanent):
    """The integration refused Keel's credentials (a 401, expired keys): nothing is wrong with
    the request or the record asked for, and retrying will not help until someone renews them,
    so a read that fails this way leaves the record unavailable (escalate), never missing."""


class StoreUnavailable(IntegrationError):
    """A server Keel keeps threads in (Postgres: checkpoints, intent ledger) stopped answering.

    Not a wrong setting (that is a ``ConfigError`` when a process starts) but an outage during a
    run. Nothing is lost: a thread is only ever as far as its last saved checkpoint, and an
    irreversible call under way is settled through the intent ledger on the next attempt. The
    message names the setting and the commands that continue the thread once the server is back.

    Example:
        >>> str(StoreUnavailable("KEEL_POSTGRES_URL=postgresql://db/keel", "connection refused",
        ...                      thread_id="t-1"))  # doctest: +ELLIPSIS
        'KEEL_POSTGRES_URL=postgresql://db/keel: the database stopped answering (connection ...'
    """

    def __init__(self, setting: str, reason: str, thread_id: str | None = None) -> None:
        super().__init__(setting, reason, thread_id)
        self.setting = setting
        self.reason = reason
        self.thread_id = thread_id

    def __str__(self) -> str:
        thread = self.thread_id or "THREAD"
        return (
            f"{self.setting}: the database stopped answering ({self.reason}); nothing is lost, "
            f"the thread is safe at its last checkpoint: once the server is back, "
            f"`keel resume {thread}` answers a pending approval and `keel recover {thread}` "
            "continues a run"
        )

    def for_thread(self, thread_id: str) -> StoreUnavailable:
        """The same error, naming the thread it interrupted."""
        named = StoreUnavailable(self.setting, self.reason, thread_id)
        named.__cause__ = self.__cause__
        return named


def first_error(err: ValidationError) -> str:
    """A validation error as one line: the first problem, where it is and what is wrong.

    Example:
        >>> from pydantic import BaseModel, ValidationError
        >>> class Step(BaseModel):
        ...     tool: str
        >>> try:
        ...     Step.model_validate({"tool": 7})
        ... except ValidationError as err:
        ...     first_error(err)
        'tool: Input should be a valid string'
    """
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
