"""Deterministic replay: re-execute a recorded run with nothing live, and compare its decisions.

The graph runs again, on an in-memory checkpointer and the same thread id (idempotency keys and
approval receipts are made from it), with every dependency served from the record:

- each tool's ``func`` serves the recorded result for (tool, argument digest, occurrence), and a
  recorded failure is raised again as the same error class; a primary whose recorded call was
  answered by its fallback is made to fail, so the registry's own fallback path runs again;
- the corpus store serves the recorded retrievals in order;
- a planner model, if one ran, is a chat model that gives the recorded answers in order;
- the clock gives the recorded readings in order;
- the human answers are the recorded resume values, one per recorded resume;
- the intent ledger and the thread guard (receipts consumed, rejections, taint, validated plans,
  waits, the approval history, what vouches for an argument) are fresh ones in a temporary
  folder, so the gate and the nodes read the same kind of facts as in the run, written by the
  replay as the run wrote them (the live guard holds the recorded run's receipts, spent, and its
  approval history is the live thread's); the relay's delivery of each event the run was woken
  with is copied into it from the live guard (read, never written), and the domain's outbox is
  served from those deliveries (what the relay read there);
- backends are never asked.

What is not served is what replay exists to test: the graph, the agents' logic, the validator,
the permission gate and the prompts. So replaying with another permission manifest
(``--policy``), another validator or another prompt shows what that change would have done to the
recorded run; the first decision that comes out differently is reported.

Redaction trade-off: the record holds sensitive values as ``[redacted]`` (values of sensitive
fields, matches of sensitive patterns, and what was seen under a sensitive field, wherever it
reappears), and replay serves what the record holds: the request, the tool outputs, the
retrievals and the model answers with their placeholders. A run whose decisions depended on a
redacted value cannot replay exactly (with the e-mail pattern, a request to change an e-mail address
replays as "... to [redacted]" and the runbook planner finds no address to plan with); the
report then says where it diverged and counts the events that held a placeholder
(``redacted_events``). Keeping secrets out of the record wins over replaying them.
"""

from __future__ import annotations

import copy
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field

from agents.models import Meter
from graph.builder import build_graph, graph_version
from graph.context import KeelContext
from graph.domain import Domain
from graph.state import Conflict, DomainEvent, Evidence, Filtered, approval_digest
from graph.wire import decision_types
from keel.app import KeelApp
from keel.errors import IntegrationError, KeelError, Permanent, Retryable
from keel.settings import Settings
from observability.record_events import (
    ApprovalAnswered,
    ClockRead,
    ModelCall,
    RecordEvent,
    RetrievalDone,
    RunStarted,
)
from observability.recorder import Recorder, jsonable
from observability.records import open_record
from observability.redaction import REDACTED, Redactor
from retrieval.curation import Retrieval
from retrieval.embeddings import Embedder
from retrieval.store import CorpusStore
from stores.checkpoints import keel_serde
from stores.flight_record import SqliteFlightRecord
from stores.guard import Guard, SqliteGuard
from stores.ledger import Ledger, SqliteLedger
from stores.review_log import StoredReviewLog
from tools.resilience import Breaker, RetryPolicy
from tools.spec import Gate, ToolCall, ToolEvent, ToolRegistry, ToolSpec

NEVER_TRIPS = 10**9
"""Replay breakers never open by themselves: recorded breaker failures are served as recorded."""


class ReplayMiss(Permanent):
    """The replay asked for something the record does not hold: it has already diverged."""


class ReplayUnsupported(KeelError):
    """A run the replayer cannot re-execute from its record alone."""


