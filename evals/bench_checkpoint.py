"""`keel bench --only checkpoint`: checkpoint write and read latency, SQLite against PostgreSQL.

Both savers are opened the way Keel opens them (``open_checkpointer``: SQLite with WAL, Postgres
on its pool, both with Keel's strict serializer) and get the same sequence of checkpoints, each
carrying a state of the size a refund thread has after a few steps. PostgreSQL is a throwaway
local cluster with fsync on, unless ``KEEL_POSTGRES_URL`` names one.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from keel.settings import Settings
from stores.backends import open_checkpointer

WRITES = 300


def _state(step: int) -> dict[str, Any]:
    """About 3 KB of plain state: the request, evidence excerpts, tool results so far."""
    results = [{"tool": "get_invoice", "step": s, "output": {"amount": 49.0}} for s in range(8)]
    return {
        "request": "Customer C-1001 was charged twice for invoice INV-2001, please refund it",
        "evidence": [{"chunk_id": f"runbook:{i:04x}", "text": "x" * 300} for i in range(6)],
        "results": results[: step % 8],
    }


def _measure(saver: BaseCheckpointSaver[str], writes: int) -> dict[str, float]:
    config: Any = {"configurable": {"thread_id": f"bench-{uuid.uuid4()}", "checkpoint_ns": ""}}
    put: list[float] = []
    get: list[float] = []
    for step in range(writes):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = _state(step)
        checkpoint["channel_versions"] = {k: step + 1 for k in checkpoint["channel_values"]}
        t = time.perf_counter()
        config = saver.put(
            config,
            checkpoint,
            {"source": "loop", "step": step, "parents": {}},
            checkpoint["channel_versions"],
        )
        put.append(time.perf_counter() - t)
        t = time.perf_counter()
        found = saver.get_tuple(config)
        get.append(time.perf_counter() - t)
        assert found is not None and found.checkpoint["id"] == checkpoint["id"]
    warm = slice(min(10, writes // 10), None)  # the first calls open files and caches
    return {
        "put_p50_ms": _ms(statistics.median(put[warm])),
        "put_p95_ms": _ms(_p95(put[warm])),
        "get_p50_ms": _ms(statistics.median(get[warm])),
        "get_p95_ms": _ms(_p95(get[warm])),
    }


def bench_checkpoint(settings: Settings, *, writes: int = WRITES) -> dict[str, Any]:
    """Put then read back ``writes`` checkpoints of one thread on each backend."""
    from keel.servers import POSTGRES_HINT, postgres_bin, postgres_server

    results: dict[str, Any] = {"writes": writes}
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-bench-")))
        sqlite = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
        with open_checkpointer(sqlite) as saver:
            results["sqlite"] = _measure(saver, writes)
        if settings.backend == "postgres":
            postgres, where = settings.model_copy(update={"home": home}), "KEEL_POSTGRES_URL"
        elif postgres_bin() is not None:
            url = stack.enter_context(postgres_server()).url()
            postgres = Settings(home=home, postgres_url=url, _env_file=None)  # type: ignore[call-arg, arg-type]
            where = "local cluster, fsync on"
        else:
            # Postgres only when it is there: SQLite's figures stand alone, and say why.
            results["postgres"] = {"skipped": f"no KEEL_POSTGRES_URL and {POSTGRES_HINT}"}
            return results
        with open_checkpointer(postgres) as saver:
            results["postgres"] = _measure(saver, writes)
        results["postgres"]["server"] = where
    results["postgres_over_sqlite_put_p50"] = round(
        results["postgres"]["put_p50_ms"] / max(results["sqlite"]["put_p50_ms"], 1e-6), 2
    )
    return results


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
