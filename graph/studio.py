"""The graph as a server loads it: ``langgraph dev`` / LangGraph Server (langgraph.json) and
Aegra (aegra.json, ``make serve``).

The server brings its own checkpointer and passes no Keel context, so this build has neither;
nodes use the context the process builds once from the environment's settings
(``graph.context``). ``graph`` builds that context on the first run; ``engine_graph``, which
Aegra calls once as each server process loads the graph, builds it at start-up instead, so a
worker with bad settings fails before it takes a run and no run waits for the embedding model.
"""

from typing import Any

from graph.builder import build_graph
from graph.context import process_context

graph = build_graph(with_context_schema=False)


def engine_graph() -> Any:
    """Aegra's entry, a 0-argument factory called once per process: the context, the graph."""
    process_context()
    return graph
