"""Keel's graph: state, the domain seam, runtime context, approval, persistence and wiring.

The package spans layers (``state`` is a contract the tools import, ``builder`` wires every
agent), so it re-exports nothing: import from the module you mean.

Example:
    >>> from graph.builder import build_graph
    >>> from graph.context import KeelContext
    >>> from stores.backends import open_checkpointer
    >>> from keel.settings import Settings
    >>> settings = Settings()
    >>> with open_checkpointer(settings) as saver:  # doctest: +SKIP
    ...     graph = build_graph(saver)
    ...     config = {"configurable": {"thread_id": "t-1"}}
    ...     graph.invoke({"request": "What is our returns window?"}, config,
    ...                  context=KeelContext.from_settings(settings))
"""