class DecisionPoint(BaseModel):
    """One decision of a run, in the form replay compares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    kind: str
    node: str | None = None
    segment: int
    detail: dict[str, Any]

    def same_as(self, other: DecisionPoint) -> bool:
        return self.kind == other.kind and self.node == other.node and self.detail == other.detail


class Divergence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="position in the decision sequence")
    recorded: DecisionPoint | None
    replayed: DecisionPoint | None


class ReplayReport(BaseModel):
    """What ``keel replay RUN --json`` prints."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    thread_id: str
    same: bool
    first_divergence: Divergence | None
    recorded_decisions: int
    replayed_decisions: int
    recorded_status: str
    replayed_status: str
    served_tool_calls: int
    served_model_calls: int
    misses: list[str] = Field(default_factory=list)
    changed_prompts: list[int] = Field(
        default_factory=list, description="model calls whose prompt differs from the recorded one"
    )
    changed_queries: list[int] = Field(
        default_factory=list, description="retrievals whose query differs from the recorded one"
    )
    redacted_events: int = Field(
        default=0, description="recorded events holding a [redacted] placeholder, served as such"
    )
    policy_file: str | None = None
    recorded_manifest: str | None = None
    replay_manifest: str | None = None
    recorded_graph: str | None = Field(
        default=None,
        description="the graph the run was recorded on (its segments' graphs, in order, when they "
        "differ; None: recorded before Keel kept its graph's version)",
    )
    replay_graph: str | None = Field(default=None, description="the graph it was replayed on")
    error: str | None = None


def decisions(events: list[RecordEvent]) -> list[DecisionPoint]:
    """The decision sequence of a run: node path, plans, verdicts, permission decisions, tool
    calls (by digest), approvals, escalations and how each segment ended."""
    out: list[DecisionPoint] = []

    def add(event: RecordEvent, kind: str, detail: dict[str, Any]) -> None:
        out.append(
            DecisionPoint(
                index=len(out), kind=kind, node=event.node, segment=event.segment, detail=detail
            )
        )

    for event in events:
        p = event.payload
        if p.kind == "node_left":
            add(event, "node", {"interrupted": p.interrupted, "error_kind": p.error_kind})
        elif p.kind == "plan":
            steps = (p.plan or {}).get("steps", [])
            add(
                event,
                "plan",
                {
                    "planner": p.planner,
                    "intent": (p.plan or {}).get("intent"),
                    "answer": (p.plan or {}).get("answer"),
                    "steps": [
                        [s["tool"], approval_digest(s["tool"], s["args"]), s["effect"]]
                        for s in steps
                    ],
                },
            )
        elif p.kind == "verdict":
            add(event, "verdict", {"stage": p.stage, "ok": p.ok, "step": p.step,
                                   "reasons": p.reasons})  # fmt: skip
        elif p.kind == "tool_call":
            c = p.call
            add(
                event,
                "tool_call",
                {
                    "agent": c.agent, "tool": c.tool, "digest": c.digest, "decision": c.decision,
                    "rule": c.rule if c.decision == "denied" else None, "ok": c.ok,
                    "error_kind": c.error_kind, "via": c.via,
                },
            )  # fmt: skip
        elif p.kind == "approval_requested":
            add(event, "approval_requested", {"digests": p.request["digests"]})
        elif p.kind == "event_awaited":
            add(event, "event_awaited", {"event": p.waiting["event"], "key": p.waiting["key"]})
        elif p.kind == "approval_answered":
            add(event, "approval_answered", {"decisions": decision_types(p.answer)})
        elif p.kind == "escalation":
            add(event, "escalation", {"reason": p.reason})
        elif p.kind == "run_ended":
            add(event, "run_ended", {"status": p.status, "error": p.error is not None})
        elif p.kind == "run_started" and p.mode == "event":
            delivered = (p.resume_value or {}).get("event") or {}
            add(event, "event_delivered", {"type": delivered.get("type"),
                                           "key": delivered.get("key")})  # fmt: skip
    return out


def first_divergence(
    recorded: list[DecisionPoint], replayed: list[DecisionPoint]
) -> Divergence | None:
    for i in range(max(len(recorded), len(replayed))):
        a = recorded[i] if i < len(recorded) else None
        b = replayed[i] if i < len(replayed) else None
        if a is None or b is None or not a.same_as(b):
            return Divergence(index=i, recorded=a, replayed=b)
    return None


