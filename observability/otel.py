"""OpenTelemetry spans of every run, in the GenAI semantic conventions, sent over OTLP/HTTP.

Switched on by OpenTelemetry's own environment: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), with the SDK's other settings honoured as the SDK reads
them (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_SDK_DISABLED``...). Unset, this module imports nothing of
OpenTelemetry's SDK (chromadb may have) and a run pays one empty loop per recorded event. It
runs beside LangSmith (``observability.tracing``), not instead of it.

The spans are made from the flight record's events, as the recorder emits them (a sink of
``observability.recorder.Recorder``): one seam for ``keel run`` (``KeelApp``), ``langgraph dev``
and the engine's workers (``graph.served``), the record's ids on every span, and the record's
redaction already applied. One OpenTelemetry trace per segment of a run (its trace id is the
segment's ``trace_id`` in the record, also LangSmith's root run id); the spans, events and
attributes it sends, and when content is sent, are listed in ``docs/observability.md``
("OpenTelemetry").

Keel keeps a tracer provider of its own (never the global one): a server that has its own
OpenTelemetry set-up (Aegra's ``OTEL_TARGETS``) keeps it, and Keel's spans do not mix with it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from observability.record_events import (
    ApprovalAnswered,
    ApprovalRequested,
    BudgetMetered,
    EscalationMade,
    ModelCall,
    NodeEntered,
    NodeLeft,
    RecordEvent,
    RunEnded,
    RunStarted,
    ToolCallMade,
    VerdictGiven,
)

if TYPE_CHECKING:  # OpenTelemetry's SDK is imported only when an endpoint is configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("keel.otel")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either switches the export on (the traces one wins, as in the SDK)."""

CONTENT_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
PACKAGES = "opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
CONTENT_CHARS = 4000
"""Captured content (arguments, results, request, answer) is cut to this many characters."""


def endpoint_of(environ: Mapping[str, str]) -> str | None:
    """The configured OTLP endpoint, or None when the export is off.

    Example:
        >>> endpoint_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
        'http://127.0.0.1:4318'
        >>> endpoint_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
        >>> endpoint_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
        >>> endpoint_of({}) is None
        True
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    for name in ENDPOINT_VARS:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


class OtelUnavailable(RuntimeError):
    """An endpoint is configured but OpenTelemetry's SDK or OTLP exporter is not installed."""


_lock = threading.Lock()
_exports: dict[tuple[str, ...], OtelExport] = {}
_warned: set[str] = set()


def otel_from_environment(environ: Mapping[str, str] | None = None) -> OtelExport | None:
    """This process's exporter for the environment's endpoint (one per configuration, kept for
    the process's life), or None when the export is off.

    An endpoint set with the packages missing is said once on the log and on standard error
    (``keel`` prints it; a server logs it) and runs go on without spans: tracing is never the
    run's failure.
    """
    env = os.environ if environ is None else environ
    endpoint = endpoint_of(env)
    if endpoint is None:
        return None
    key = tuple(
        env.get(name, "")
        for name in (*ENDPOINT_VARS, "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", CONTENT_VAR)
    )
    with _lock:
        known = _exports.get(key)
        if known is not None:
            return known
        try:
            export = OtelExport.create(env)
        except OtelUnavailable as err:
            if endpoint not in _warned:
                _warned.add(endpoint)
                log.warning("otel_unavailable", extra={"keel": {"error": str(err)}})
                print(f"keel: {err}", file=sys.stderr)
            return None
        _exports[key] = export
        return export


class _KeelIds:
    """Span and trace ids for Keel's spans: a segment's trace id is its record ``trace_id``.

    The SDK asks its id generator for a trace id when a root span starts; Keel starts its roots
    under a lock with the id it wants set here (a random one otherwise).
    """

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        self.next_trace_id: int | None = None

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return False  # a record's trace id is a UUID: not W3C's random-flag kind

    def generate_trace_id(self) -> int:
        wanted, self.next_trace_id = self.next_trace_id, None
        return wanted if wanted else self._random.generate_trace_id()


@dataclass
class _Segment:
    """The open spans of one segment of one run."""

    root: Span
    ids: dict[str, Any]
    nodes: dict[str, Span] = field(default_factory=dict)
    chats: dict[str, Span] = field(default_factory=dict)
    last_chat: dict[str, Span] = field(default_factory=dict)
    """Per node, the chat span the meter opened last (a model call event enriches it)."""


