"""The graph's typed state, the domain objects that cross node boundaries, and each agent's view.

Each agent node declares the slice of the state it reads (``input_schema=`` on ``add_node``), so
"each agent sees only what it needs" is enforced by the type, not by discipline.
"""

from __future__ import annotations

import hashlib
import json
import operator
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage, HumanMessage, convert_to_messages
from langgraph.graph.message import add_messages
from pydantic import BaseModel, ConfigDict, Field

Effect = Literal["read", "write", "irreversible"]
ThreadStatus = Literal[
    "running", "done", "awaiting_approval", "awaiting_event", "escalated", "refused", "stalled"
]
"""Where a thread stands: the one status type. The state's ``status`` channel holds what the
graph says (``done``/``refused``/``escalated``: it reached its end; ``awaiting_*``: an interrupt
waits for a human or an event; ``running``). ``graph.status.thread_status`` decides the true one
from the checkpoint and the lease, where ``stalled`` is mid-run with no live worker (``keel
recover`` continues it) and ``running`` mid-run with a live worker holding its lease; no node
writes ``stalled``."""
TrustTier = Literal["official", "reviewed", "wiki", "untrusted"]
Review = Literal["approved", "edited", "rejected", "invalid"]
Turn = Literal["request", "follow_up", "cut_short"]
"""What the thread's last input was: its one request, a chat message after it, or a chat message
that reached a run which had stopped mid-way (cancelled, or its process ended), whose unfinished
work LangGraph drops on new input."""


class Strict(BaseModel):
    """Base for every object that crosses a boundary: a smuggled field is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Evidence(Strict):
    """A retrieved chunk with its provenance, so a decision can be traced to its text."""

    chunk_id: str
    source: str
    title: str
    kind: Literal["policy", "runbook", "faq", "note"]
    trust_tier: TrustTier
    owner: str
    effective_date: str
    score: float
    text: str
    intent: str | None = None
    keywords: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list)
    flags: list[str] = Field(
        default_factory=list,
        description="what the injection screen found (outside text from tools; the corpus is "
        "quarantined at ingest instead)",
    )


class Filtered(Strict):
    """A retrieved chunk kept from the planner, and why."""

    chunk_id: str
    reason: str


class Conflict(Strict):
    """Two sources that disagree on a figure, and which one wins."""

    topic: str
    winner: str
    loser: str
    winner_says: str
    loser_says: str
    why: str


class Step(Strict):
    """One tool call of a plan, with what it is for and how to check it worked."""

    tool: str
    args: dict[str, Any]
    purpose: str
    effect: Effect
    evidence: list[str] = Field(default_factory=list, description="chunk ids relied on")
    postcondition: str = ""


class Plan(Strict):
    """What the planner proposes: steps to run and, for a question, the answer."""

    intent: str
    steps: list[Step] = Field(default_factory=list)
    answer: str | None = None
    evidence: list[str] = Field(default_factory=list)
    planner: str = "runbook"


class CannotPlan(Strict):
    """The planner's expected failure: the request cannot or must not be planned."""

    reason: str
    planner: str = "runbook"
    temporary: bool = Field(
        default=False, description="an integration it needs is down: escalate, do not refuse"
    )


class Verdict(Strict):
    """The validator's judgement of a plan or of a step's result."""

    stage: Literal["plan", "result"]
    ok: bool
    reasons: list[str] = Field(default_factory=list)
    step: int | None = None


class Receipt(Strict):
    """An approval bound to one exact action: a receipt works once and expires."""

    tool: str
    digest: str
    thread_id: str
    approved_by: str
    approved_at: str
    expires_at: str
    edited: bool = False
    approved_for: str = Field(default="executor", description="the agent the approval lets act")
    manifest_version: str = ""
    shown: list[str] = Field(
        default_factory=list, description="what the reviewer was shown besides the action"
    )
    signature: str = ""


