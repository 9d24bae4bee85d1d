"""The flight recorder's one event schema: versioned, typed, the same for every run.

Every event has the same envelope (which run, thread, segment and checkpoint it belongs to, its
order, its kind) and a payload whose type the kind names. ``SCHEMA_VERSION`` changes whenever a
payload changes shape; readers refuse events of a version they do not know. A new optional field
with a default (which older events lack and still read with) is not a change of shape.

Checkpoint id: every event carries the id of the latest checkpoint of its thread at the moment
it was written, i.e. the state it happened on. A ``checkpoint`` event names the checkpoint a step
wrote, so a node's events sit between the checkpoint it started from and the one it produced.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graph.wire import ApprovalRequest, EventWaitRequest
from tools.spec import ToolEvent

SCHEMA_VERSION: Literal[1] = 1


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunStarted(Payload):
    """A segment of a run began: the first invoke (``run``), a ``resume`` (a human's answer), a
    ``recover``, an ``event`` that woke a waiting thread, or a ``fork`` from an earlier
    checkpoint (which starts a new run)."""

    kind: Literal["run_started"] = "run_started"
    mode: Literal["run", "resume", "recover", "fork", "event"]
    request: str | None = None
    from_checkpoint: str | None = Field(default=None, description="for a fork: where it began")
    resume_value: dict[str, Any] | None = Field(
        default=None, description="for an event: the resume value that delivered it"
    )
    trace_id: str = Field(description="the LangSmith root run id of this segment")
    planner_model: str | None = None
    fallback_model: str | None = None
    manifest_version: str | None = None
    graph_version: str | None = Field(
        default=None,
        description="the graph the segment ran on (``graph.builder.graph_version``); None in a "
        "record made before Keel recorded it",
    )


class RunEnded(Payload):
    kind: Literal["run_ended"] = "run_ended"
    status: str
    answer: str = ""
    duration_ms: float
    error: str | None = None


class NodeEntered(Payload):
    """A node began. The state it was given is a checkpoint's: the one the event names
    (``RecordEvent.checkpoint_id``; a served run's events name none, and its node of step N read
    the thread's checkpoint of step N-1). So the event names the channels, not their values: a
    copy of the whole state per node was half of a run's record (issue 26). Records written
    before that carry the values in ``inputs``."""

    kind: Literal["node_entered"] = "node_entered"
    channels: list[str] = Field(default_factory=list, description="the state's channels it got")
    inputs: dict[str, Any] = Field(default_factory=dict, description="older records only")


class NodeLeft(Payload):
    kind: Literal["node_left"] = "node_left"
    outputs: dict[str, Any] | None = None
    interrupted: bool = False
    error: str | None = None
    error_kind: str | None = None
    latency_ms: float = 0.0


class CheckpointSaved(Payload):
    kind: Literal["checkpoint"] = "checkpoint"
    checkpoint_id: str
    step: int | None = None
    next: list[str] = Field(default_factory=list)
    source: str | None = None


class ModelCall(Payload):
    """One chat model call: the prompt as sent, the answer, tokens and latency."""

    kind: Literal["model_call"] = "model_call"
    role: str
    model: str
    provider: str | None = Field(
        default=None, description="the provider the chat model names (LangChain's ls_provider)"
    )
    prompt: list[dict[str, Any]]
    output: str | None = None
    tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="the answer's tool calls: name, args, id"
    )
    invalid_tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="tool calls whose arguments did not parse: name, args, id"
    )
    error: str | None = None
    error_kind: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float = 0.0
    planner: str = Field(description="the planner this call served, as a Plan names it")


class BudgetMetered(Payload):
    """What the meter did for one model call: a reservation made or refused (which budget), and
    its settlement (the usage, reported or estimated, and the cost) or failure."""

    kind: Literal["budget"] = "budget"
    action: Literal["reserved", "refused", "settled", "failed"]
    reservation_id: str
    model: str
    role: str
    thread_id: str
    user: str
    team: str
    reserved_tokens: int
    reserved_cost_micros: int | None = None
    budgets: list[str] = Field(default_factory=list, description="the totals checked")
    input_tokens: int | None = None
    output_tokens: int | None = None
    estimated: bool | None = Field(default=None, description="the server reported no usage")
    cost_micros: int | None = None
    refused_by: str | None = None
    note: str | None = None


class RetrievalDone(Payload):
    """One search of the corpus: the query, what was kept (with scores, tiers) and what not."""

    kind: Literal["retrieval"] = "retrieval"
    query: str
    k: int
    today: str | None = None
    evidence: list[dict[str, Any]]
    filtered: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]


class ToolCallMade(Payload):
    """One tool call as the registry told it; a denied call is the permission decision."""

    kind: Literal["tool_call"] = "tool_call"
    call: ToolEvent


class PlanMade(Payload):
    kind: Literal["plan"] = "plan"
    plan: dict[str, Any] | None
    planner: str


class ApprovalRequested(Payload):
    kind: Literal["approval_requested"] = "approval_requested"
    interrupt_id: str
    request: ApprovalRequest


class EventAwaited(Payload):
    """The thread went to sleep until a domain event arrives (an effect still in flight)."""

    kind: Literal["event_awaited"] = "event_awaited"
    interrupt_id: str
    waiting: EventWaitRequest


class ApprovalAnswered(Payload):
    """The resume value as sent, which may be one the approval node refused (so not typed)."""

    kind: Literal["approval_answered"] = "approval_answered"
    answer: dict[str, Any]


class VerdictGiven(Payload):
    kind: Literal["verdict"] = "verdict"
    stage: Literal["plan", "result"]
    ok: bool
    reasons: list[str] = Field(default_factory=list)
    step: int | None = None


class EscalationMade(Payload):
    kind: Literal["escalation"] = "escalation"
    reason: str
    done: list[str] = Field(default_factory=list)
    left: list[str] = Field(default_factory=list)
    budget: dict[str, Any] | None = Field(
        default=None, description="the budget that stopped the model, when one did"
    )
    unsure: list[str] = Field(
        default_factory=list, description="under way when the run stopped: may have happened"
    )


class ClockRead(Payload):
    """A reading of the run's clock: replay serves time from these."""

    kind: Literal["clock"] = "clock"
    value: str


AnyPayload = Annotated[
    RunStarted
    | RunEnded
    | NodeEntered
    | NodeLeft
    | CheckpointSaved
    | ModelCall
    | BudgetMetered
    | RetrievalDone
    | ToolCallMade
    | PlanMade
    | ApprovalRequested
    | EventAwaited
    | ApprovalAnswered
    | VerdictGiven
    | EscalationMade
    | ClockRead,
    Field(discriminator="kind"),
]
EventKind = Literal[
    "run_started",
    "run_ended",
    "node_entered",
    "node_left",
    "checkpoint",
    "model_call",
    "budget",
    "retrieval",
    "tool_call",
    "plan",
    "approval_requested",
    "event_awaited",
    "approval_answered",
    "verdict",
    "escalation",
    "clock",
]


class RecordEvent(BaseModel):
    """One entry of the flight record.

    Example:
        >>> e = RecordEvent(run_id="r", thread_id="t", segment=0, at="2026-01-01T00:00:00+00:00",
        ...                 payload=ClockRead(value="2026-01-01T00:00:00+00:00"))
        >>> e.kind
        'clock'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    seq: int | None = Field(default=None, description="order in the store; set when stored")
    run_id: str
    thread_id: str
    segment: int = Field(ge=0, description="0 for the first invoke, then one per resume/recover")
    checkpoint_id: str | None = None
    node: str | None = None
    step: int | None = None
    at: str = Field(description="wall-clock time the event was written (UTC, ISO 8601)")
    payload: AnyPayload

    @property
    def kind(self) -> str:
        return self.payload.kind


__all__ = [
    "SCHEMA_VERSION",
    "AnyPayload",
    "ApprovalAnswered",
    "ApprovalRequested",
    "BudgetMetered",
    "CheckpointSaved",
    "ClockRead",
    "EscalationMade",
    "EventAwaited",
    "EventKind",
    "ModelCall",
    "NodeEntered",
    "NodeLeft",
    "PlanMade",
    "RecordEvent",
    "RetrievalDone",
    "RunEnded",
    "RunStarted",
    "ToolCallMade",
    "VerdictGiven",
]
