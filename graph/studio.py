"""The graph as ``langgraph dev`` / LangGraph Server load it (see langgraph.json).

The server brings its own checkpointer and passes no Keel context, so this build has neither;
nodes fall back to the context the environment's settings describe.
"""

from graph.builder import build_graph

graph = build_graph(with_context_schema=False)