class Reviewer(Strict):
    """Who answered an approval, and whether a serving engine vouched for it
    (``graph.reviewer.reviewer_of`` decides it from the run's config)."""

    name: str = Field(description="what the receipts' approved_by says")
    authenticated: bool = Field(description="the engine authenticated this user")
    claimed: str | None = Field(
        default=None, description="a different name the answer claimed, which did not count"
    )


class Edit(Strict):
    """A reviewer's edit of one pending action: the plan is derived again with these arguments
    fixed, and shown again (``graph/approval.py``, ``agents/planner.py``)."""

    step: int = Field(description="the plan step edited")
    tool: str
    before: dict[str, Any] = Field(description="the arguments shown")
    args: dict[str, Any] = Field(description="the arguments the edit fixes")
    by: str = Field(description="who proposed it (a reviewer's name)")


class ToolOutcome(Strict):
    """What happened when the executor ran (or refused to run) one plan step."""

    step: int
    tool: str
    args: dict[str, Any]
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None
    denied: bool = False
    digest: str | None = None
    idempotency_key: str | None = None
    attempts: int = 0
    via: str | None = Field(default=None, description="the tool that answered, if a fallback")


class EventWait(Strict):
    """A step's effect still in flight: the thread sleeps until the event that settles it."""

    event: str = Field(description="the event type, e.g. parcel.delivered")
    key: str = Field(description="which one: the business id the event carries")
    step: int
    why: str
    refused: str = Field(
        default="", description="why the last event that woke the thread did not count"
    )


class DomainEvent(Strict):
    """A business event from the domain's outbox, as delivered to a waiting thread."""

    seq: int
    type: str
    key: str
    payload: dict[str, Any]
    created_at: str


class BudgetStop(Strict):
    """A model call a budget refused, with the account of what the thread had spent: the part of
    an escalation (or of a runbook plan's answer) that says why the model was not asked."""

    budget: str = Field(description="which budget stopped it, with its limits")
    unit: Literal["tokens", "calls", "cost"]
    limit: int = Field(description="tokens, calls, or micro-dollars")
    spent: int = Field(description="what the budget had spent or held before the call")
    asked: int = Field(description="the refused call's worst case")
    model: str
    role: str
    thread_tokens: int = Field(default=0, description="what this thread spent on models")
    thread_calls: int = 0
    thread_cost_usd: float | None = None
    spent_on: list[str] = Field(
        default_factory=list, description="the thread's calls, one line each"
    )

    def describe(self) -> str:
        cost = f", ${self.thread_cost_usd:.6f}" if self.thread_cost_usd is not None else ""
        return (
            f"{self.budget} would be exceeded by a {self.role} call to {self.model} ({self.unit}: "
            f"{self.spent} spent or held, {self.asked} asked, limit {self.limit}); this thread "
            f"spent {self.thread_tokens} tokens in {self.thread_calls} model calls{cost}"
        )


class Escalation(Strict):
    """The account handed to a human: what happened, what was done, what is left."""

    reason: str
    done: list[str]
    left: list[str]
    budget: BudgetStop | None = Field(
        default=None, description="the budget that stopped the model, when one did"
    )
    unsure: list[str] = Field(
        default_factory=list,
        description="actions whose call was under way when the run stopped and that the "
        "backend does not show yet: they may have happened (checked again on the next message)",
    )


LOW_TRUST: tuple[TrustTier, ...] = ("wiki", "untrusted")
"""Tiers that taint a thread: writes planned after such evidence entered it need an approval."""


OUTSIDE_PREFIX = "tool:"
"""Chunk ids of outside text a tool returned (``tool:get_order:ORD-7:note``), not the corpus."""


def is_outside(evidence: Evidence) -> bool:
    """Whether this evidence is text a tool returned from outside the company."""
    return evidence.chunk_id.startswith(OUTSIDE_PREFIX)


def tainting(evidence: list[Evidence]) -> list[Evidence]:
    """The low-trust evidence in a thread's context."""
    return [e for e in evidence if e.trust_tier in LOW_TRUST]


