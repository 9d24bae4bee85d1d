"""Keel's served graph without the flight record of its runs: what the record costs, measured.

``keel bench --only engine`` serves it beside Keel's graph (``graph/studio.py``) and the bare
graph on one engine, so the record's cost is a difference taken in the same run. It is Keel's
graph exactly as served (same nodes, context, checkpointer allow-list), minus the callback
handler that records each run (``graph.served.ServedRuns``). The process's context is still
the one Keel's entry taps for the record: a tool call or clock read there looks up its thread's
recorded run, finds none and records nothing. Measurement only: nothing Keel serves imports it.
"""

from __future__ import annotations

from typing import Any

from graph.builder import build_graph
from graph.served import ServedGraph
from graph.studio import engine_graph

_compiled = build_graph(with_context_schema=False)
graph = ServedGraph(**{k: v for k, v in _compiled.__dict__.items() if k != "__orig_class__"})
"""Keel's graph as ``graph.served.served_graph`` builds it, with no callback handler."""


def unrecorded_graph() -> Any:
    """Aegra's entry: the process's context built as Keel's entry builds it, and the graph."""
    engine_graph()
    return graph
