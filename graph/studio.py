"""The graph as a server loads it: ``langgraph dev`` / LangGraph Server (langgraph.json) and
Aegra (aegra.json, ``make serve``).

The server brings its own checkpointer and passes no Keel context, so this build has neither;
nodes use the context the process builds once from the environment's settings
(``graph.context``), and every run is written to the flight record (``graph.served``). ``graph``
builds that context on the first run; ``engine_graph``, which Aegra calls as each server process
loads the graph (and again per request), builds it at start-up instead, so a worker with bad
settings fails before it takes a run and no run waits for the embedding model.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg

from graph.served import RUNS, ThreadLabel, served_context, served_graph

graph = served_graph()

LABEL_SQL = (
    "UPDATE thread SET metadata_json = %s::jsonb || metadata_json || %s::jsonb WHERE thread_id = %s"
)
"""A label into Aegra's thread row: the title only where there is none yet (a thread is named
by its first request), the status and the domain always."""


class AegraThreadLabels:
    """Writes each run's thread label into Aegra's own ``thread`` table (the metadata its thread
    search returns and filters on), in the engine's database (Aegra's ``DATABASE_URL``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def __call__(self, label: ThreadLabel) -> None:
        named = label.metadata()
        title = {"keel_title": named.pop("keel_title")} if "keel_title" in named else {}
        params = (json.dumps(title), json.dumps(named), label.thread_id)
        with self._lock:  # one connection kept for the process's labels, opened again if lost
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            try:
                self._conn.execute(LABEL_SQL, params)
            except psycopg.OperationalError:
                self._conn.close()
                self._conn = None
                raise


def engine_graph() -> Any:
    """Aegra's entry, a 0-argument factory: the context (built once), the graph, and each run's
    thread labelled in Aegra's table."""
    served_context()
    if RUNS.labeller is None:
        # Aegra is this function's host, not a dependency of Keel's runtime: only the engine's
        # processes have it (the `serve` extra), and they have imported it before they call this.
        from aegra_api.settings import settings as aegra

        RUNS.labeller = AegraThreadLabels(aegra.db.database_url_sync)
    return graph
