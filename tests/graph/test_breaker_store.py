"""One contract for every breaker store: in this process's memory and shared in SQLite.

The SQLite cases open a second store on the same file, which is another connection exactly as
another process would have; tests/integration/test_shared_breakers.py does it with processes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stores.breakers import SqliteBreakers
from tools.resilience import CLOSED, BreakerRecord, BreakerStore, MemoryBreakers

Stores = Callable[[], tuple[BreakerStore, BreakerStore]]
"""Two handles on one store's state: the same object in memory, two connections in SQLite."""


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    def make() -> tuple[BreakerStore, BreakerStore]:
        if request.param == "memory":
            memory = MemoryBreakers()
            return memory, memory
        path = tmp_path / "breakers.sqlite"
        return SqliteBreakers(path), SqliteBreakers(path)

    return make


def test_faults_count_up_to_the_threshold_then_open(stores: Stores) -> None:
    one, other = stores()
    assert one.read("billing") == CLOSED
    for n in range(1, 3):
        assert one.fault("billing", now=100.0, threshold=3) == BreakerRecord(n, None, None)
    assert other.fault("billing", now=101.0, threshold=3) == BreakerRecord(3, 101.0, None)
    assert one.read("billing") == BreakerRecord(3, 101.0, None)
    assert one.read("crm") == CLOSED


def test_a_success_anywhere_closes_and_forgets(stores: Stores) -> None:
    one, other = stores()
    one.fault("billing", now=100.0, threshold=1)
    other.success("billing")
    assert one.read("billing") == CLOSED
    assert one.fault("billing", now=101.0, threshold=2).opened_at is None


def test_a_fault_while_open_reopens_from_now(stores: Stores) -> None:
    one, other = stores()
    one.fault("billing", now=100.0, threshold=1)
    assert other.fault("billing", now=120.0, threshold=10).opened_at == 120.0


def test_only_one_caller_gets_the_probe(stores: Stores) -> None:
    one, other = stores()
    one.fault("billing", now=100.0, threshold=1)
    assert not one.claim_probe("billing", now=105.0, cooldown_s=10)  # not cooled down yet
    assert one.claim_probe("billing", now=111.0, cooldown_s=10)
    assert not other.claim_probe("billing", now=111.5, cooldown_s=10)
    assert other.claim_probe("billing", now=121.0, cooldown_s=10)  # the first prober died
    assert not one.claim_probe("crm", now=111.0, cooldown_s=10)  # closed: nothing to probe


def test_a_failed_probe_reopens_and_clears_the_claim(stores: Stores) -> None:
    one, other = stores()
    one.fault("billing", now=100.0, threshold=1)
    assert one.claim_probe("billing", now=111.0, cooldown_s=10)
    assert one.fault("billing", now=111.2, threshold=10) == BreakerRecord(2, 111.2, None)
    assert other.claim_probe("billing", now=121.2, cooldown_s=10)


def test_sqlite_state_outlives_the_store_and_reset_closes_everything(tmp_path: Path) -> None:
    path = tmp_path / "breakers.sqlite"
    first = SqliteBreakers(path)
    first.breaker("billing").trip()
    first.close()
    again = SqliteBreakers(path)
    assert again.breaker("billing").state == "open"
    again.reset()
    assert SqliteBreakers(path).breaker("billing").state == "closed"
