"""Retries, timeouts and the circuit breaker, with a fake clock and scripted failures."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from keel.errors import Permanent, Retryable
from tools.resilience import Breaker, CircuitOpen, RetryAfter, RetryPolicy, resilient_call

FAST = RetryPolicy(attempts=3, initial_s=0.001, max_s=0.002)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(times: int, error: Exception, result: str = "ok") -> Callable[[], str]:
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return result

    return call


def test_retryable_faults_are_retried_until_success() -> None:
    result, attempts = resilient_call(
        failing(2, Retryable("503")), breaker=Breaker("b"), policy=FAST, timeout_s=1
    )
    assert (result, attempts) == ("ok", 3)


def test_retries_stop_at_the_policy() -> None:
    with pytest.raises(Retryable, match="503"):
        resilient_call(failing(5, Retryable("503")), breaker=Breaker("b"), policy=FAST, timeout_s=1)


def test_one_calls_retries_alone_never_open_the_breaker() -> None:
    # A flaky service that answers on the last try is working: the breaker stays closed.
    breaker = Breaker("b")
    policy = RetryPolicy(attempts=6, initial_s=0.001, max_s=0.002)
    result, attempts = resilient_call(
        failing(5, Retryable("503")), breaker=breaker, policy=policy, timeout_s=1
    )
    assert (result, attempts, breaker.state) == ("ok", 6, "closed")
    assert breaker.threshold > RetryPolicy().attempts


def test_permanent_faults_are_never_retried() -> None:
    call = failing(1, Permanent("400 bad request"))
    with pytest.raises(Permanent):
        resilient_call(call, breaker=Breaker("b"), policy=FAST, timeout_s=1)
    assert call() == "ok"  # the second call succeeds: only one attempt was made


def test_a_slow_call_times_out_as_retryable() -> None:
    with pytest.raises(Retryable, match="timed out"):
        resilient_call(
            lambda: time.sleep(0.3), breaker=Breaker("b"),
            policy=RetryPolicy(attempts=1), timeout_s=0.05,
        )  # fmt: skip


def test_retry_after_is_honoured() -> None:
    started = time.monotonic()
    result, attempts = resilient_call(
        failing(1, RetryAfter("429", after_s=0.2)),
        breaker=Breaker("b"),
        policy=RetryPolicy(attempts=2, initial_s=0.001, max_s=1.0),
        timeout_s=1,
    )
    assert (result, attempts) == ("ok", 2) and time.monotonic() - started >= 0.2


def test_breaker_opens_after_repeated_infrastructure_faults_then_probes() -> None:
    clock = Clock()
    breaker = Breaker("billing", threshold=3, cooldown_s=10, clock=clock)
    one = RetryPolicy(attempts=1)
    for _ in range(3):
        with pytest.raises(Retryable):
            resilient_call(failing(1, Retryable("503")), breaker=breaker, policy=one, timeout_s=1)
    assert breaker.state == "open"
    never = failing(0, Retryable("unused"))
    with pytest.raises(CircuitOpen):
        resilient_call(never, breaker=breaker, policy=FAST, timeout_s=1)
    clock.now = 11
    assert breaker.state == "half_open"
    assert resilient_call(never, breaker=breaker, policy=one, timeout_s=1)[0] == "ok"
    assert breaker.state == "closed"


def test_a_failed_probe_reopens_at_once() -> None:
    clock = Clock()
    breaker = Breaker("billing", threshold=1, cooldown_s=10, clock=clock)
    with pytest.raises(Retryable):
        resilient_call(
            failing(1, Retryable("x")), breaker=breaker, policy=RetryPolicy(1), timeout_s=1
        )
    clock.now = 11
    with pytest.raises(Retryable):
        resilient_call(
            failing(1, Retryable("x")), breaker=breaker, policy=RetryPolicy(1), timeout_s=1
        )
    assert breaker.state == "open"


def test_application_answers_never_trip_the_breaker() -> None:
    breaker = Breaker("billing", threshold=2)
    for _ in range(5):
        with pytest.raises(Permanent):
            resilient_call(
                failing(1, Permanent("declined")), breaker=breaker, policy=FAST, timeout_s=1
            )
    assert breaker.state == "closed"


def _open(clock: Clock) -> Breaker:
    breaker = Breaker("billing", threshold=1, cooldown_s=10, clock=clock)
    breaker.record(infrastructure_fault=True)
    assert breaker.state == "open"
    return breaker


def test_while_the_probe_is_out_every_other_call_still_fails_fast() -> None:
    clock = Clock()
    breaker = _open(clock)
    clock.now = 11
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen, match="another call is probing it"):
        breaker.before_call()
    breaker.record(infrastructure_fault=False)
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.before_call()


def test_a_probe_that_never_reports_frees_its_claim_after_another_cool_down() -> None:
    clock = Clock()
    breaker = _open(clock)
    clock.now = 11
    breaker.before_call()  # its caller dies before it records anything
    clock.now = 20
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now = 21
    breaker.before_call()


def test_a_clock_that_went_back_cannot_hold_a_breaker_open() -> None:
    clock = Clock()
    clock.now = 1000
    breaker = _open(clock)
    clock.now = 500  # a wall clock stepped back
    assert breaker.state == "half_open"


def test_trip_opens_at_once_whatever_the_threshold() -> None:
    breaker = Breaker("billing", clock=Clock())
    breaker.trip()
    assert breaker.state == "open" and breaker.opened_at == 0.0
    with pytest.raises(CircuitOpen):
        breaker.before_call()
