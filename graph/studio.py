"""The graph as a server loads it: ``langgraph dev`` / LangGraph Server (langgraph.json) and
Aegra (aegra.json, ``make serve``).

The server brings its own checkpointer and passes no Keel context, so this build has neither;
nodes use the context the process builds once from the environment's settings
(``graph.context``), and every run is written to the flight record (``graph.served``). ``graph``
builds that context on the first run; ``engine_graph``, which Aegra calls once as each server
process loads the graph, builds it at start-up instead, so a worker with bad settings fails
before it takes a run and no run waits for the embedding model.
"""

from typing import Any

from graph.served import served_context, served_graph

graph = served_graph()


def engine_graph() -> Any:
    """Aegra's entry, a 0-argument factory called once per process: the context, the graph."""
    served_context()
    return graph
