"""The wire formats of the graph's interrupts and of their answers.

The approval interrupt is LangChain v1's human-in-the-loop request (``HITLRequest``: action
requests and review configs), so Studio, Agent Chat UI and any client written for that schema can
answer it; Keel's additions (the digest and plan step of each action, the manifest version, the
low-trust evidence in the thread, the request's identity and why it is asked again) extend it as a
typed subclass. Its answer is LangChain's ``HITLResponse`` (``decisions``, one per action) with an
optional ``reviewer`` and ``request_id``, and each decision may carry the ``digest`` it answers.
The event wait has its own interrupt type.

LangChain's schema types are declared here, field for field as
``langchain.agents.middleware.human_in_the_loop`` declares them, instead of imported from it:
that module can only be imported with the whole ``langchain.agents`` package (the agent factory
and every middleware), at every ``keel show`` and ``keel resume``, for a handful of TypedDicts
(``docs/startup.md``). ``tests/unit/test_wire.py`` checks that each one still has
LangChain's exact shape, so a change in LangChain fails a test instead of a client.

Interrupt values cross process boundaries as JSON, so readers tell them apart by validating them
against these types (``event_wait_of``, ``approval_request_of``), never by a key they happen to
hold.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

__all__ = [
    "Action",
    "ActionRequest",
    "ApprovalAnswer",
    "ApprovalRequest",
    "ApproveDecision",
    "ArgumentProvenance",
    "DecisionType",
    "EditDecision",
    "EventWaitRequest",
    "HITLRequest",
    "HITLResponse",
    "KeelApprove",
    "KeelDecision",
    "KeelEdit",
    "KeelReject",
    "RejectDecision",
    "RespondDecision",
    "ReviewConfig",
    "TaintedEvidence",
    "approval_request_of",
    "event_wait_of",
]

_FORBID = ConfigDict(extra="forbid")


# LangChain v1's human-in-the-loop schema (langchain.agents.middleware.human_in_the_loop).


class Action(TypedDict):
    """An action with a name and args (LangChain's ``Action``)."""

    name: str
    args: dict[str, Any]


class ActionRequest(TypedDict):
    """An action put to a reviewer (LangChain's ``ActionRequest``)."""

    name: str
    args: dict[str, Any]
    description: NotRequired[str]


DecisionType = Literal["approve", "edit", "reject", "respond"]
"""LangChain's decision types; Keel takes all but ``respond`` (``KeelDecision``)."""


class ReviewConfig(TypedDict):
    """Which decisions a reviewer may give an action (LangChain's ``ReviewConfig``)."""

    action_name: str
    allowed_decisions: list[DecisionType]
    args_schema: NotRequired[dict[str, Any]]


class HITLRequest(TypedDict):
    """LangChain's human-in-the-loop interrupt value: the actions and how each may be answered."""

    action_requests: list[ActionRequest]
    review_configs: list[ReviewConfig]


class ApproveDecision(TypedDict):
    type: Literal["approve"]


class EditDecision(TypedDict):
    type: Literal["edit"]
    edited_action: Action


class RejectDecision(TypedDict):
    type: Literal["reject"]
    message: NotRequired[str]


class RespondDecision(TypedDict):
    type: Literal["respond"]
    message: str


class HITLResponse(TypedDict):
    """LangChain's answer to a ``HITLRequest``: one decision per action, in order."""

    decisions: list[ApproveDecision | EditDecision | RejectDecision | RespondDecision]


@with_config(_FORBID)
class TaintedEvidence(TypedDict):
    """A low-trust or quarantined source in the thread's context, shown to the reviewer."""

    chunk_id: str
    source: str
    trust_tier: str
    excerpt: str
    flags: NotRequired[list[str]]
    """What the injection screen found in it (empty when it found nothing)."""


class ArgumentProvenance(TypedDict):
    """Where one argument's value came from (``tools.provenance``), as the reviewer sees it."""

    source: Literal["request", "record", "outside", "planner"]
    where: NotRequired[str]
    """For ``outside``: the text it appears in (``tool:<tool>:<ref>:<field>``)."""
    refused: NotRequired[bool]
    """The manifest refuses this argument from outside text: the gate will deny the call."""


@with_config(_FORBID)
class ApprovalRequest(HITLRequest):
    """LangChain's HITL request with Keel's additions, one entry per action in each list.

    Example:
        >>> request: ApprovalRequest = {
        ...     "action_requests": [{"name": "ship_parcel", "args": {"order_id": "ORD-7"}}],
        ...     "review_configs": [{"action_name": "ship_parcel",
        ...                         "allowed_decisions": ["approve", "edit", "reject"]}],
        ...     "digests": ["sha256:ab"], "steps": [0], "manifest_version": "1",
        ...     "tainted_evidence": []}
        >>> approval_request_of(request) == request, event_wait_of(request)
        (True, None)
    """

    digests: list[str]
    """The approval digest of each action (tool and canonical arguments)."""
    steps: list[int]
    """The plan step of each action."""
    manifest_version: str | None
    """The permission manifest the approval is given under."""
    tainted_evidence: list[TaintedEvidence]
    """Low-trust evidence in the thread's context, whatever the actions cite."""
    request_id: NotRequired[str]
    """This request's identity: a hash of the thread, the digests and the revision. An answer
    that names it answers exactly this request (``graph/approval.py``)."""
    revision: NotRequired[int]
    """How many times the thread's pending actions changed before this request was raised."""
    changed_by: NotRequired[str]
    """Who changed the pending actions last (an edit's proposer); empty when nobody did, or
    when they changed otherwise (planned again, a state write)."""
    review_note: NotRequired[str]
    """Why the request is asked again (an answer refused, an edit refused), or empty."""
    provenance: NotRequired[list[dict[str, Any]]]
    """Per action, where each argument came from: the request, a trusted record, outside text
    (which call, which field), or the planner (an ``ArgumentProvenance`` per argument name;
    typed loosely because the flight record keeps this payload redacted, where a sensitive
    argument's entry is ``"[redacted]"``)."""
    flagged: NotRequired[list[list[str]]]
    """Per action, the arguments that rest on outside text and not on the request."""


@with_config(_FORBID)
class KeelApprove(ApproveDecision):
    digest: NotRequired[str]
    """The digest this decision answers; one that is not pending is refused as stale."""


@with_config(_FORBID)
class KeelEdit(EditDecision):
    digest: NotRequired[str]


@with_config(_FORBID)
class KeelReject(RejectDecision):
    digest: NotRequired[str]


KeelDecision = KeelApprove | KeelEdit | KeelReject
"""The decisions Keel takes: LangChain's approve, edit and reject (not ``respond``: an action
here is a tool call that must run or not, never answered in its place), each with its digest."""


@with_config(_FORBID)
class ApprovalAnswer(HITLResponse):
    """A human's answer: LangChain's ``{"decisions": [...]}`` plus who answered, and optionally
    the ``request_id`` of the request it answers (one that is not pending is refused as stale)."""

    reviewer: NotRequired[str]
    request_id: NotRequired[str]


@with_config(_FORBID)
class EventWaitRequest(TypedDict):
    """The interrupt of a thread asleep until a domain event settles an effect in flight.

    Example:
        >>> wait = {"kind": "await_event", "event": "parcel.delivered", "key": "P-1", "step": 0,
        ...         "why": "in transit until the carrier delivers it"}
        >>> event_wait_of(wait) == wait, approval_request_of(wait)
        (True, None)
    """

    kind: Literal["await_event"]
    event: str
    key: str
    step: int
    why: str
    refused: NotRequired[str]
    """Why the last event this thread was woken with did not count (a forged or replayed one)."""


_REQUEST = TypeAdapter(ApprovalRequest)
_WAIT = TypeAdapter(EventWaitRequest)
_ANSWER = TypeAdapter(ApprovalAnswer)
_DECISION = TypeAdapter(KeelDecision)


def approval_request_of(value: object) -> ApprovalRequest | None:
    """The value as an approval request, or None when it is not one."""
    try:
        return _REQUEST.validate_python(value)
    except ValidationError:
        return None


def event_wait_of(value: object) -> EventWaitRequest | None:
    """The value as an event wait, or None when it is not one."""
    try:
        return _WAIT.validate_python(value)
    except ValidationError:
        return None


def approval_answer_of(value: object) -> ApprovalAnswer:
    """A resume value as an approval answer (its decisions are read by ``decision_of``).

    Raises:
        ValueError: the value is not ``{"decisions": [...], "reviewer"?: str}``.
    """
    try:
        return _ANSWER.validate_python(value)
    except ValidationError as err:
        raise ValueError(_first(err)) from err


def decision_of(value: object) -> KeelDecision:
    """One decision, typed.

    Raises:
        ValueError: not an approve, edit or reject decision of that shape.
    """
    try:
        return _DECISION.validate_python(value)
    except ValidationError as err:
        raise ValueError(_first(err)) from err


def decision_types(answer: dict[str, Any]) -> list[str]:
    """The decision types of a recorded answer, which may be one that was refused."""
    decisions = answer.get("decisions")
    if not isinstance(decisions, list):
        return []
    return [str(d.get("type")) for d in decisions if isinstance(d, dict)]


def _first(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
