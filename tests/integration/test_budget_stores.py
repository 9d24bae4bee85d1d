"""The budget store on SQLite and on PostgreSQL: the same arithmetic, racing workers on one team
budget, and a worker killed between reserving and settling (its spend is kept, its reservation
expires).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.usage import Amount, BudgetRule, Payer, Usage, applicable
from stores.budgets import Budgets, SqliteBudgets
from stores.budgets_postgres import PostgresBudgets

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("budget_worker.py")
DAY = "2026-12-03"


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        spec = str(tmp_path / "budgets.sqlite")
        SqliteBudgets(Path(spec)).totals([])  # made, in WAL mode, before workers race to
        return spec
    return str(request.getfixturevalue("postgres_url"))


def _open(spec: str) -> Budgets:
    if spec.startswith("postgresql://"):
        return PostgresBudgets(spec)
    return SqliteBudgets(Path(spec))


def test_reserve_settle_and_expire_keep_the_totals(store_spec: str) -> None:
    store = _open(store_spec)
    payer = Payer(thread_id="t-1", user="ann", team="ops")
    budgets = applicable([BudgetRule(scope="thread", tokens=250, calls=3)], payer, DAY)
    ask = Amount(tokens=100, calls=1, cost_micros=7)

    def reserve(rid: str, now: float = 1000.0) -> object:
        return store.reserve(rid, payer=payer, day=DAY, model="m", role="planner", asked=ask,
                             budgets=budgets, ttl_s=10, now=now)  # fmt: skip

    assert not hasattr(reserve("a"), "unit")
    assert not hasattr(reserve("b"), "unit")
    refused = reserve("c")
    assert getattr(refused, "unit", None) == "tokens"
    store.settle("a", Usage(input_tokens=30, output_tokens=10, estimated=False), 2)
    assert not hasattr(reserve("c"), "unit")  # the settled call gave back 60
    key = "thread:t-1:lifetime:"
    assert store.totals([key])[key] == Amount(tokens=240, calls=3, cost_micros=16)
    assert store.expire(now=1011.0) == 2  # b and c: their workers never settled
    assert store.totals([key])[key] == Amount(tokens=240, calls=3, cost_micros=16)
    assert {s.id: s.status for s in store.spends(thread_id="t-1")} == {
        "a": "settled", "b": "expired", "c": "expired",
    }  # fmt: skip
    assert set(store.all_totals("team:ops:")) == {
        "team:ops:lifetime:", "team:ops:day:2026-12-03", "team:ops:month:2026-12",
    }  # fmt: skip


def test_workers_racing_on_one_team_budget_take_no_more_than_it_holds(store_spec: str) -> None:
    rules = [BudgetRule(scope="team", period="day", tokens=3000, calls=1000)]
    granted: list[int] = []
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        store = _open(store_spec)
        try:
            for n in range(12):
                payer = Payer(thread_id=f"t-{w}-{n}", user=f"u{w}", team="ops")
                got = store.reserve(f"{w}-{n}", payer=payer, day=DAY, model="m", role="p",
                                    asked=Amount(tokens=97, calls=1), ttl_s=60,
                                    budgets=applicable(rules, payer, DAY))  # fmt: skip
                if not hasattr(got, "unit"):
                    granted.append(97)
                    store.settle(f"{w}-{n}", Usage(input_tokens=40, output_tokens=7,
                                                   estimated=False), None)  # fmt: skip
        except BaseException as err:  # surfaced below, with the thread's error
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    key = f"team:ops:day:{DAY}"
    total = _open(store_spec).totals([key])[key]
    assert total.tokens == 47 * len(granted) and total.calls == len(granted)
    # Settled calls give back what they did not use, so more calls fit than 3000 // 97.
    assert len(granted) == 72 or total.tokens + 97 > 3000


def test_a_worker_killed_between_reserving_and_settling_loses_no_spend(
    store_spec: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), store_spec, "t-dies"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "calling"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    store = _open(store_spec)
    (held,) = store.spends(thread_id="t-dies")
    assert held.status == "held" and held.reserved_tokens > 1000
    key = "team:ops:lifetime:"
    assert store.totals([key])[key].tokens == held.reserved_tokens
    # Its lease runs out: expired, never held again, and still counted (the provider may have
    # billed the call): another worker of the team sees the spend.
    assert store.expire(now=time.time() + 601) == 1
    (gone,) = store.spends(thread_id="t-dies")
    assert gone.status == "expired" and gone.counted.tokens == held.reserved_tokens
    assert store.totals([key])[key].tokens == held.reserved_tokens
    payer = Payer(thread_id="t-next", user="bob", team="ops")
    rules = applicable([BudgetRule(scope="team", tokens=5000)], payer, DAY)
    late = store.reserve("next", payer=payer, day=DAY, model="m", role="planner",
                         asked=Amount(tokens=5000 - held.reserved_tokens + 1, calls=1),
                         budgets=rules, ttl_s=60)  # fmt: skip
    assert getattr(late, "unit", None) == "tokens"
