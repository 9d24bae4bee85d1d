"""Keel's graph: state, wiring, persistence and approval.

Example:
    >>> from graph import KeelContext, build_graph, open_checkpointer
    >>> from keel.settings import Settings
    >>> settings = Settings()
    >>> with open_checkpointer(settings) as saver:  # doctest: +SKIP
    ...     graph = build_graph(saver)
    ...     config = {"configurable": {"thread_id": "t-1"}}
    ...     graph.invoke({"request": "What is our refund window?"}, config,
    ...                  context=KeelContext.from_settings(settings))
"""

from graph.builder import build_graph
from graph.context import KeelContext
from graph.persistence import open_checkpointer

__all__ = ["KeelContext", "build_graph", "open_checkpointer"]
