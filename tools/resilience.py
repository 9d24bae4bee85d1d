"""Resilience for every tool call: a timeout, retries with backoff and jitter, a circuit breaker.

Retries are for infrastructure faults only (``Retryable``: timeouts, connection errors, 429, 5xx)
and use tenacity; a validation error, a 4xx or a changed response shape is ``Permanent`` and is
never retried. The breaker counts the same infrastructure faults and nothing else, so a declined
payment never trips it; its state lives in a ``BreakerStore``, this process's memory by default or
the table every process of a Keel home shares (``stores.breakers``). An irreversible call is
retried only with its idempotency key, which the backend honours, so a retry after a lost
response cannot act twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, TypeVar

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


class BreakerRecord(NamedTuple):
    """What a breaker store keeps for one integration.

    Attributes:
        failures: consecutive infrastructure faults; any answer from the service resets it.
        opened_at: when the breaker opened (or re-opened), on the store's clock; None: closed.
        probe_at: when the half-open probe was let through; None: no probe is out.
    """

    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None


CLOSED = BreakerRecord()


class BreakerStore(Protocol):
    """Where breakers keep their state: ``MemoryBreakers`` for one process, or a store every
    process of a Keel home shares (``stores.breakers.SqliteBreakers``).

    Each method that changes state is one atomic step, so processes sharing a store agree.
    """

    def read(self, name: str) -> BreakerRecord: ...

    def fault(self, name: str, *, now: float, threshold: int) -> BreakerRecord:
        """Count an infrastructure fault; open at ``threshold``, re-open if already open."""
        ...

    def success(self, name: str) -> None:
        """The service answered: close the breaker and forget its faults."""
        ...

    def claim_probe(self, name: str, *, now: float, cooldown_s: float) -> bool:
        """Let one call through a cooled-down breaker; False if it is not cooled down or another
        call holds the probe (a claim older than ``cooldown_s`` is void: its caller died)."""
        ...


def cooled(since: float, now: float, cooldown_s: float) -> bool:
    """``cooldown_s`` has passed since ``since``; a clock that went back counts as passed, so a
    wall clock stepped backwards cannot hold a breaker open."""
    return not 0 <= now - since < cooldown_s


def breaker_state(record: BreakerRecord, now: float, cooldown_s: float) -> BreakerState:
    if record.opened_at is None:
        return "closed"
    return "half_open" if cooled(record.opened_at, now, cooldown_s) else "open"


class MemoryBreakers:
    """Breaker state in this process only: the default, for unit tests, benches and replay."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> BreakerRecord:
        return self._records.get(name, CLOSED)

    def fault(self, name: str, *, now: float, threshold: int) -> BreakerRecord:
        with self._lock:
            was = self.read(name)
            failures = was.failures + 1
            opened = now if failures >= threshold or was.opened_at is not None else None
            self._records[name] = record = BreakerRecord(failures, opened, None)
        return record

    def success(self, name: str) -> None:
        with self._lock:
            self._records.pop(name, None)

    def claim_probe(self, name: str, *, now: float, cooldown_s: float) -> bool:
        with self._lock:
            was = self.read(name)
            if was.opened_at is None or not cooled(was.opened_at, now, cooldown_s):
                return False
            if was.probe_at is not None and not cooled(was.probe_at, now, cooldown_s):
                return False
            self._records[name] = was._replace(probe_at=now)
        return True


@dataclass
class Breaker:
    """A circuit breaker for one integration.

    After ``threshold`` consecutive infrastructure faults it opens: calls fail fast for
    ``cooldown_s``; then one probe call is let through (half open) while the others still fail
    fast, and the probe's outcome closes or re-opens the breaker.

    The state lives in ``store``: in this process by default; a shared store makes a breaker
    opened by one process open for every process using it. The policy (threshold, cool-down,
    clock) is this object's; ``clock`` must be the store's timeline (a wall clock when shared).

    The threshold sits above one call's retry budget (``RetryPolicy.attempts``): a breaker that
    opens inside a single call's retries cuts off a flaky but working service (at 40 % faults, five
    in a row happen on one call in a hundred), while a service that is really down still trips it
    on the second call.

    Example:
        >>> breaker = Breaker("carrier_api", threshold=2)
        >>> breaker.record(infrastructure_fault=True)
        >>> breaker.record(infrastructure_fault=True)
        >>> breaker.state
        'open'
    """

    name: str
    threshold: int = 10
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    store: BreakerStore = field(default_factory=MemoryBreakers, repr=False)

    @property
    def failures(self) -> int:
        return self.store.read(self.name).failures

    @property
    def opened_at(self) -> float | None:
        return self.store.read(self.name).opened_at

    @property
    def state(self) -> BreakerState:
        return breaker_state(self.store.read(self.name), self.clock(), self.cooldown_s)

    def before_call(self) -> None:
        """Fail fast while open; once cooled down, let exactly one probe through."""
        record = self.store.read(self.name)
        if record.opened_at is None:
            return
        now = self.clock()
        if not cooled(record.opened_at, now, self.cooldown_s):
            raise CircuitOpen(f"{self.name} is unavailable (circuit open); not called")
        if not self.store.claim_probe(self.name, now=now, cooldown_s=self.cooldown_s):
            raise CircuitOpen(
                f"{self.name} is unavailable (circuit open); not called: another call is probing it"
            )

    def record(self, *, infrastructure_fault: bool) -> None:
        if infrastructure_fault:
            self.store.fault(self.name, now=self.clock(), threshold=self.threshold)
        else:
            self.store.success(self.name)

    def trip(self) -> None:
        """Open the breaker now, whatever its count (an operator's or a test's hand)."""
        self.store.fault(self.name, now=self.clock(), threshold=1)


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
