"""What ``langgraph dev`` runs beside the graph (``langgraph.json``'s ``http.app``): a start-up
step that builds and prepares this process's context before the server takes a request, and
gives each run's end a way to label its thread.

A fresh clone's first request would otherwise find the domain's backend unseeded; with no index
the server refuses to start, in one line naming the command to run (``keel ingest``), instead of
failing every run with "An internal error occurred". Aegra builds the same context when it loads
the graph (``graph.studio.engine_graph``).

Thread labels (``keel_title``, ``keel_status``, ``keel_domain``: what Studio's and a chat
client's thread lists show) go through the server's own API, in process (the LangGraph SDK's
``get_client()`` with no URL), on the server's event loop: the in-memory server keeps its threads
to itself. On Aegra, ``graph.studio.AegraThreadLabels`` writes them into its table.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.serde._msgpack import STRICT_MSGPACK_ENABLED
from starlette.applications import Starlette

from graph.served import RUNS, ThreadLabel, served_context
from keel.errors import KeelError

log = logging.getLogger("keel.serve")


class DevThreadLabels:
    """Labels a thread through the server's own API, scheduled on the server's event loop from
    whichever thread the run's end is reported in; never waited for (a label is not worth a
    stalled run), a failure logged."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, label: ThreadLabel) -> None:
        future = asyncio.run_coroutine_threadsafe(self._label(label), self.loop)
        future.add_done_callback(_logged)

    async def _label(self, label: ThreadLabel) -> None:
        from langgraph_sdk import get_client

        client = get_client(url=None, api_key=None)
        named = label.metadata()
        thread = await client.threads.get(label.thread_id)
        if (thread.get("metadata") or {}).get("keel_title"):
            named.pop("keel_title", None)  # a thread is named by its first request
        await client.threads.update(label.thread_id, metadata=named)


def _logged(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("keel: a thread label was not written: %s", future.exception())


@asynccontextmanager
async def prepared(_: Starlette) -> AsyncIterator[None]:
    """Build the process's context (domain prepared, index required) off the event loop."""
    try:
        await asyncio.to_thread(served_context)
    except KeelError as err:
        print(f"keel: cannot serve: {err}", file=sys.stderr, flush=True)
        raise
    if RUNS.labeller is None:
        RUNS.labeller = DevThreadLabels(asyncio.get_running_loop())
    log.info("keel: the domain is prepared and the corpus index answers")
    log.info(
        "keel: checkpoints are read with Keel's allow-list (LANGGRAPH_STRICT_MSGPACK=%s)",
        "true" if STRICT_MSGPACK_ENABLED else "false",
    )
    yield


app = Starlette(lifespan=prepared)
