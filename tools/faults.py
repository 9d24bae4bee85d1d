"""A fault layer for a domain's integrations: failures, latency, timeouts, lost responses, changed
response shapes, expired credentials and outages, on demand and reproducible by seed.

Profiles are chosen by name (``KEEL_FAULTS=transient``) or given as JSON; the evals and the CLI
use the same switch. The generic profiles here name no integration (they hit every integration of
whatever domain runs); a profile for one integration (an outage of one API) is the
domain's own (``Domain.fault_profiles``).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import BadRequest, Retryable, Unauthorized
from tools.spec import ToolSpec


class FaultProfile(BaseModel):
    """What goes wrong, how often. Rates are per call, in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_rate: float = Field(default=0.0, ge=0, le=1, description="503 before the call")
    timeout_rate: float = Field(default=0.0, ge=0, le=1, description="hangs past the timeout")
    lost_response_rate: float = Field(
        default=0.0, ge=0, le=1, description="the call happens, then the connection drops"
    )
    latency_s: float = Field(default=0.0, ge=0)
    drift_rate: float = Field(default=0.0, ge=0, le=1, description="a field renamed in the answer")
    expired_credentials: bool = False
    outage: bool = False
    integrations: list[str] | None = Field(
        default=None, description="the integrations affected; None means all"
    )
    crash_before: list[str] = Field(
        default_factory=list, description="tools before whose call the process is killed"
    )
    crash_after: list[str] = Field(
        default_factory=list,
        description="tools after whose call (the side effect done, nothing saved yet) the "
        "process is killed: for crash-recovery tests",
    )


PROFILES: dict[str, FaultProfile] = {
    "none": FaultProfile(),
    "transient": FaultProfile(failure_rate=0.3, timeout_rate=0.1),
    "lost_responses": FaultProfile(lost_response_rate=0.3),
}
"""The generic profiles: each applies to every integration of the domain."""


def profile_named(spec: str, own: Mapping[str, FaultProfile] | None = None) -> FaultProfile:
    """A profile by name (the domain's ``own`` first, then the generic ones), or from a JSON
    object of FaultProfile fields.

    Example:
        >>> profile_named("mine", {"mine": FaultProfile(outage=True)}).outage
        True
    """
    named = {**PROFILES, **(own or {})}
    if spec in named:
        return named[spec]
    if spec.lstrip().startswith("{"):
        try:
            return FaultProfile.model_validate_json(spec)
        except ValueError as err:
            raise BadRequest(f"KEEL_FAULTS is not a valid fault profile: {err}") from err
    raise BadRequest(f"unknown fault profile {spec!r}; known: {sorted(named)} or a JSON object")


class FaultInjector:
    """Wraps integration calls with the faults of one profile, from one seeded generator."""

    def __init__(self, profile: FaultProfile, seed: int = 0) -> None:
        self.profile = profile
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def _roll(self, rate: float) -> bool:
        with self._lock:
            return self._random.random() < rate

    def wrap(
        self,
        integration: str,
        timeout_s: float,
        func: Callable[[Any], Mapping[str, Any]],
        tool: str = "",
    ) -> Callable[[Any], Mapping[str, Any]]:
        p = self.profile
        if tool in p.crash_before or tool in p.crash_after:
            return _crashing(tool, func, before=tool in p.crash_before)
        if p.integrations is not None and integration not in p.integrations:
            return func

        def faulty(call: Any) -> Mapping[str, Any]:
            if p.outage:
                raise Retryable(f"{integration}: connection refused")
            if p.expired_credentials:
                raise Unauthorized(f"{integration}: 401 credentials expired")
            if p.latency_s:
                time.sleep(p.latency_s)
            if self._roll(p.failure_rate):
                raise Retryable(f"{integration}: 503 service unavailable")
            if self._roll(p.timeout_rate):
                time.sleep(timeout_s * 1.5)
            output = dict(func(call))
            if self._roll(p.lost_response_rate):
                raise Retryable(f"{integration}: connection reset after the request was sent")
            if output and self._roll(p.drift_rate):
                first = next(iter(output))
                output[first + "_v2"] = output.pop(first)
            return output

        return faulty

    def wrap_specs(
        self, specs: Iterable[ToolSpec[Any, Any]], timeout_s: float
    ) -> list[ToolSpec[Any, Any]]:
        """Every spec with its function wrapped (``wrap``); ``timeout_s`` is the registry's,
        for the specs that declare no timeout of their own."""
        return [
            replace(s, func=self.wrap(s.integration, s.timeout_s or timeout_s, s.func, tool=s.name))
            for s in specs
        ]


def _crashing(
    tool: str, func: Callable[[Any], Mapping[str, Any]], *, before: bool
) -> Callable[[Any], Mapping[str, Any]]:
    def crash() -> None:
        # SIGKILL: no cleanup, no checkpoint write, as when a worker is killed by the OS.
        os.kill(os.getpid(), signal.SIGKILL)

    def call(request: Any) -> Mapping[str, Any]:
        if before:
            crash()
        output = func(request)
        crash()
        return output

    return call
