"""Breakers shared by every process of one Keel home: opened in one process, honoured in another.

Each step runs in a new Python process that builds its registry the way every caller gets it
(``gated_registry`` from the settings), so nothing carries over in memory: what one process sees
of another's breaker came through ``$KEEL_HOME/breakers.sqlite``. The clock is injected into the
processes' breakers (no sleeping through a cool-down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEEL = str(Path(sys.executable).parent / "keel")

# One process: billing reads with one attempt each (no fallback), then the breakers' states.
WORKER = """
import json, sys
from keel.errors import IntegrationError
from keel.settings import Settings
from domains.support_desk import SupportDesk
from graph.domain import gated_registry
from tools.resilience import RetryPolicy

order = json.loads(sys.argv[1])
tools = gated_registry(SupportDesk(), Settings())
if order["now"] is not None:
    for breaker in tools.breakers.values():
        breaker.clock = lambda: order["now"]
before = tools.breakers["billing"].state
calls = []
for _ in range(order["calls"]):
    try:
        tools.call("get_invoice", {"invoice_id": "INV-2001"}, agent="validator",
                   retry=RetryPolicy(attempts=1), fallback=False)
        calls.append("ok")
    except IntegrationError as err:
        calls.append(type(err).__name__)
print(json.dumps({"before": before, "calls": calls, "after": tools.breakers["billing"].state}))
"""

OUTAGE = "outage"  # billing refuses every connection; billing_legacy, crm, tickets are fine
HEALTHY = "none"


def _env(home: Path, faults: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(KEEL_HOME=str(home), KEEL_FAULTS=faults, LANGSMITH_TRACING="false", PYTHONPATH=path)
    return env


def _worker(home: Path, *, faults: str, calls: int, now: float | None) -> dict[str, Any]:
    order = json.dumps({"calls": calls, "now": now})
    done = subprocess.run(
        [sys.executable, "-c", WORKER, order], env=_env(home, faults), cwd=home,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _open_billing(home: Path, now: float | None) -> None:
    # Ten infrastructure faults in a row (the threshold) open billing's breaker.
    opened = _worker(home, faults=OUTAGE, calls=10, now=now)
    assert opened["calls"] == ["Retryable"] * 10
    assert opened["after"] == "open"


@pytest.mark.integration
def test_a_breaker_opened_in_one_process_makes_another_fail_fast(home: Path) -> None:
    _open_billing(home, now=1000.0)
    # A new process, and billing answers again: within the cool-down it is not called at all.
    # With per-process breakers this process would start closed and its call would succeed.
    other = _worker(home, faults=HEALTHY, calls=3, now=1010.0)
    assert other == {"before": "open", "calls": ["CircuitOpen"] * 3, "after": "open"}


@pytest.mark.integration
def test_after_the_cool_down_one_probe_closes_the_breaker_for_everyone(home: Path) -> None:
    _open_billing(home, now=1000.0)
    probe = _worker(home, faults=HEALTHY, calls=1, now=1031.0)  # cool-down 30 s
    assert probe == {"before": "half_open", "calls": ["ok"], "after": "closed"}
    later = _worker(home, faults=HEALTHY, calls=1, now=1032.0)
    assert later == {"before": "closed", "calls": ["ok"], "after": "closed"}


@pytest.mark.integration
def test_a_failed_probe_reopens_the_breaker_for_everyone(home: Path) -> None:
    _open_billing(home, now=1000.0)
    probe = _worker(home, faults=OUTAGE, calls=1, now=1031.0)
    assert probe == {"before": "half_open", "calls": ["Retryable"], "after": "open"}
    # Re-opened at 1031: still open at 1050 for a process that never saw a fault itself.
    other = _worker(home, faults=HEALTHY, calls=1, now=1050.0)
    assert other == {"before": "open", "calls": ["CircuitOpen"], "after": "open"}


@pytest.mark.integration
def test_keel_health_in_a_new_process_shows_a_breaker_another_process_opened(home: Path) -> None:
    _open_billing(home, now=None)  # the real clock: `keel health` reads it too
    done = subprocess.run(
        [KEEL, "health", "--json"], env=_env(home, HEALTHY), cwd=home,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["integration"]: row for row in json.loads(done.stdout)["integrations"]}
    billing = rows["billing"]
    assert billing["breaker"] == "open"
    # Its probe was refused by the breaker, not sent: billing itself is healthy in this process.
    assert billing["status"] == "down" and "circuit open" in billing["detail"]
    legacy = rows["billing_legacy"]
    assert legacy["breaker"] == "closed" and legacy["status"] == "ok"
