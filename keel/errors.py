"""The one error hierarchy a Keel user catches: everything Keel raises on purpose is a KeelError.

Expected outcomes (a denial, a failed validation, a refused request) are values in the graph's
state; these exceptions are for broken input, broken infrastructure and bugs.
"""

from __future__ import annotations


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