def approval_digest(tool: str, args: dict[str, Any]) -> str:
    """The digest an approval is bound to: the tool and its canonical arguments.

    Example:
        >>> a = approval_digest("ship_parcel", {"b": 1, "a": 2})
        >>> a == approval_digest("ship_parcel", {"a": 2, "b": 1})
        True
    """
    canonical = json.dumps(
        {"tool": tool, "args": args}, sort_keys=True, separators=(",", ":"), default=str
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


REFUSED_KEY = "keel_refused"
"""``additional_kwargs`` key of a message put in the place of one that could not be read."""


def add_readable_messages(left: Any, right: Any) -> Any:
    """LangGraph's ``add_messages``, with a message it cannot read kept as an empty human message
    that says why (``additional_kwargs[REFUSED_KEY]``), instead of an error.

    LangGraph stores a run's input as a pending write before this reducer reads it, and reads it
    again on every later read of the thread: a reducer that raises on one bad message (content
    ``5``, an unknown type) would make the thread unreadable for good (shared/TRAPS.md, "Clients
    can write state"). ``graph.run_input`` refuses such input at the server and in ``KeelApp``;
    this is the floor for a caller of the compiled graph, whom intake then answers.

    Example:
        >>> kept = add_readable_messages([], [{"type": "human", "content": 5}])
        >>> kept[0].content, kept[0].additional_kwargs[REFUSED_KEY][:24]
        ('', 'the message could not be')
    """
    try:
        return add_messages(left, right)
    except (ValueError, TypeError, NotImplementedError, KeyError):
        pass
    readable: list[Any] = []
    for message in right if isinstance(right, list) else [right]:
        try:
            readable += convert_to_messages([message])
        except (ValueError, TypeError, NotImplementedError, KeyError) as err:
            said = str(err).strip().splitlines()[0] if str(err).strip() else ""
            reason = f"the message could not be read ({type(err).__name__}: {said})"
            readable.append(HumanMessage("", additional_kwargs={REFUSED_KEY: reason[:300]}))
    return add_messages(left, readable)


Messages = Annotated[list[AnyMessage], add_readable_messages]
"""A chat transcript, appended to (``add_readable_messages``): what chat clients send and read.
LangChain's message classes are on the checkpoint serializer's built-in safe list."""


class InputState(TypedDict, total=False):
    """What a caller sends: a request in plain words, or chat messages whose last human message
    is the request (Studio's chat, Agent Chat UI and the LangGraph SDK send ``messages``)."""

    request: str
    messages: Messages


class OutputState(TypedDict, total=False):
    """What a caller gets back: the outcome's fields, and an AI message carrying the answer."""

    messages: Messages
    status: ThreadStatus
    answer: str
    planner: str
    plan: Plan | None
    results: list[ToolOutcome]
    escalation: Escalation | None
    waiting: EventWait | None


class KeelState(InputState, OutputState, total=False):
    """The whole state; no agent reads all of it."""

    turn: Turn
    entities: dict[str, str]
    records: dict[str, Any]
    """What the planner read that its owners vouch for: where an argument may come from
    (``tools.provenance``), read by the approval screen and the executor's gate."""
    evidence: list[Evidence]
    filtered: list[Filtered]
    conflicts: list[Conflict]
    plan_verdict: Verdict | None
    result_verdict: Verdict | None
    replans: int
    cursor: int
    pending_actions: list[int]
    """The plan steps that still need a human's approval, as the plan check found them
    (``graph.approval.pending_actions``): the router reads it, and the approval node asks for
    these actions (and any more the thread guard says need one)."""
    approvals: Annotated[dict[str, Receipt], _merge]
    rejected: Annotated[list[str], operator.add]
    review: Review
    review_note: str
    edits: list[Edit]
    """The edits the plan is being derived again for (empty once answered or refused)."""
    reviewed_by: Reviewer
    """Who answered the last approval: the engine's authenticated user when there is one."""
    results: Annotated[list[ToolOutcome], operator.add]
    events: Annotated[list[DomainEvent], operator.add]
    budget_stop: BudgetStop | None
    """The budget that stopped the planner's model on its last pass, if one did."""


class StateUpdate(KeelState, total=False):
    """What a node returns: a partial update of the state, any of its channels and nothing else,
    so a misspelled channel is a type error (every node of ``graph.builder`` returns one)."""


class IntakeView(TypedDict, total=False):
    request: str
    messages: Messages
    status: ThreadStatus
    """Set only when the thread already took a request (a chat client wrote to it again)."""
    escalation: Escalation | None
    """An escalated thread's account: a message checks its unsure actions again."""
    replans: int
    cursor: int
    """``replans`` and ``cursor`` are not read: a new request sets them, and a fresh thread,
    which holds neither yet, is left as it is (``graph.builder.changes_only``)."""


class RetrieverView(TypedDict, total=False):
    request: str
    entities: dict[str, str]
    plan_verdict: Verdict | None


class PlannerView(TypedDict, total=False):
    request: str
    entities: dict[str, str]
    evidence: list[Evidence]
    conflicts: list[Conflict]
    plan_verdict: Verdict | None
    results: list[ToolOutcome]
    """What the thread already did: the planner's working memory on a replan."""
    plan: Plan | None
    """The plan a reviewer's edits apply to (read only when ``edits`` is set)."""
    edits: list[Edit]
    budget_stop: BudgetStop | None
    """Not read: written only when it changes (``graph.builder.changes_only``)."""


class PlanCheckView(TypedDict, total=False):
    plan: Plan | None
    entities: dict[str, str]
    evidence: list[Evidence]
    conflicts: list[Conflict]
    replans: int
    approvals: dict[str, Receipt]
    rejected: list[str]
    results: list[ToolOutcome]
    """What the thread already did: a receipt its results show as used approves nothing."""
    edits: list[Edit]
    pending_actions: list[int]
    """Not read: written only when it changes (``graph.builder.changes_only``)."""


class ApprovalView(TypedDict, total=False):
    plan: Plan | None
    pending_actions: list[int]
    request: str
    records: dict[str, Any]
    evidence: list[Evidence]
    results: list[ToolOutcome]
    approvals: dict[str, Receipt]
    review: Review
    review_note: str
    edits: list[Edit]
    """Not read: an answer clears it only when it holds edits (``graph.builder.changes_only``)."""


class ExecutorView(TypedDict, total=False):
    plan: Plan | None
    request: str
    records: dict[str, Any]
    entities: dict[str, str]
    evidence: list[Evidence]
    cursor: int
    approvals: dict[str, Receipt]
    rejected: list[str]
    results: list[ToolOutcome]


class ResultCheckView(TypedDict, total=False):
    plan: Plan | None
    cursor: int
    results: list[ToolOutcome]


class AwaitView(TypedDict, total=False):
    waiting: EventWait | None


class RespondView(TypedDict, total=False):
    request: str
    status: ThreadStatus
    answer: str
    plan: Plan | None
    results: list[ToolOutcome]
    evidence: list[Evidence]
    review_note: str
    review: Review
    reviewed_by: Reviewer
    rejected: list[str]


class ExecuteView(ExecutorView, RespondView, total=False):
    """The ``execute`` node's view: the executor's, and the answer's at the plan's end
    (``graph.builder.execute_then_check``)."""


class EscalateView(TypedDict, total=False):
    budget_stop: BudgetStop | None
    turn: Turn
    escalation: Escalation | None
    plan: Plan | None
    cursor: int
    results: list[ToolOutcome]
    plan_verdict: Verdict | None
    result_verdict: Verdict | None


STATE_TYPES: tuple[type[BaseModel], ...] = (
    Evidence,
    Filtered,
    Conflict,
    Step,
    Plan,
    CannotPlan,
    Verdict,
    Receipt,
    Reviewer,
    Edit,
    ToolOutcome,
    EventWait,
    DomainEvent,
    Escalation,
    BudgetStop,
)
"""Every pydantic type the state holds: the checkpoint serializer's allow-list."""
