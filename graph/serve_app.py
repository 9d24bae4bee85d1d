"""What ``langgraph dev`` runs beside the graph (``langgraph.json``'s ``http.app``): a start-up
step that builds and prepares this process's context before the server takes a request.

A fresh clone's first request would otherwise find the domain's backend unseeded; with no index
the server refuses to start, in one line naming the command to run (``keel ingest``), instead of
failing every run with "An internal error occurred". Aegra builds the same context when it loads
the graph (``graph.studio.engine_graph``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.serde._msgpack import STRICT_MSGPACK_ENABLED
from starlette.applications import Starlette

from graph.served import served_context
from keel.errors import KeelError

log = logging.getLogger("keel.serve")


@asynccontextmanager
async def prepared(_: Starlette) -> AsyncIterator[None]:
    """Build the process's context (domain prepared, index required) off the event loop."""
    try:
        await asyncio.to_thread(served_context)
    except KeelError as err:
        print(f"keel: cannot serve: {err}", file=sys.stderr, flush=True)
        raise
    log.info("keel: the domain is prepared and the corpus index answers")
    log.info(
        "keel: checkpoints are read with Keel's allow-list (LANGGRAPH_STRICT_MSGPACK=%s)",
        "true" if STRICT_MSGPACK_ENABLED else "false",
    )
    yield


app = Starlette(lifespan=prepared)