class RecordedTools:
    """Tool results served from the record, by (tool, argument digest, occurrence)."""

    def __init__(self, events: list[RecordEvent], redactor: Redactor) -> None:
        # Keyed by the canonical arguments as the record holds them (redacted), so a live call
        # is matched by applying the same redaction to its arguments.
        self.redactor = redactor
        self.calls: dict[tuple[str, str], deque[ToolEvent]] = {}
        for event in events:
            if event.payload.kind == "tool_call" and event.payload.call.decision == "allowed":
                call = event.payload.call
                key = (call.tool, approval_digest(call.tool, call.args))
                self.calls.setdefault(key, deque()).append(call)
        self.served = 0
        self.misses: list[str] = []

    def _key(self, tool: str, args: dict[str, Any]) -> tuple[str, str]:
        return (tool, approval_digest(tool, self.redactor(args)))

    def registry(self, live: ToolRegistry) -> ToolRegistry:
        """``live`` with every function served from the record: same contracts, same gate."""
        specs = [live[name] for name in live.names()]
        fallbacks_of: dict[str, list[str]] = {}
        for spec in specs:
            if spec.fallback is not None:
                fallbacks_of.setdefault(spec.fallback, []).append(spec.name)
        served = [
            replace(
                spec,
                func=self._serve(spec, fallbacks_of.get(spec.name, [])),
                lookup=None,
                retry=RetryPolicy(attempts=1),
            )
            for spec in specs
        ]
        return replace(
            live,
            specs=served,
            retry=RetryPolicy(attempts=1),
            breakers={s.integration: Breaker(s.integration, threshold=NEVER_TRIPS) for s in specs},
            listeners=[],
        )

    def _serve(
        self, spec: ToolSpec[Any, Any], primaries: list[str]
    ) -> Callable[[ToolCall[Any]], Mapping[str, Any]]:
        has_fallback = spec.fallback is not None

        def serve(call: ToolCall[Any]) -> Mapping[str, Any]:
            args = call.args.model_dump(mode="json")
            own = self.calls.get(self._key(spec.name, args))
            if own:
                recorded = own[0]
                if recorded.via is not None or (
                    not recorded.ok and has_fallback and _is_retryable(recorded.error_kind)
                ):
                    # The primary went down that time and the fallback answered (or failed):
                    # fail it again so the registry's fallback path runs, as it did.
                    raise Retryable(f"{spec.name}: recorded as failed over to its fallback")
                return self._answer(own.popleft())
            for primary in primaries:
                queue = self.calls.get(self._key(primary, args))
                if queue:
                    return self._answer(queue.popleft())
            miss = f"{spec.name} {self._key(spec.name, args)[1]}"
            self.misses.append(miss)
            raise ReplayMiss(f"{spec.name}: no recorded call with these arguments")

        return serve

    def _answer(self, recorded: ToolEvent) -> Mapping[str, Any]:
        self.served += 1
        if recorded.ok and recorded.output is not None:
            return recorded.output
        raise _error(recorded.error_kind, recorded.error or "recorded failure")


