"""Keel's graph: state, wiring, persistence and approval.

The exports load lazily, so ``tools`` and ``retrieval`` (which use ``graph.state``) can be
imported first without a cycle through the builder.

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

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph.builder import build_graph
    from graph.context import KeelContext
    from graph.persistence import open_checkpointer

_EXPORTS = {
    "build_graph": "graph.builder",
    "KeelContext": "graph.context",
    "open_checkpointer": "graph.persistence",
}

__all__ = ["KeelContext", "build_graph", "open_checkpointer"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'graph' has no attribute {name!r}")
