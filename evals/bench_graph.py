"""What Keel's graph costs beyond its nodes, and how it holds with many threads in flight.

- ``graph``: the same node functions, run by Keel's graph (per-agent input views, typed routers,
  the runtime context, a SQLite checkpoint after every step with ``durability="sync"``) and by a
  bare ``StateGraph`` that calls them in a straight line, twice: on the same SQLite checkpointer
  with the same durability, and with no checkpointer at all. ``step_overhead_ratio`` is Keel's
  median over the checkpointed bare graph's: what Keel adds to a LangGraph graph that persists
  its steps as any graph with approvals must. ``step_overhead_ratio_no_checkpointer`` is Keel's
  median over the bare graph that saves nothing, which also counts the checkpoints' own cost.
- ``threads``: 200 threads in flight at once in one process (``ainvoke`` under ``asyncio``, on an
  ``AsyncSqliteSaver``), each answering a question from the corpus: throughput, latency
  percentiles and the process's peak memory.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from agents.intake import intake
from agents.planner import plan
from agents.respond import respond
from agents.retriever import retrieve
from agents.validator import check_plan
from domains.support_desk import SupportDesk
from graph.builder import build_graph
from graph.context import KeelContext
from graph.state import KeelState
from keel.settings import Settings
from stores.backends import open_checkpointer
from stores.checkpoints import keel_serde

QUESTION = "What is our refund window?"
STEPS = ("intake", "retrieve", "plan", "check_plan", "respond")


def _bare_graph(checkpointer: Any = None) -> Any:
    """The same five nodes in a straight line: no views, no routers, no context schema."""
    builder = StateGraph(KeelState)
    nodes: dict[str, Any] = {
        "intake": intake,
        "retrieve": retrieve,
        "plan": plan,
        "check_plan": check_plan,
        "respond": respond,
    }
    for name in STEPS:
        builder.add_node(name, nodes[name])
    builder.add_edge(START, STEPS[0])
    for a, b in itertools.pairwise(STEPS):
        builder.add_edge(a, b)
    builder.add_edge(STEPS[-1], END)
    return builder.compile(checkpointer=checkpointer)


def bench_graph(settings: Settings, *, runs: int = 30) -> dict[str, Any]:
    if not SupportDesk().is_prepared(settings):
        SupportDesk().prepare(settings)
    context = KeelContext.from_settings(settings)
    times: dict[str, list[float]] = {"keel": [], "bare_checkpointed": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="keel-bench-graph-") as tmp:
        ours = settings.model_copy(update={"home": Path(tmp) / "keel"})
        theirs = settings.model_copy(update={"home": Path(tmp) / "bare"})
        with open_checkpointer(ours) as saver, open_checkpointer(theirs) as bare_saver:
            graphs = {
                "keel": build_graph(saver),
                "bare_checkpointed": _bare_graph(bare_saver),
                "bare": _bare_graph(),
            }
            for i in range(runs + 3):  # three warm-up runs of each, not counted
                config: Any = {"configurable": {"thread_id": f"bench-{i}"}}
                answers = []
                for name, graph in graphs.items():  # interleaved: load hits all three alike
                    # (durability="sync" on a graph with no checkpointer fails in langgraph 1.2)
                    durability = "sync" if graph.checkpointer else None
                    t = time.perf_counter()
                    final = graph.invoke({"request": QUESTION}, config, context=context,
                                         durability=durability)  # fmt: skip
                    if i >= 3:
                        times[name].append(time.perf_counter() - t)
                    answers.append(final.get("answer"))
                assert final["status"] == "done" and len(set(answers)) == 1, answers
    ms = {name: statistics.median(t) * 1000 for name, t in times.items()}
    return {
        "runs": runs,
        "steps": len(STEPS),
        "keel_median_ms": round(ms["keel"], 2),
        "bare_checkpointed_median_ms": round(ms["bare_checkpointed"], 2),
        "bare_median_ms": round(ms["bare"], 2),
        "keel_per_step_ms": round(ms["keel"] / len(STEPS), 2),
        "bare_per_step_ms": round(ms["bare"] / len(STEPS), 2),
        "step_overhead_ratio": round(ms["keel"] / ms["bare_checkpointed"], 3),
        "step_overhead_ratio_no_checkpointer": round(ms["keel"] / ms["bare"], 3),
    }


async def _many(settings: Settings, threads: int) -> dict[str, Any]:
    context = KeelContext.from_settings(settings)
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="keel-bench-threads-") as tmp:
        async with AsyncSqliteSaver.from_conn_string(str(Path(tmp) / "cp.sqlite")) as saver:
            saver.serde = keel_serde()
            graph = build_graph(saver)

            async def one() -> str:
                config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
                t = time.perf_counter()
                final = await graph.ainvoke({"request": QUESTION}, config, context=context,
                                            durability="sync")  # fmt: skip
                latencies.append(time.perf_counter() - t)
                return str(final["status"])

            started = time.perf_counter()
            statuses = await asyncio.gather(*(one() for _ in range(threads)))
            wall = time.perf_counter() - started
    latencies.sort()
    return {
        "threads": threads,
        "completed": statuses.count("done"),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(threads / wall, 2),
        "threads_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "threads_p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bench_threads(settings: Settings, *, threads: int = 200) -> dict[str, Any]:
    if not SupportDesk().is_prepared(settings):
        SupportDesk().prepare(settings)
    return asyncio.run(_many(settings, threads))
