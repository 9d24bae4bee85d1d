"""Overhead of the tool layer per call (argument and answer validation, permission gate, breaker,
timeout, retry wrapper, event to listeners) against calling the same integration function bare.

The breakers are the shared SQLite ones every registry built from settings gets, so their reads
are in the figure."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from keel.settings import Settings
from stores.breakers import SqliteBreakers
from tools.permissions import open_gate
from tools.spec import ToolEvent, ToolRegistry


def bench_tools(settings: Settings, *, calls: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        backend = DemoBackend(Path(tmp) / "demo.sqlite")
        backend.seed()
        breakers = SqliteBreakers(Path(tmp) / "breakers.sqlite")
        tools = ToolRegistry(
            demo_tools(backend), timeout_s=settings.tool_timeout_s, breaker_for=breakers.breaker
        )
        open_gate(settings.policy_file, tools, SupportDesk().scopes(), Path(tmp))
        events: list[ToolEvent] = []
        tools.listeners.append(events.append)
        bare, layered = [], []
        for _ in range(50):  # warm up both paths
            backend.get_customer("C-1001")
            tools.call("get_customer", {"customer_id": "C-1001"}, agent="executor")
        for _ in range(calls):
            t = time.perf_counter()
            backend.get_customer("C-1001")
            bare.append(time.perf_counter() - t)
            t = time.perf_counter()
            tools.call("get_customer", {"customer_id": "C-1001"}, agent="executor")
            layered.append(time.perf_counter() - t)
        breakers.close()
    bare_ms = statistics.median(bare) * 1000
    layered_ms = statistics.median(layered) * 1000
    return {
        "calls": calls,
        "bare_median_ms": round(bare_ms, 4),
        "layered_median_ms": round(layered_ms, 4),
        "tool_overhead_ms": round(layered_ms - bare_ms, 4),
        "events_told": len(events),
    }