class OtelExport:
    """Turns the flight record's events into OpenTelemetry spans and exports them over OTLP.

    ``on_event`` is a recorder sink: give it every event of every run (concurrent runs of a
    server included; each segment's spans are kept apart by run id and segment).
    """

    def __init__(
        self,
        provider: TracerProvider,
        tracer: Tracer,
        ids: _KeelIds,
        *,
        capture_content: bool = False,
    ) -> None:
        self.provider = provider
        self.tracer = tracer
        self.ids = ids
        self.capture_content = capture_content
        self._lock = threading.Lock()
        self._segments: dict[tuple[str, int], _Segment] = {}

    @classmethod
    def create(cls, environ: Mapping[str, str]) -> OtelExport:
        """A provider with a batching OTLP/HTTP exporter configured from ``environ``.

        Raises:
            OtelUnavailable: the SDK or the exporter is not installed.
        """
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as err:
            names = "/".join(n for n in ENDPOINT_VARS if environ.get(n))
            raise OtelUnavailable(
                f"{names} is set but OpenTelemetry's exporter is not installed "
                f"({err.name or err}): no spans are sent. Install {PACKAGES}, or unset the "
                "endpoint."
            ) from err
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol != "http/protobuf":
            log.warning(
                "otel_protocol",
                extra={"keel": {"asked": protocol, "used": "http/protobuf"}},
            )
        ids = _KeelIds()
        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "keel"}
        provider = TracerProvider(resource=Resource.create(attributes), id_generator=ids)  # type: ignore[arg-type]
        # The endpoint from ``environ`` (the SDK would read os.environ): the signal's own URL as
        # given, the base one with the traces path, as the OTLP exporter specification says.
        traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
        exporter = OTLPSpanExporter(endpoint=traces or f"{base}/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        content = environ.get(CONTENT_VAR, "").strip().lower() == "true"
        return cls(provider, provider.get_tracer("keel"), ids, capture_content=content)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Export what is queued (a short-lived ``keel`` command calls it before exiting)."""
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    # -- the record's events ---------------------------------------------------------------

    def on_event(self, event: RecordEvent) -> None:
        """One recorded event: a span opened or closed, an attribute, a span event."""
        try:
            self._on_event(event)
        except Exception as err:  # spans watch the run: never its failure
            log.warning(
                "otel_event_failed",
                extra={"keel": {"event": event.kind, "error": f"{type(err).__name__}: {err}"}},
            )

    def _on_event(self, event: RecordEvent) -> None:
        payload = event.payload
        key = (event.run_id, event.segment)
        if isinstance(payload, RunStarted):
            self._start(key, event, payload)
            return
        with self._lock:
            seg = self._segments.get(key)
            if seg is not None and isinstance(payload, RunEnded):
                del self._segments[key]
        if seg is None:
            return
        node = event.node
        if isinstance(payload, NodeEntered) and node is not None:
            seg.nodes[node] = self._child(seg, seg.root, f"invoke_agent {node}", {
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": node,
                "keel.step": event.step,
            })  # fmt: skip
        elif isinstance(payload, NodeLeft) and node is not None:
            span = seg.nodes.pop(node, None)
            if span is not None:
                seg.last_chat.pop(node, None)
                if payload.interrupted:
                    span.set_attribute("keel.interrupted", True)
                if payload.error is not None:
                    _fail(span, payload.error_kind or "error", payload.error)
                span.end()
        elif isinstance(payload, BudgetMetered):
            self._metered(seg, node, payload)
        elif isinstance(payload, ModelCall):
            self._model_call(seg, node, payload)
        elif isinstance(payload, ToolCallMade):
            self._tool(seg, node, payload)
        elif isinstance(payload, ApprovalRequested):
            request = payload.request
            actions = request.get("action_requests", [])
            self._parent(seg, node).add_event("keel.approval.requested", _clean({
                "keel.interrupt_id": payload.interrupt_id,
                "gen_ai.tool.name": [str(a.get("name")) for a in actions],
                "keel.approval.digests": list(request.get("digests", [])),
                "keel.approval.request_id": request.get("request_id"),
                "keel.manifest_version": request.get("manifest_version"),
                "keel.tainted": bool(request.get("tainted_evidence")),
            }))  # fmt: skip
        elif isinstance(payload, ApprovalAnswered):
            decisions = payload.answer.get("decisions")
            kinds = [
                str(d.get("type")) for d in decisions if isinstance(d, dict)
            ] if isinstance(decisions, list) else []  # fmt: skip
            self._parent(seg, node).add_event("keel.approval.answered", _clean({
                "keel.approval.decisions": kinds or [str(payload.answer.get("type", "unknown"))],
                "keel.approval.answer": self._content(payload.answer),
            }))  # fmt: skip
        elif isinstance(payload, VerdictGiven):
            self._parent(seg, node).add_event("keel.verdict", _clean({
                "keel.verdict.stage": payload.stage, "keel.verdict.ok": payload.ok,
                "keel.verdict.reasons": list(payload.reasons),
            }))  # fmt: skip
        elif isinstance(payload, EscalationMade):
            self._parent(seg, node).add_event("keel.escalation", _clean({
                "keel.escalation.reason": payload.reason,
                "keel.escalation.done": list(payload.done),
                "keel.escalation.left": list(payload.left),
                "keel.escalation.unsure": list(payload.unsure),
            }))  # fmt: skip
        elif isinstance(payload, RunEnded):
            self._end(seg, payload)

    def _start(self, key: tuple[str, int], event: RecordEvent, started: RunStarted) -> None:
        from opentelemetry.context import Context

        ids: dict[str, Any] = {
            "gen_ai.conversation.id": event.thread_id,
            "keel.thread_id": event.thread_id,
            "keel.run_id": event.run_id,
            "keel.segment": event.segment,
        }
        attributes = {
            "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "keel",
            "keel.mode": started.mode, "keel.trace_id": started.trace_id,
            "keel.planner_model": started.planner_model,
            "keel.manifest_version": started.manifest_version,
            "keel.request": self._content(started.request),
            **ids,
        }  # fmt: skip
        with self._lock:
            old = self._segments.pop(key, None)
            self.ids.next_trace_id = _trace_id_of(started.trace_id)
            # A trace of its own (an empty context): whatever span a server has open around the
            # run belongs to its own telemetry, and the trace id is the record's.
            root = self.tracer.start_span(
                "invoke_workflow keel", context=Context(), attributes=_clean(attributes)
            )
            self._segments[key] = _Segment(root, ids)
        if old is not None:  # the same segment started again: close what it left open
            self._end(old, None)

    def _end(self, seg: _Segment, ended: RunEnded | None) -> None:
        for span in [*seg.chats.values(), *seg.nodes.values()]:
            span.set_attribute("keel.unfinished", True)
            span.end()
        seg.chats.clear()
        seg.nodes.clear()
        if ended is not None:
            seg.root.set_attribute("keel.status", ended.status)
            if ended.answer and self.capture_content:
                seg.root.set_attribute("keel.answer", ended.answer[:CONTENT_CHARS])
            if ended.error is not None:
                kind = "cancelled" if ended.status == "cancelled" else ended.error.split(":")[0]
                _fail(seg.root, kind, ended.error)
        seg.root.end()

    def _child(
        self,
        seg: _Segment,
        parent: Span,
        name: str,
        attributes: dict[str, Any],
        *,
        kind: str = "INTERNAL",
        start_time: int | None = None,
    ) -> Span:
        from opentelemetry.trace import SpanKind, set_span_in_context

        return self.tracer.start_span(
            name,
            context=set_span_in_context(parent),
            kind=SpanKind[kind],
            attributes=_clean({**attributes, **seg.ids}),
            start_time=start_time,
        )

    def _parent(self, seg: _Segment, node: str | None) -> Span:
        """The span of the node running now (the segment's when none is)."""
        return seg.nodes.get(node, seg.root) if node is not None else seg.root

    def _metered(self, seg: _Segment, node: str | None, metered: BudgetMetered) -> None:
        rid = metered.reservation_id
        if metered.action == "reserved":
            span = self._child(seg, self._parent(seg, node), f"chat {metered.model}", {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": metered.model,
                "keel.role": metered.role, "keel.reservation_id": rid,
                "keel.reserved_tokens": metered.reserved_tokens,
            }, kind="CLIENT")  # fmt: skip
            seg.chats[rid] = span
            if node is not None:
                seg.last_chat[node] = span
        elif metered.action == "refused":
            self._parent(seg, node).add_event("keel.budget.refused", _clean({
                "gen_ai.request.model": metered.model, "keel.role": metered.role,
                "keel.budget.refused_by": metered.refused_by,
            }))  # fmt: skip
        else:
            chat = seg.chats.pop(rid, None)
            if chat is None:
                return
            if metered.action == "settled":
                chat.set_attributes(_clean({
                    "gen_ai.usage.input_tokens": metered.input_tokens,
                    "gen_ai.usage.output_tokens": metered.output_tokens,
                    "keel.usage.estimated": metered.estimated,
                    "keel.cost_usd": (
                        metered.cost_micros / 1_000_000 if metered.cost_micros is not None
                        else None
                    ),
                }))  # fmt: skip
            elif not _failed(chat):
                _fail(chat, "error", metered.note or "the model call failed")
            chat.end()

    def _model_call(self, seg: _Segment, node: str | None, call: ModelCall) -> None:
        """What the chat model's callback saw: it enriches the meter's span of the call."""
        span = seg.last_chat.get(node) if node is not None else None
        if span is None:  # a call the meter did not make (no meter): a span of its own
            start = time.time_ns() - int(call.latency_ms * 1_000_000)
            span = self._child(seg, self._parent(seg, node), f"chat {call.model}", {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": call.model,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens, "keel.role": call.role,
            }, kind="CLIENT", start_time=start)  # fmt: skip
            self._model_attributes(span, call)
            span.end()
            return
        self._model_attributes(span, call)

    def _model_attributes(self, span: Span, call: ModelCall) -> None:
        span.set_attributes(_clean({
            "gen_ai.provider.name": call.provider,
            "gen_ai.response.model": call.model,
            "keel.tool_calls": [str(c.get("name")) for c in call.tool_calls] or None,
        }))  # fmt: skip
        if call.error is not None:
            _fail(span, call.error_kind or "error", call.error)

    def _tool(self, seg: _Segment, node: str | None, made: ToolCallMade) -> None:
        call = made.call
        parent = self._parent(seg, node)
        if call.decision == "denied":
            parent.add_event("keel.permission.denied", _clean({
                "gen_ai.tool.name": call.tool, "gen_ai.agent.name": call.agent,
                "keel.tool.effect": call.effect, "keel.permission.rule": call.rule,
                "keel.permission.reason": call.reason, "keel.tool.digest": call.digest,
                "keel.manifest_version": call.manifest_version,
            }))  # fmt: skip
            return
        end = time.time_ns()
        span = self._child(seg, parent, f"execute_tool {call.tool}", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.tool,
            "gen_ai.tool.type": "function", "gen_ai.agent.name": call.agent,
            "keel.tool.effect": call.effect, "keel.tool.outcome": "ok" if call.ok else "error",
            "keel.tool.attempts": call.attempts, "keel.tool.via": call.via,
            "keel.tool.breaker_state": call.breaker_state, "keel.tool.digest": call.digest,
            "keel.tool.idempotency_key": call.idempotency_key,
            "keel.permission.rule": call.rule,
            "gen_ai.tool.call.arguments": self._content(call.args),
            "gen_ai.tool.call.result": self._content(call.output),
        }, start_time=end - int(call.latency_ms * 1_000_000))  # fmt: skip
        if not call.ok:
            _fail(span, call.error_kind or "error", call.error or "the tool call failed")
        span.end(end_time=end)

    def _content(self, value: Any) -> str | None:
        if not self.capture_content or value is None:
            return None
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return text[:CONTENT_CHARS]


def _trace_id_of(trace_id: str) -> int | None:
    """The OpenTelemetry trace id of a record's ``trace_id`` (a UUID), or None."""
    try:
        return uuid.UUID(trace_id).int or None
    except ValueError:
        return None


def _fail(span: Span, kind: str, message: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message[:500]))


def _failed(span: Span) -> bool:
    status = getattr(span, "status", None)
    return bool(status is not None and getattr(status.status_code, "name", "") == "ERROR")


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry takes: None dropped, lists of strings kept, the rest as is."""
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out[name] = [str(v) for v in value]
        elif isinstance(value, str | bool | int | float):
            out[name] = value
        else:
            out[name] = str(value)
    return out
