"""The flight recorder: captures a run without recorder calls scattered through agent code.

Four taps, all attached from outside the agents:

- a LangChain callback handler in the run's config sees every node enter and leave (with its
  inputs and outputs: plans, verdicts, escalations) and every chat model call;
- a listener on the tool registry sees every tool call, allowed or denied;
- a wrapper around the corpus store sees every retrieval (query, kept, filtered, conflicts);
- a wrapper around the context's clock records every time reading (replay serves them back).

``KeelApp`` adds what only it knows: segment start and end, checkpoints, approval requests (the
interrupt payloads) and answers (the resume values).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphBubbleUp
from pydantic_core import to_jsonable_python

from agents.models import MeterEvent
from graph.context import KeelContext
from keel.errors import StoreUnavailable
from observability.record_events import (
    AnyPayload,
    BudgetMetered,
    ClockRead,
    EscalationMade,
    ModelCall,
    NodeEntered,
    NodeLeft,
    PlanMade,
    RecordEvent,
    RetrievalDone,
    ToolCallMade,
    VerdictGiven,
)
from observability.redaction import Redactor
from retrieval.curation import Retrieval
from retrieval.store import CorpusStore
from stores.flight_record import FlightRecord
from tools.spec import ToolEvent

if TYPE_CHECKING:  # the chat models' package is imported when a model is made, not by every command
    from langchain_core.language_models import BaseChatModel

RecordSink = Callable[[RecordEvent], None]
"""Told every event a recorder records, after redaction, before (and whatever) the store."""

ROLES = {"plan": "planner", "check_plan": "validator"}
"""The agent role of each node, for model calls (a node's name otherwise). The result check
makes no model call: it runs inside ``execute`` (``graph.builder.execute_then_check``)."""


def jsonable(value: Any) -> Any:
    """Plain JSON data from state values (pydantic models, dates, tuples)."""
    return to_jsonable_python(value, fallback=str)


def model_name(model: BaseChatModel) -> str:
    """The name a ``Plan`` gives a model (``model:NAME``), as ``agents.planner`` computes it."""
    return str(
        getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunRecording:
    """One segment of one run: where its events go and what they are keyed by."""

    def __init__(
        self, recorder: Recorder, *, run_id: str, thread_id: str, segment: int, trace_id: str
    ) -> None:
        self.recorder = recorder
        self.run_id = run_id
        self.thread_id = thread_id
        self.segment = segment
        self.trace_id = trace_id
        self.checkpoint_id: str | None = None
        self.written = 0
        self.lost = 0
        """Events the store refused (an outage): never the run's failure. After the first, the
        segment stops writing to the store (one warning, not one wait per event)."""

    def emit(self, payload: AnyPayload, *, node: str | None = None, step: int | None = None) -> int:
        """Redact, store (committed) and log one event; its sequence number (0 when lost).

        A store that fails (a Postgres outage, a disk error) loses the event, not the run: the
        record watches the run, and the checkpoints, the ledger and the backend hold its truth.
        The first loss is a warning in the log, with the event's ids and kind; the segment's
        later events are not offered to that store again (an outage would make each one wait
        for its connection timeout), and the segment's end logs how many were lost.
        """
        sinks = self.recorder.sinks
        if self.lost and not sinks:
            self.lost += 1
            return 0
        clean = self.recorder.redactor.model(payload)
        event = RecordEvent(
            run_id=self.run_id,
            thread_id=self.thread_id,
            segment=self.segment,
            checkpoint_id=self.checkpoint_id,
            node=node,
            step=step,
            at=self.recorder.wall_clock().isoformat(),
            payload=clean,
        )
        for sink in sinks:
            sink(event)
        if self.lost:
            self.lost += 1
            return 0
        try:
            seq = self.recorder.flight_record.append(event)
        except StoreUnavailable as err:
            self.lost += 1
            self.recorder.log.warning(
                "record_event_lost",
                extra={
                    "keel": {
                        "event": payload.kind, "run_id": self.run_id, "thread_id": self.thread_id,
                        "segment": self.segment, "error": " ".join(str(err).split())[:300],
                    }
                },
            )  # fmt: skip
            return 0
        self.written += 1
        self.recorder.log.info(
            payload.kind,
            extra={
                "keel": {
                    "event": payload.kind, "seq": seq, "run_id": self.run_id,
                    "thread_id": self.thread_id, "segment": self.segment,
                    "checkpoint_id": self.checkpoint_id, "trace_id": self.trace_id,
                    "node": node, "step": step,
                }
            },
        )  # fmt: skip
        return seq


class Recorder:
    """Writes the record of the runs of one ``KeelApp`` (or one replay) to a ``FlightRecord``.

    Example:
        >>> from stores.flight_record import SqliteFlightRecord
        >>> rec = Recorder(SqliteFlightRecord(":memory:"), Redactor(["token"]))
        >>> rec.active is None
        True
    """

    def __init__(
        self,
        flight_record: FlightRecord,
        redactor: Redactor,
        *,
        wall_clock: Callable[[], datetime] = _utc_now,
        log: logging.Logger | None = None,
        sinks: Iterable[RecordSink] = (),
    ) -> None:
        self.flight_record = flight_record
        self.sinks = list(sinks)
        """Given every event as it is recorded, redacted (OpenTelemetry's spans are one)."""
        self.redactor = redactor
        self.wall_clock = wall_clock
        self.log = log or logging.getLogger("keel.record")
        self.active: RunRecording | None = None
        self.node: tuple[str, int | None] | None = None
        """The node running now (set by the callback): tool calls, retrievals and clock readings
        are attributed to it."""

    def start(
        self, *, run_id: str, thread_id: str, trace_id: str, segment: int | None = None
    ) -> RunRecording:
        """Open the next segment of ``run_id`` (``segment``: the caller read which it is);
        events go to it until ``stop``."""
        self.redactor.begin(run_id)
        if segment is None:
            segment = self.flight_record.next_segment(run_id)
        self.active = RunRecording(
            self, run_id=run_id, thread_id=thread_id, segment=segment, trace_id=trace_id
        )
        return self.active

    def stop(self) -> None:
        active = self.active
        if active is not None and active.lost:
            self.log.warning(
                "record_events_lost",
                extra={"keel": {"run_id": active.run_id, "thread_id": active.thread_id,
                                "segment": active.segment, "lost": active.lost}},
            )  # fmt: skip
        self.active = None
        self.node = None

    def emit(
        self, payload: AnyPayload, *, node: str | None = None, step: int | None = None
    ) -> None:
        """Record into the active segment; outside a run (a health probe, a bench) nothing."""
        if self.active is None:
            return
        if node is None and self.node is not None:
            node, step = self.node
        self.active.emit(payload, node=node, step=step)

    def instrument(self, context: KeelContext) -> KeelContext:
        """The context with its taps: tool listener, recording corpus and clock."""
        if self.on_tool_event not in context.tools.listeners:
            context.tools.listeners.append(self.on_tool_event)
        if context.meter is not None and self.on_meter_event not in context.meter.listeners:
            context.meter.listeners.append(self.on_meter_event)
        return replace(
            context,
            corpus=RecordingCorpus(context.corpus, self),
            clock=RecordingClock(context.clock, self),
        )

    def on_tool_event(self, event: ToolEvent) -> None:
        self.emit(ToolCallMade(call=event))

    def on_meter_event(self, event: MeterEvent) -> None:
        usage = event.usage
        self.emit(
            BudgetMetered(
                action=event.action, reservation_id=event.reservation_id, model=event.model,
                role=event.role, thread_id=event.payer.thread_id, user=event.payer.user,
                team=event.payer.team, reserved_tokens=event.reserved.tokens,
                reserved_cost_micros=event.reserved.cost_micros, budgets=event.budgets,
                input_tokens=usage.input_tokens if usage else None,
                output_tokens=usage.output_tokens if usage else None,
                estimated=usage.estimated if usage else None, cost_micros=event.cost_micros,
                refused_by=event.refused_by, note=event.note,
            )
        )  # fmt: skip

    def callback(self) -> RecordingCallback:
        return RecordingCallback(self)


class RecordingClock:
    """The context's clock, each reading recorded: replay serves the same time back."""

    def __init__(self, inner: Callable[[], datetime], recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def __call__(self) -> datetime:
        now = self.inner()
        self.recorder.emit(ClockRead(value=now.isoformat()))
        return now


class RecordingCorpus(CorpusStore):
    """The corpus store, each search recorded with what it kept, filtered and found in conflict."""

    def __init__(self, inner: CorpusStore, recorder: Recorder) -> None:
        super().__init__(inner.settings, inner.embedder)
        self.inner = inner
        self.recorder = recorder

    def search(self, text: str, k: int, today: date | None = None) -> Retrieval:
        found = self.inner.search(text, k, today)
        self.recorder.emit(
            RetrievalDone(
                query=text,
                k=k,
                today=today.isoformat() if today else None,
                evidence=jsonable(found.evidence),
                filtered=jsonable(found.filtered),
                conflicts=jsonable(found.conflicts),
            ),
        )
        return found


class RecordingCallback(BaseCallbackHandler):
    """Sees the graph's nodes and model calls through LangChain's callback system."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._root: UUID | None = None
        self._nodes: dict[UUID, tuple[str, int | None, float]] = {}
        self._models: dict[UUID, tuple[str, str, list[dict[str, Any]], float, str]] = {}

    def is_node(self, run_id: UUID) -> bool:
        """Whether ``run_id`` is a node of the run that has started and not yet ended."""
        return run_id in self._nodes

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is None:
            self._root = run_id
            return
        node = (metadata or {}).get("langgraph_node")
        if parent_run_id != self._root or node is None or kwargs.get("name") != node:
            return  # a router, a writer or a runnable inside a node: not a node run
        step = (metadata or {}).get("langgraph_step")
        self._nodes[run_id] = (node, step, time.perf_counter())
        self.recorder.node = (node, step)
        channels = sorted(map(str, inputs)) if isinstance(inputs, dict) else []
        self.recorder.emit(NodeEntered(channels=channels), node=node, step=step)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._nodes.pop(run_id, None)
        if entry is None:
            return
        node, step, started = entry
        self.recorder.node = None
        body = jsonable(outputs)
        body = body if isinstance(body, dict) else {"output": body}
        latency = round((time.perf_counter() - started) * 1000, 3)
        self.recorder.emit(NodeLeft(outputs=body, latency_ms=latency), node=node, step=step)
        self._derived(body, node, step)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._nodes.pop(run_id, None)
        if entry is None:
            return
        node, step, started = entry
        self.recorder.node = None
        latency = round((time.perf_counter() - started) * 1000, 3)
        if isinstance(error, GraphBubbleUp):  # an interrupt: the node pauses for a human
            left = NodeLeft(interrupted=True, latency_ms=latency)
        else:
            left = NodeLeft(
                error=str(error)[:500], error_kind=type(error).__name__, latency_ms=latency
            )
        self.recorder.emit(left, node=node, step=step)

    def _derived(self, outputs: dict[str, Any], node: str, step: int | None) -> None:
        """Plans, verdicts and escalations as events of their own (they are what explain reads)."""
        if node == "plan" and "planner" in outputs:
            plan = outputs.get("plan")
            self.recorder.emit(
                PlanMade(plan=plan if isinstance(plan, dict) else None, planner=outputs["planner"]),
                node=node,
                step=step,
            )
        verdict = outputs.get("plan_verdict")
        if isinstance(verdict, dict):
            self.recorder.emit(VerdictGiven.model_validate(verdict), node=node, step=step)
        verdict = outputs.get("result_verdict")
        if isinstance(verdict, dict):
            # ``execute`` runs steps in turn and goes past a step only when its check passed
            # (``graph.builder.execute_then_check``), so every outcome before the last was
            # judged ok, with no reasons: one verdict per step, as the check gave them.
            results = outputs.get("results")
            for earlier in results[:-1] if isinstance(results, list) else []:
                if isinstance(earlier, dict) and isinstance(earlier.get("step"), int):
                    passed = VerdictGiven(stage="result", ok=True, step=earlier["step"])
                    self.recorder.emit(passed, node=node, step=step)
            self.recorder.emit(VerdictGiven.model_validate(verdict), node=node, step=step)
        escalation = outputs.get("escalation")
        if isinstance(escalation, dict):
            self.recorder.emit(EscalationMade.model_validate(escalation), node=node, step=step)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        meta = metadata or {}
        params = kwargs.get("invocation_params") or {}
        name = str(
            meta.get("ls_model_name")
            or params.get("model_name")
            or params.get("model")
            or (serialized or {}).get("name")
            or params.get("_type")
            or "unknown"
        )
        node = str(meta.get("langgraph_node") or "")
        prompt = [
            {"role": m.type, "content": jsonable(m.content)} for batch in messages for m in batch
        ]
        provider = str(meta.get("ls_provider") or "")
        self._models[run_id] = (node, name, prompt, time.perf_counter(), provider)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._models.pop(run_id, None)
        if entry is None:
            return
        node, name, prompt, started, provider = entry
        generation = response.generations[0][0] if response.generations else None
        message = getattr(generation, "message", None)
        usage = getattr(message, "usage_metadata", None) or {}
        text = generation.text if generation is not None else None
        self.recorder.emit(
            ModelCall(
                role=ROLES.get(node, node or "unknown"),
                model=name,
                provider=provider or None,
                prompt=prompt,
                output=text,
                tool_calls=[
                    {"name": c["name"], "args": jsonable(c["args"]), "id": c.get("id")}
                    for c in getattr(message, "tool_calls", None) or []
                ],
                invalid_tool_calls=[
                    {"name": c.get("name"), "args": c.get("args"), "id": c.get("id")}
                    for c in getattr(message, "invalid_tool_calls", None) or []
                ],
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                planner=f"model:{name}",
            ),
            node=node or None,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._models.pop(run_id, None)
        if entry is None:
            return
        node, name, prompt, started, provider = entry
        self.recorder.emit(
            ModelCall(
                role=ROLES.get(node, node or "unknown"),
                model=name,
                provider=provider or None,
                prompt=prompt,
                error=str(error)[:500],
                error_kind=type(error).__name__,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                planner=f"model:{name}",
            ),
            node=node or None,
        )
