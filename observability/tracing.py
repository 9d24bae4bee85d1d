"""LangSmith tracing through the real ``langsmith`` SDK, and the ids a trace and a record share.

Tracing is switched on by LangSmith's own environment variables (``LANGSMITH_TRACING=true``,
``LANGSMITH_API_KEY``, optionally ``LANGSMITH_ENDPOINT`` and ``LANGSMITH_PROJECT``); the SDK reads
them, Keel does not. When on, Keel passes its own ``LangChainTracer`` whose client runs every
run's inputs and outputs (and, in the SDK versions that pass them on, as 0.15 does, its error and
metadata) through Keel's redactor before they leave the process: the SDK's ``anonymizer`` hook,
which hands it the JSON the SDK would send, nested models dumped. Each segment
(run, resume, recover, fork) is one LangSmith trace whose root run id is the segment's
``trace_id`` in the record; every run of the trace carries ``thread_id``, ``keel_run_id`` and
``keel_segment`` as metadata and the ``keel-run:RUN`` tag, and each node's run is named after its
agent and tagged ``agent:NAME``.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.langchain import LangChainTracer
from langchain_core.tracers.schemas import Run
from langsmith import Client
from langsmith.utils import tracing_is_enabled

from agents.usage import MICROS, Price, PriceTable
from observability.redaction import Redactor


class KeelTracer(LangChainTracer):
    """LangChain's LangSmith tracer, tagging each agent node's run ``agent:NAME``, and pricing
    each metered model call.

    LangGraph names a node's run after the node and tags it ``graph:step:N``; the agent tag makes
    "every run of the planner" one filter in LangSmith. A model call the meter made carries its
    reservation, role, payer and budgets in its metadata (``keel_*``), and its model's price when
    it has one; LangChain's tracer adds the provider's ``usage_metadata``, and this adds
    ``keel_cost_usd``: the usage at Keel's prices, as the budget store settles it.
    """

    def _on_llm_end(self, run: Run) -> None:
        metadata = run.extra.setdefault("metadata", {})
        usage = _usage(run.outputs or {})
        if usage is not None and "keel_price_input" in metadata:
            prices = PriceTable(
                prices={"m": Price(input=metadata["keel_price_input"],
                                   output=metadata["keel_price_output"])}
            )  # fmt: skip
            cost = prices.cost_micros("m", input_tokens=usage[0], output_tokens=usage[1])
            metadata["keel_cost_usd"] = (cost or 0) / MICROS
        super()._on_llm_end(run)

    def _on_chain_start(self, run: Run) -> None:
        node = (run.extra or {}).get("metadata", {}).get("langgraph_node")
        if node is not None and node == run.name:
            run.tags = [*(run.tags or []), f"agent:{node}"]
        super()._on_chain_start(run)


def _usage(outputs: dict[str, Any]) -> tuple[int, int] | None:
    """Input and output tokens the generations of an LLM run report, summed; None if none do."""
    found = [
        m["kwargs"]["usage_metadata"]
        for batch in outputs.get("generations") or []
        for g in batch
        if isinstance(m := (g or {}).get("message"), dict)
        and isinstance(m.get("kwargs"), dict)
        and isinstance(m["kwargs"].get("usage_metadata"), dict)
    ]
    if not found:
        return None
    return (
        sum(int(u.get("input_tokens") or 0) for u in found),
        sum(int(u.get("output_tokens") or 0) for u in found),
    )


class Tracing:
    """The LangSmith side of one app: a redacting tracer when the environment switches it on."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.tracer: LangChainTracer | None = None
        if tracing_is_enabled() is True:
            client = Client(anonymizer=self._hide)
            self.tracer = KeelTracer(client=client)

    def _hide(self, values: dict[str, Any]) -> dict[str, Any]:
        # The SDK passes JSON (models already dumped), so nested models are redacted too.
        redacted: dict[str, Any] = self.redactor(values)
        return redacted

    def callbacks(self) -> list[BaseCallbackHandler]:
        return [self.tracer] if self.tracer is not None else []

    def flush(self, timeout_s: float = 15.0) -> bool:
        """Send what is queued: a short-lived process otherwise loses the tail of its traces.

        Bounded: an endpoint that never answers (or an SDK thread that died) must not keep a
        ``keel`` command from exiting. True when everything was sent in time.
        """
        tracer = self.tracer
        if tracer is None:
            return True

        def send() -> None:
            tracer.wait_for_futures()
            tracer.client.flush()

        sender = threading.Thread(target=send, name="keel-trace-flush", daemon=True)
        sender.start()
        sender.join(timeout_s)
        return not sender.is_alive()


def run_config(
    *,
    thread_id: str,
    run_id: str,
    segment: int,
    trace_id: str,
    callbacks: list[BaseCallbackHandler],
    recursion_limit: int,
) -> dict[str, Any]:
    """The config of one segment: ids as metadata and tags, so trace and record point at each other.

    Example:
        >>> cfg = run_config(thread_id="t", run_id="r", segment=0, trace_id=str(UUID(int=1)),
        ...                  callbacks=[], recursion_limit=50)
        >>> cfg["metadata"]
        {'thread_id': 't', 'keel_run_id': 'r', 'keel_segment': 0}
    """
    return {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": recursion_limit,
        "run_name": "keel",
        "run_id": UUID(trace_id),
        "tags": ["keel", f"keel-run:{run_id}"],
        "metadata": {"thread_id": thread_id, "keel_run_id": run_id, "keel_segment": segment},
        "callbacks": callbacks,
    }
