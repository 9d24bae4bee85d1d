"""OpenTelemetry spans of a run (``observability/otel.py``), received by a real OTLP/HTTP receiver
on loopback (``tests/otlp.py``): the GenAI semantic conventions' spans and attributes, Keel's ids,
the permission and approval events, and nothing at all when no endpoint is set."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage

from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from keel.app import Decision, KeelApp
from keel.settings import Settings
from observability.otel import otel_from_environment
from observability.record_events import NodeEntered, NodeLeft, RunEnded, RunStarted, ToolCallMade
from observability.recorder import Recorder
from observability.redaction import Redactor
from stores.flight_record import SqliteFlightRecord
from tests.conftest import REFUND_REQUEST
from tests.otlp import one, otlp_receiver
from tools.spec import ToolEvent


def _model(settings: Settings) -> FakeMessagesListChatModel:
    """A planner model (the model boundary) whose plan refunds the duplicate charge."""
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    hits = CorpusStore(settings, embedder_for(settings)).query(REFUND_REQUEST, 6)
    chunk = next(e.chunk_id for e in hits if e.kind == "runbook")
    plan = {"intent": "refund_duplicate_charge", "steps": [{
        "tool": "refund_charge", "purpose": "refund the duplicate", "evidence": [chunk],
        "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}}]}  # fmt: skip
    reply = AIMessage(
        content=json.dumps(plan),
        usage_metadata={"input_tokens": 700, "output_tokens": 60, "total_tokens": 760},
    )
    return FakeMessagesListChatModel(responses=[reply])


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[str]:
    return sorted(s["name"] for s in spans if s["parent_span_id"] == parent["span_id"])


def test_a_refund_run_reaches_an_otlp_receiver_as_genai_spans_with_keels_ids(
    settings: Settings, backend: DemoBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        context = KeelContext.from_settings(settings, planner_model=_model(settings))
        with KeelApp.open(settings, context) as app:
            waiting = app.run(REFUND_REQUEST)
            assert waiting.status == "awaiting_approval"
            done = app.resume(waiting.thread_id, Decision(kind="approve", reviewer="alice"))
            assert done.status == "done"
            assert app.recorder is not None
            events = app.recorder.flight_record.events(str(done.run_id))
        # KeelApp flushes on close: every span has been sent.
        spans = received.spans
    assert {path for path, _ in received.requests} == {"/v1/traces"}
    assert [r["charge_id"] for r in backend.refunds()] == ["CH-3002"]

    roots = [s for s in spans if s["name"] == "invoke_workflow keel"]
    assert [r["attributes"]["keel.mode"] for r in roots] == ["run", "resume"]
    traces = [e.payload.trace_id for e in events if isinstance(e.payload, RunStarted)]
    # One trace per segment, whose id is the record's trace id (LangSmith's root run id).
    assert [r["trace_id"] for r in roots] == [uuid.UUID(t).hex for t in traces]
    for span in spans:  # Keel's ids on every span
        attrs = span["attributes"]
        assert attrs["keel.run_id"] == done.run_id, span["name"]
        assert attrs["keel.thread_id"] == attrs["gen_ai.conversation.id"] == done.thread_id
        assert span["resource"]["service.name"] == "keel"
    first, second = roots
    assert first["attributes"]["gen_ai.operation.name"] == "invoke_workflow"
    assert first["attributes"]["keel.status"] == "awaiting_approval"
    assert second["attributes"]["keel.status"] == "done"
    assert "keel.request" not in first["attributes"]  # content only when asked for

    first_spans = [s for s in spans if s["trace_id"] == first["trace_id"]]
    plan = one(first_spans, "invoke_agent plan")
    assert plan["parent_span_id"] == first["span_id"]
    assert plan["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert plan["attributes"]["gen_ai.agent.name"] == "plan"
    [chat_name] = [n for n in _children(spans, plan) if n.startswith("chat ")]
    chat = one(spans, chat_name)
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat_name == f"chat {chat['attributes']['gen_ai.request.model']}"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 700
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 60
    assert chat["attributes"]["keel.usage.estimated"] is False
    assert chat["attributes"]["gen_ai.provider.name"]  # the chat model's own (ls_provider)
    assert chat["kind"] == 3  # CLIENT
    assert plan["start"] <= chat["start"] <= chat["end"] <= plan["end"]
    # The approval the run stopped for, on the segment that asked for it.
    [asked] = [e for e in first["events"] if e["name"] == "keel.approval.requested"]
    assert asked["attributes"]["gen_ai.tool.name"] == ["refund_charge"]
    assert asked["attributes"]["keel.approval.digests"][0].startswith("sha256:")

    second_spans = [s for s in spans if s["trace_id"] == second["trace_id"]]
    [answered] = [e for e in second["events"] if e["name"] == "keel.approval.answered"]
    assert answered["attributes"]["keel.approval.decisions"] == ["approve"]
    refund = one(second_spans, "execute_tool refund_charge")
    execute = next(s for s in second_spans if s["span_id"] == refund["parent_span_id"])
    assert execute["name"] == "invoke_agent execute"
    attrs = refund["attributes"]
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "refund_charge"
    assert attrs["gen_ai.tool.type"] == "function"
    assert (attrs["keel.tool.outcome"], attrs["keel.tool.effect"]) == ("ok", "irreversible")
    assert attrs["keel.tool.idempotency_key"]
    assert "gen_ai.tool.call.arguments" not in attrs
    assert execute["start"] <= refund["start"] <= refund["end"] <= execute["end"]
    # Every span was ended (an unfinished one would be marked), and none failed.
    assert not [s["name"] for s in spans if s["attributes"].get("keel.unfinished")]
    assert not [s["name"] for s in spans if s["status"] == 2]


def test_a_denied_call_and_a_failed_call_are_an_event_and_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with otlp_receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        otel = otel_from_environment()
        assert otel is not None
        recorder = Recorder(
            SqliteFlightRecord(":memory:"), Redactor(["token"]), sinks=[otel.on_event]
        )
        rec = recorder.start(run_id="r-1", thread_id="t-1", trace_id=str(uuid.uuid4()))
        rec.emit(RunStarted(mode="run", request="refund it", trace_id=rec.trace_id))
        rec.emit(NodeEntered(), node="execute", step=3)
        call: dict[str, Any] = {
            "agent": "executor", "effect": "irreversible", "digest": "sha256:x",
            "thread_id": "t-1", "args": {"charge_id": "CH-1", "token": "s3cret"},
        }  # fmt: skip
        rec.emit(ToolCallMade(call=ToolEvent(
            **call, tool="refund_charge", decision="denied", rule="needs-approval",
            reason="refund_charge needs an approval",
        )), node="execute", step=3)  # fmt: skip
        rec.emit(ToolCallMade(call=ToolEvent(
            **call, tool="send_email", decision="allowed", error="timed out",
            error_kind="Retryable", attempts=3, latency_ms=12.5,
        )), node="execute", step=3)  # fmt: skip
        rec.emit(NodeLeft(error="boom", error_kind="Retryable"), node="execute", step=3)
        rec.emit(RunEnded(status="error", duration_ms=1.0, error="Retryable: boom"))
        recorder.stop()
        assert otel.flush()
        spans = received.wait(lambda s: len(s) == 3)
    execute = one(spans, "invoke_agent execute")
    [denied] = execute["events"]
    assert denied["name"] == "keel.permission.denied"
    assert denied["attributes"]["gen_ai.tool.name"] == "refund_charge"
    assert denied["attributes"]["keel.permission.rule"] == "needs-approval"
    assert not [s for s in spans if s["name"] == "execute_tool refund_charge"]  # it never ran
    failed = one(spans, "execute_tool send_email")
    assert failed["status"] == 2 and failed["attributes"]["error.type"] == "Retryable"
    assert failed["attributes"]["keel.tool.outcome"] == "error"
    assert failed["attributes"]["keel.tool.attempts"] == 3
    assert 12_000_000 <= failed["end"] - failed["start"] < 13_000_000
    # Content is sent when asked for, after the recorder's redaction.
    assert json.loads(failed["attributes"]["gen_ai.tool.call.arguments"]) == {
        "charge_id": "CH-1", "token": "[redacted]"
    }  # fmt: skip
    assert one(spans, "invoke_workflow keel")["attributes"]["keel.request"] == "refund it"
    assert execute["status"] == 2 and one(spans, "invoke_workflow keel")["status"] == 2


def test_no_endpoint_means_no_exporter_and_no_sink(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert otel_from_environment() is None
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        assert app.recorder is not None and app.recorder.sinks == []


def test_an_endpoint_without_the_exporter_installed_is_said_and_runs_go_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/missing-exporter"}
    assert otel_from_environment(env) is None
    err = capsys.readouterr().err
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry's exporter is not installed" in err
    assert "opentelemetry-exporter-otlp-proto-http" in err
