"""Resilience for every tool call: a timeout, retries with backoff and jitter, a circuit breaker.

Retries are for infrastructure faults only (``Retryable``: timeouts, connection errors, 429, 5xx)
and use tenacity; a validation error, a 4xx or a changed response shape is ``Permanent`` and is
never retried. The breaker counts the same infrastructure faults and nothing else, so a declined
refund never trips it. An irreversible call is retried only with its idempotency key, which the
backend honours, so a retry after a lost response cannot act twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from keel.errors import Permanent, Retryable

T = TypeVar("T")
BreakerState = Literal["closed", "open", "half_open"]


class RetryPolicy(NamedTuple):
    """How often and how patiently to retry a retryable fault.

    Attributes:
        attempts: total tries, the first included.
        initial_s: first backoff; doubles each time, with jitter.
        max_s: cap of one backoff.
    """

    attempts: int = 6
    initial_s: float = 0.05
    max_s: float = 1.0


class RetryAfter(Retryable):
    """A 429 or 503 that says how long to wait (the Retry-After header)."""

    def __init__(self, message: str, after_s: float) -> None:
        super().__init__(message)
        self.after_s = after_s


class CircuitOpen(Retryable):
    """The integration's breaker is open: the call was not attempted."""


@dataclass
class Breaker:
    """A circuit breaker for one integration.

    After ``threshold`` consecutive infrastructure faults it opens: calls fail fast for
    ``cooldown_s``; then one probe call is let through (half open), and its outcome closes or
    re-opens the breaker.

    The threshold sits above one call's retry budget (``RetryPolicy.attempts``): a breaker that
    opens inside a single call's retries cuts off a flaky but working service (at 40 % faults, five
    in a row happen on one call in a hundred), while a service that is really down still trips it
    on the second call.
    """

    name: str
    threshold: int = 10
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def before_call(self) -> None:
        if self.state == "open":
            raise CircuitOpen(f"{self.name} is unavailable (circuit open); not called")

    def record(self, *, infrastructure_fault: bool) -> None:
        with self._lock:
            if infrastructure_fault:
                self.failures += 1
                if self.failures >= self.threshold or self.opened_at is not None:
                    self.opened_at = self.clock()
            else:
                self.failures = 0
                self.opened_at = None


def with_timeout(
    func: Callable[[], T], timeout_s: float, pool: ThreadPoolExecutor | None = None
) -> T:
    """Run ``func``, waiting at most ``timeout_s``; past that, a ``Retryable`` timeout.

    Blocking integrations cannot be cancelled: the caller stops waiting, and the idempotency key
    makes a late success harmless when the call is retried. ``pool`` runs the call (a registry
    keeps one, so a call does not pay for a new thread); without one, a thread of its own. A call
    queued behind hung ones in a busy pool times out like any other slow call.
    """
    own = pool is None
    executor = ThreadPoolExecutor(max_workers=1) if own else pool
    assert executor is not None
    future = executor.submit(func)
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout as err:
        future.cancel()  # still queued: never run it late
        raise Retryable(f"timed out after {timeout_s:.2f}s") from err
    finally:
        if own:
            executor.shutdown(wait=False)


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_s, max=policy.max_s, jitter=policy.initial_s
    )

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryAfter):
            return min(error.after_s, policy.max_s * 4)
        return float(backoff(state))

    return wait


def resilient_call(
    func: Callable[[], T],
    *,
    breaker: Breaker,
    policy: RetryPolicy,
    timeout_s: float,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[T, int]:
    """Call ``func`` under the breaker, a timeout per attempt, and retries for ``Retryable``.

    Returns:
        The result and the number of attempts it took.

    Raises:
        CircuitOpen: the breaker is open.
        Retryable: every attempt failed with an infrastructure fault.
        Permanent: a fault retrying cannot fix (raised at once).
    """
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        breaker.before_call()
        attempts += 1
        try:
            result = with_timeout(func, timeout_s, pool)
        except CircuitOpen:
            raise
        except Retryable:
            breaker.record(infrastructure_fault=True)
            raise
        except Permanent:
            breaker.record(infrastructure_fault=False)  # the service answered
            raise
        breaker.record(infrastructure_fault=False)
        return result

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception(
            lambda e: isinstance(e, Retryable) and not isinstance(e, CircuitOpen)
        ),
        reraise=True,
    )
    return retrying(attempt), attempts