def _error_classes() -> dict[str, type[IntegrationError]]:
    found: dict[str, type[IntegrationError]] = {}
    todo: list[type[IntegrationError]] = [IntegrationError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


def _is_retryable(kind: str | None) -> bool:
    cls = _error_classes().get(kind or "")
    return cls is not None and issubclass(cls, Retryable)


def _error(kind: str | None, message: str) -> IntegrationError:
    """The recorded error, raised again as the same class with the same message."""
    cls = _error_classes().get(kind or "", Permanent)
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


class ServedCorpus(CorpusStore):
    """The corpus store answering with the recorded retrievals, in order."""

    def __init__(self, settings: Settings, embedder: Embedder, events: list[RecordEvent]) -> None:
        super().__init__(settings, embedder)
        self.recorded: deque[RetrievalDone] = deque(
            e.payload for e in events if isinstance(e.payload, RetrievalDone)
        )
        self.searches = 0
        self.changed_queries: list[int] = []

    def require(self) -> None:
        return None

    def search(self, text: str, k: int, today: Any = None) -> Retrieval:
        if not self.recorded:
            raise ReplayMiss("a retrieval the record does not hold")
        found = self.recorded.popleft()
        if found.query != text:
            self.changed_queries.append(self.searches)
        self.searches += 1
        return Retrieval(
            evidence=[Evidence.model_validate(e) for e in found.evidence],
            filtered=[Filtered.model_validate(f) for f in found.filtered],
            conflicts=[Conflict.model_validate(c) for c in found.conflicts],
        )


class ServedClock:
    """The recorded clock readings, in order; past the last one, the last one."""

    def __init__(self, events: list[RecordEvent]) -> None:
        readings = [e.payload.value for e in events if isinstance(e.payload, ClockRead)]
        start = events[0].at if events else "1970-01-01T00:00:00+00:00"
        self.readings = deque(datetime.fromisoformat(v) for v in readings)
        self.last = datetime.fromisoformat(start)

    def __call__(self) -> datetime:
        if self.readings:
            self.last = self.readings.popleft()
        return self.last


class RecordedAnswers:
    """The recorded model calls, in order, shared by the primary and the fallback model."""

    def __init__(self, events: list[RecordEvent]) -> None:
        self.calls: deque[ModelCall] = deque(
            e.payload for e in events if isinstance(e.payload, ModelCall)
        )
        self.served = 0
        self.changed_prompts: list[int] = []

    def next(self, prompt: list[dict[str, Any]]) -> ModelCall:
        if not self.calls:
            raise ReplayMiss("a model call the record does not hold")
        call = self.calls.popleft()
        if call.prompt != prompt:
            self.changed_prompts.append(self.served)
        self.served += 1
        return call


class ReplayedModelError(RuntimeError):
    """A model failure served from the record (the planner falls through as it did)."""


class RecordedChatModel(BaseChatModel):
    """A chat model that answers with the recorded outputs, under the recorded model's name."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str
    answers: RecordedAnswers = Field(exclude=True)

    @classmethod
    def serving(cls, model_name: str, answers: RecordedAnswers) -> RecordedChatModel:
        return cls.model_validate({"model_name": model_name, "answers": answers})

    @property
    def _llm_type(self) -> str:
        return "keel-replay"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = [{"role": m.type, "content": jsonable(m.content)} for m in messages]
        call = self.answers.next(prompt)
        if call.error is not None:
            raise ReplayedModelError(call.error)
        usage = None
        if call.input_tokens is not None and call.output_tokens is not None:
            usage = {
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "total_tokens": call.input_tokens + call.output_tokens,
            }
        message = AIMessage(
            content=call.output or "",
            tool_calls=[
                {"name": c["name"], "args": c["args"], "id": c.get("id"), "type": "tool_call"}
                for c in call.tool_calls
            ],
            invalid_tool_calls=[
                {
                    "name": c.get("name"),
                    "args": c.get("args"),
                    "id": c.get("id"),
                    "error": None,
                    "type": "invalid_tool_call",
                }
                for c in call.invalid_tool_calls
            ],
            usage_metadata=usage,  # type: ignore[arg-type]
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


@contextmanager
def _temporary_stores() -> Iterator[tuple[Ledger, Guard]]:
    """A fresh intent ledger and thread guard, in one file as the live ones (SQLite)."""
    with tempfile.TemporaryDirectory(prefix="keel-replay-") as folder:
        path = Path(folder) / "intents.sqlite"
        guard = SqliteGuard(path)
        try:
            yield SqliteLedger(path), guard
        finally:
            guard.close()


def replay_run(
    app: KeelApp, ref: str, *, policy_file: Path | None = None, gate: Gate | None = None
) -> ReplayReport:
    """Replay a recorded run (by run id, thread id or unique run-id prefix) and compare.

    Args:
        app: an open app: its record, its domain and its settings.
        ref: the run to replay.
        policy_file: another permission manifest to replay under ("what would it have done").
        gate: a permission gate to replay under instead of the one the settings configure.

    Example:
        >>> with KeelApp.open() as app:  # doctest: +SKIP
        ...     report = replay_run(app, "demo-1234abcd")
        ...     report.same, report.first_divergence
        (True, None)

    Raises:
        BadRequest: no record, or no such run.
    """
    store = app.recorder.flight_record if app.recorder is not None else open_record(app.settings)
    run_id = store.resolve(ref)
    events = store.events(run_id)
    thread_id = events[0].thread_id
    settings = app.settings
    if policy_file is not None:
        settings = settings.model_copy(update={"policy_file": policy_file.expanduser().resolve()})

    base = KeelContext.from_settings(settings, domain=app.context.domain)
    redactor = Redactor.from_settings(settings)
    tools = RecordedTools(events, redactor)
    answers = RecordedAnswers(events)
    started = [e.payload for e in events if isinstance(e.payload, RunStarted)]
    first = started[0] if started else None
    served_corpus = ServedCorpus(settings, app.context.corpus.embedder, events)
    recorder = Recorder(SqliteFlightRecord(":memory:"), redactor)
    error: str | None = None
    delivered = _deliveries(events, thread_id, app.context.guard)
    with _temporary_stores() as (ledger, guard):
        for event in delivered:  # as the relay recorded each before it resumed the thread
            guard.record_delivery(thread_id, event)
        registry = tools.registry(base.tools)
        if gate is not None:
            registry.gate = gate
        context = replace(
            base,
            domain=_outbox_served(base.domain, delivered),
            tools=registry,
            corpus=served_corpus,
            ledger=ledger,
            inbox=None,  # subscriptions are the live inbox's business, not a replay's
            guard=guard,  # the replay's own: the live one holds the run's receipts, spent
            reviews=StoredReviewLog(guard),
            planner_model=(
                RecordedChatModel.serving(first.planner_model, answers)
                if first and first.planner_model
                else None
            ),
            fallback_model=(
                RecordedChatModel.serving(first.fallback_model, answers)
                if first and first.fallback_model
                else None
            ),
            clock=ServedClock(events),
            meter=Meter(None),  # a replay spends nothing and is charged to no budget
        )
        replayer = KeelApp(
            settings,
            recorder.instrument(context),
            build_graph(InMemorySaver(serde=keel_serde())),
            recorder=recorder,
        )
        try:
            _drive(replayer, events, thread_id, run_id)
        except (KeelError, ValueError, RuntimeError) as err:
            error = f"{type(err).__name__}: {err}"[:500]
    replayed_events = recorder.flight_record.events(run_id)
    recorder.flight_record.close()
    recorded_points = decisions(events)
    replayed_points = decisions(replayed_events)
    divergence = first_divergence(recorded_points, replayed_points)
    return ReplayReport(
        run_id=run_id,
        thread_id=thread_id,
        same=divergence is None and error is None and not tools.misses,
        first_divergence=divergence,
        recorded_decisions=len(recorded_points),
        replayed_decisions=len(replayed_points),
        recorded_status=_final_status(recorded_points),
        replayed_status=_final_status(replayed_points),
        served_tool_calls=tools.served,
        served_model_calls=answers.served,
        misses=tools.misses,
        changed_prompts=answers.changed_prompts,
        changed_queries=served_corpus.changed_queries,
        redacted_events=sum(REDACTED in e.payload.model_dump_json() for e in events),
        policy_file=str(settings.policy_file) if policy_file is not None else None,
        recorded_manifest=first.manifest_version if first else None,
        replay_manifest=registry.gate.version if registry.gate is not None else None,
        recorded_graph=_recorded_graphs(started),
        replay_graph=graph_version(),
        error=error,
    )


def _drive(app: KeelApp, events: list[RecordEvent], thread_id: str, run_id: str) -> None:
    """Play the recorded segments again: the request, then each resume, event and recover."""
    segments = sorted({e.segment for e in events})
    for segment in segments:
        mine = [e for e in events if e.segment == segment]
        start = next((e.payload for e in mine if isinstance(e.payload, RunStarted)), None)
        if start is None:
            continue
        if start.mode == "run":
            app.invoke_segment(
                {"request": start.request or ""},
                thread_id,
                "run",
                request=start.request,
                run_id=run_id,
            )
            continue
        if start.mode == "fork":
            raise ReplayUnsupported(
                "this run is a fork from an earlier checkpoint: replay the run it forked from"
            )
        snapshot = app.graph.get_state(app._config(thread_id))
        if start.mode == "resume":
            answer = next(
                (e.payload for e in mine if isinstance(e.payload, ApprovalAnswered)), None
            )
            if answer is None or not snapshot.interrupts:
                return  # the replay is not waiting where the record was: it has diverged
            app.invoke_segment(Command(resume=answer.answer), thread_id, "resume", run_id=run_id)
        elif start.mode == "event":
            if start.resume_value is None or not snapshot.interrupts:
                return
            app.invoke_segment(
                Command(resume=start.resume_value), thread_id, "event", run_id=run_id
            )
        elif start.mode == "recover":
            if snapshot.interrupts or not snapshot.next:
                return
            app.invoke_segment(None, thread_id, "recover", run_id=run_id)


def _deliveries(events: list[RecordEvent], thread_id: str, live: Guard | None) -> list[DomainEvent]:
    """The relay's deliveries of the events the run was woken with, as the live guard holds
    them (read only), oldest first. The relay delivers only what the domain's outbox emitted, so
    they are the outbox as the run saw it; an event a caller made up (a resume a server recorded
    as an event) has none, and is refused in replay as in the run."""
    found: dict[int, DomainEvent] = {}
    for e in events:
        p = e.payload
        if not isinstance(p, RunStarted) or p.mode != "event" or live is None:
            continue
        event = (p.resume_value or {}).get("event")
        seq = event.get("seq") if isinstance(event, dict) else None
        if type(seq) is int and seq not in found:
            delivery = live.delivery(thread_id, seq)
            if delivery is not None:
                found[seq] = delivery
    return [found[seq] for seq in sorted(found)]


def _outbox_served(domain: Domain, delivered: list[DomainEvent]) -> Domain:
    """``domain`` with its outbox served from ``delivered``: replay asks no live backend, and the
    live outbox may since have been reset (``keel seed``) or be another machine's."""
    served = copy.copy(domain)

    def events_after(settings: Settings, seq: int) -> list[DomainEvent]:
        return [e for e in delivered if e.seq > seq]

    vars(served)["events_after"] = events_after  # this copy's only: the live domain keeps its own
    return served


def _recorded_graphs(started: list[RunStarted]) -> str | None:
    """The graph versions a run's segments were recorded on: one, or each in order (a resume
    after a deploy ran on another graph); None for a record made before Keel kept them.

    Example:
        >>> def seg(version):
        ...     return RunStarted(mode="run", trace_id="t", graph_version=version)
        >>> _recorded_graphs([seg("2:a"), seg("2:a")]), _recorded_graphs([seg("2:a"), seg("3:b")])
        ('2:a', '2:a, 3:b')
        >>> _recorded_graphs([seg(None)]) is None
        True
    """
    versions = list(dict.fromkeys(s.graph_version for s in started if s.graph_version))
    return ", ".join(versions) if versions else None


def _final_status(points: list[DecisionPoint]) -> str:
    ends = [p for p in points if p.kind == "run_ended"]
    return str(ends[-1].detail["status"]) if ends else "none"
