"""Health: probe each integration with a cheap read and report status, latency and breaker state.

The probe goes through the same registry (breaker, timeout, retries) as any call, so what
`keel health` prints is what the executor would meet: with the home's shared breakers
(``stores.breakers``), a breaker another process opened is shown open and its probe is not sent,
and a cooled-down one is probed by this call.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from keel.errors import IntegrationError
from tools.resilience import RetryPolicy
from tools.spec import ToolRegistry


@dataclass(frozen=True)
class Health:
    integration: str
    status: Literal["ok", "down", "unprobed"]
    latency_ms: float
    breaker: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(tools: ToolRegistry, probes: Mapping[str, tuple[str, dict[str, Any]]]) -> list[Health]:
    """Probe every integration that has a probe; integrations without one are reported as such."""
    out: list[Health] = []
    for integration in sorted(tools.breakers):
        breaker = tools.breakers[integration]
        if integration not in probes:
            detail = "no safe probe (its calls have side effects)"
            out.append(Health(integration, "unprobed", 0.0, breaker.state, detail))
            continue
        tool, args = probes[integration]
        started = time.perf_counter()
        try:
            tools.call(tool, args, agent="health", retry=RetryPolicy(attempts=1), fallback=False)
            status: Literal["ok", "down", "unprobed"] = "ok"
            detail = f"{tool} answered"
        except IntegrationError as err:
            status, detail = "down", str(err)
        latency = round((time.perf_counter() - started) * 1000, 2)
        out.append(Health(integration, status, latency, breaker.state, detail))
    return out
