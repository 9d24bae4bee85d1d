"""Budgets on the engine: threads of one team on two Aegra worker processes against one team
budget, the model a costly fake served over HTTP (``evals.costly_server``) that the workers'
``ChatOpenAI`` calls; and a worker SIGKILLed between reserving and settling a model call.

One engine for the module (a 6 s lease so a killed worker's run is re-run within seconds; a
15 s reservation lease so a dead worker's reservation expires within the test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from evals.budgets_engine import budgets_engine, drive, figures, start_thread
from tests.integration.conftest import require_engine

pytestmark = pytest.mark.integration
TTL_S = 15.0


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Any, Any]]:
    require_engine()
    with budgets_engine(workers=2, worker_count=2, lease_s=6, ttl_s=TTL_S, model_timeout_s=10) as (
        started
    ):
        yield started


@pytest.fixture
def store(running: tuple[Any, Any]) -> Iterator[Any]:
    from stores.budgets_postgres import PostgresBudgets

    opened = PostgresBudgets(running[0].keel_postgres_url)
    yield opened
    opened.close()


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def test_a_worker_killed_mid_call_leaks_no_reservation_and_loses_no_spend(
    running: tuple[Any, Any], store: Any
) -> None:
    from keel.engine import wait_for_run

    # First in the module: the team's budget is still whole, so the call is made.
    engine, model = running
    thread_id, run_id = start_thread(engine, "ann", "slow-1")
    # The model holds the first call: the worker reserved and has not settled.
    assert model.started.wait(120), "the slow call never reached the model"
    held = _wait(
        lambda: [s for s in store.spends(thread_id=thread_id) if s.status == "held"], 30, "a hold"
    )
    assert len(held) == 1
    pids = {w.pid: i for i, w in enumerate(engine.workers)}
    holder = _wait(lambda: _holder(engine, run_id), 30, "a worker to hold the run")
    engine.workers[pids[holder]].kill()
    model.release()  # the provider answers (and bills) a caller that is gone

    # The lease runs out, the other worker re-runs the run and its model calls settle.
    final = wait_for_run(engine.client("ann"), thread_id, run_id, 180)
    assert final["status"] in ("success", "interrupted"), final
    values = engine.client("ann").threads.get_state(thread_id)["values"]
    assert values["status"] in ("awaiting_approval", "escalated"), values

    # The dead worker's reservation expires and stays counted at its reservation.
    time.sleep(max(0.0, held[0].expires_at - time.time()) + 0.5)
    store.expire()
    spends = store.spends(thread_id=thread_id)
    killed = next(s for s in spends if s.id == held[0].id)
    assert killed.status == "expired" and killed.counted.tokens == held[0].reserved_tokens
    assert not [s for s in spends if s.status == "held"], spends
    # No spend lost: the thread's total is every call's count, and at least what was billed.
    total = store.totals([f"thread:{thread_id}:lifetime:"])[f"thread:{thread_id}:lifetime:"]
    assert total.tokens == sum(s.counted.tokens for s in spends)
    assert total.calls == len(spends) == model.spent("slow-1")["calls"]
    assert total.tokens >= model.spent("slow-1")["tokens"]
    engine.restart(pids[holder])


def test_threads_of_one_team_on_two_workers_never_spend_past_the_team_budget(
    running: tuple[Any, Any], store: Any
) -> None:
    engine, model = running
    refs = [f"{('loop', 'long')[n % 2]}-{n}" for n in range(8)]
    ran = drive(engine, refs, timeout_s=300)
    result = figures(ran, model, store)

    assert result["errors"] == [] and result["outcomes"]["run_errors"] == 0, result
    for kind, f in result["kinds"].items():
        assert f["overspend"] == 0, (kind, f)
    # The budgets bound: some thread was stopped, and each ended with a plan or an account.
    assert result["outcomes"]["stopped_by_budget"] > 0, result
    assert set(result["outcomes"]["statuses"]) <= {"awaiting_approval", "escalated"}, result
    assert result["store"]["held"] == 0, result
    # Keel counted at least what the model billed, thread by thread.
    for thread in ran:
        counted = store.spends(thread_id=thread.thread_id)
        billed = model.spent(thread.ref)
        assert len(counted) == billed["calls"], thread
        assert sum(c.counted.tokens for c in counted) >= billed["tokens"], thread


def _holder(engine: Any, run_id: str) -> int | None:
    """The worker process (its pid) holding ``run_id``'s lease in Aegra's runs table."""
    import psycopg

    with psycopg.connect(engine.keel_postgres_url) as conn:
        row = conn.execute(
            "SELECT claimed_by FROM runs WHERE run_id = %s AND status = 'running'", (run_id,)
        ).fetchone()
    if row is None or not row[0]:
        return None
    return int(str(row[0]).rsplit("-worker-", 1)[0].rsplit("-", 1)[1])
