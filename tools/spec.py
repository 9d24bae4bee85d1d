"""Typed tool specs and the registry every call goes through.

A spec is the single source for the planner's tool list, the validator's argument checks and the
executor's calls. Every call gets the integration's circuit breaker, a timeout per attempt and
retries for infrastructure faults (``tools.resilience``); a response that does not match the
output model is an integration fault, never data; a primary that is down hands over to its
fallback when it has one.

Every call names the agent that makes it and passes the permission gate first
(``tools.permissions``): a registry without a gate denies everything. Every call, allowed or
denied, is told to the registry's listeners as one ``ToolEvent`` (the flight recorder is one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from graph.state import Effect, Receipt, approval_digest
from keel.errors import IntegrationError, Permanent, PermissionDenied, Retryable
from tools.provenance import Sources, vouched_part
from tools.resilience import Breaker, RetryPolicy, resilient_call

I = TypeVar("I", bound=BaseModel)  # noqa: E741
O = TypeVar("O", bound=BaseModel)  # noqa: E741


@dataclass(frozen=True)
class OutsideText:
    """Marks an output field whose text was written by someone outside the company.

    A message from outside, a record's free-text note: text the tool only carries.
    Such text reaches a model as data, is screened as the corpus is at ingest, and taints the thread
    as a low-trust document does. Mark a field with ``Annotated[str | None, OUTSIDE_TEXT]``.

    Example:
        >>> from typing import Annotated
        >>> from pydantic import create_model
        >>> Order = create_model(
        ...     "Order", order_id=(str, ...), note=(Annotated[str | None, OUTSIDE_TEXT], None)
        ... )
        >>> outside_fields(Order)
        ['note']
    """

    who: str = "outside the company"


OUTSIDE_TEXT = OutsideText()
"""The marker for an output field that carries outside text."""


def outside_fields(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s fields marked as outside text (top-level fields)."""
    return [
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, OutsideText) for m in info.metadata)
    ]


@dataclass(frozen=True)
class HeardText:
    """Outside text one tool call returned: which tool, for which record, in which field."""

    tool: str
    ref: str
    field: str
    text: str


class ShapeChanged(Permanent):
    """The integration answered, in a shape its contract does not know: detected, not consumed."""


@dataclass(frozen=True)
class ToolCall(Generic[I]):
    """What a tool function receives: validated arguments and, for irreversible tools, the key."""

    args: I
    idempotency_key: str | None = None


@dataclass(frozen=True)
class ToolSpec(Generic[I, O]):
    """A tool's contract.

    Args:
        name: The name plans use.
        description: What the tool does, for the planner's tool list.
        input_model: Arguments; ``extra="forbid"`` so a smuggled field is refused.
        output_model: The response shape; a changed shape is detected, not consumed.
        effect: ``read``, ``write`` or ``irreversible``.
        func: The integration itself, called with a ``ToolCall``; returns a mapping.
        integration: The system behind it; one circuit breaker per integration.
        timeout_s: Per attempt; None takes the registry's default.
        retry: How to retry infrastructure faults; None takes the registry's default.
        fallback: Another tool with the same arguments to use when this one is down.
        planner_visible: False for fallbacks: plans name the primary, never the fallback.
    """

    name: str
    description: str
    input_model: type[I]
    output_model: type[O]
    effect: Effect
    func: Callable[[ToolCall[I]], Mapping[str, Any]]
    integration: str = "default"
    timeout_s: float | None = None
    retry: RetryPolicy | None = None
    fallback: str | None = None
    planner_visible: bool = True
    lookup: Callable[[str], Mapping[str, Any] | None] | None = None
    """For irreversible tools: ask the backend what the call with this idempotency key did."""

    def parse_args(self, args: Mapping[str, Any]) -> I:
        return self.input_model.model_validate(dict(args))

    def outside_text(self, args: Mapping[str, Any], output: Mapping[str, Any]) -> list[HeardText]:
        """The non-empty outside text in one of this tool's answers."""
        ref = ",".join(str(v) for v in args.values())
        return [
            HeardText(self.name, ref, name, str(output[name]))
            for name in outside_fields(self.output_model)
            if output.get(name)
        ]

    def catalog_entry(self) -> dict[str, Any]:
        """How the planner sees the tool: name, purpose, effect and argument schema."""
        return {
            "name": self.name,
            "description": self.description,
            "effect": self.effect,
            "args": self.input_model.model_json_schema().get("properties", {}),
        }


@dataclass(frozen=True)
class ThreadFacts:
    """What the gate must know about the thread a call is made for.

    Attributes:
        thread_id: the thread; approvals are bound to it.
        spent: digests of approvals already used (a receipt works once).
        rejected: digests a human rejected (a rejection holds).
        tainted: low-trust evidence in the thread's context; writes planned from it lose their
            standing grants.
        requester: the thread's authenticated requester, when an engine vouched for one: a
            four-eyes grant refuses a receipt this person approved.
    """

    thread_id: str | None = None
    subjects: Mapping[str, str] = field(default_factory=dict)
    """The ids the request names (an order, a parcel, a service): what scopes narrow calls to."""
    spent: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    tainted: tuple[str, ...] = ()
    requester: str | None = None
    sources: Sources | None = None
    """What the call's arguments may come from (``tools.provenance``), for a grant's
    ``refuse_outside``; None where nobody gathered them (such a rule then fails closed)."""


@dataclass(frozen=True)
class CallRequest:
    """One call as the gate sees it: who asks, for what, with which approval."""

    agent: str
    spec: ToolSpec[Any, Any]
    args: dict[str, Any]
    """The canonical arguments: parsed by the input model, dumped as JSON."""
    digest: str
    facts: ThreadFacts
    approval: Receipt | None


class Gate(Protocol):
    """Decides whether one call may run; ``tools.permissions.PermissionGate`` is the real one."""

    @property
    def version(self) -> str: ...

    def check(self, request: CallRequest, tools: ToolRegistry) -> tuple[str, str] | None:
        """None to allow; else ``(rule, reason)`` of the denial."""
        ...

    def needs_approval(self, agent: str, spec: ToolSpec[Any, Any], tainted: bool) -> bool:
        """Whether ``agent`` may make this call only with a human's approval."""
        ...


class ToolEvent(BaseModel):
    """One tool call, allowed or denied, as the registry's listeners see it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    tool: str
    effect: Effect
    args: dict[str, Any]
    digest: str
    thread_id: str | None
    decision: Literal["allowed", "denied"]
    rule: str | None = None
    """For a denial: the rule that denied it; for an allowed call: the grant that allowed it."""
    reason: str | None = None
    ok: bool = False
    output: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 0
    via: str | None = None
    latency_ms: float = 0.0
    breaker_state: str = "closed"
    idempotency_key: str | None = None
    manifest_version: str | None = None


@dataclass(frozen=True)
class CallResult:
    """A validated tool answer, and how it was obtained."""

    output: dict[str, Any]
    attempts: int
    via: str
    """The tool that answered: the one asked, or its fallback."""


@dataclass
class ToolRegistry:
    """The tools of one domain, by name, with one breaker per integration.

    ``breaker_for`` makes each integration's breaker: ``Breaker`` keeps its state in this process;
    ``open_stores(settings).breakers.breaker`` (what ``graph.domain.tool_registry`` passes
    for a domain's declared tools) shares it with every process of the Keel home. ``breakers``
    given up front are kept.
    """

    specs: Iterable[ToolSpec[Any, Any]]
    timeout_s: float = 2.0
    retry: RetryPolicy = RetryPolicy()  # noqa: RUF009 (an immutable NamedTuple)
    breakers: dict[str, Breaker] = field(default_factory=dict)
    breaker_for: Callable[[str], Breaker] = Breaker
    gate: Gate | None = None
    listeners: list[Callable[[ToolEvent], None]] = field(default_factory=list)
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=32, thread_name_prefix="keel-tool")
    )
    """Runs the calls, so each gets a timeout without paying for a thread of its own."""

    def __post_init__(self) -> None:
        self._specs = {spec.name: spec for spec in self.specs}
        for spec in self._specs.values():
            if spec.integration not in self.breakers:
                self.breakers[spec.integration] = self.breaker_for(spec.integration)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ToolSpec[Any, Any]:
        return self._specs[name]

    def wrap_specs(self, wrap: Callable[[ToolSpec[Any, Any]], ToolSpec[Any, Any]]) -> None:
        """Replace every spec by ``wrap(spec)``, in place (gate, breakers, listeners are kept).

        Every backend call goes through a spec's ``func`` or ``lookup``, so a wrapper applied
        here sees each of them, a tool added later included (the crash sweep counts them).
        """
        wrapped = {name: wrap(spec) for name, spec in self._specs.items()}
        renamed = [name for name, spec in wrapped.items() if spec.name != name]
        if renamed:
            raise ValueError(f"wrap_specs must keep the tools' names: {renamed} changed")
        self._specs = wrapped

    def names(self) -> list[str]:
        return sorted(self._specs)

    def catalog(self) -> list[dict[str, Any]]:
        return [
            self._specs[n].catalog_entry() for n in self.names() if self._specs[n].planner_visible
        ]

    def for_agent(
        self,
        agent: str,
        facts: ThreadFacts = ThreadFacts(),
        heard: list[HeardText] | None = None,
        vouched: list[dict[str, Any]] | None = None,
    ) -> AgentTools:
        """The registry as one agent may use it: every call is made, and gated, as that agent.

        With ``heard``, the outside text of every answer is collected there; with ``vouched``,
        the rest of every answer (what the tool's owner vouches for, ``tools.provenance``).
        """
        return AgentTools(self, agent, facts, heard, vouched)

    def call(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        agent: str,
        facts: ThreadFacts = ThreadFacts(),
        approval: Receipt | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        fallback: bool = True,
    ) -> dict[str, Any]:
        """Run one tool call for ``agent`` through the gate and its contract; the output."""
        answer = self.invoke(
            name, args, agent=agent, facts=facts, approval=approval,
            idempotency_key=idempotency_key, retry=retry, fallback=fallback,
        )  # fmt: skip
        return answer.output

    def invoke(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        agent: str,
        facts: ThreadFacts = ThreadFacts(),
        approval: Receipt | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        fallback: bool = True,
        before: Callable[[], None] | None = None,
    ) -> CallResult:
        """Run one tool call: gate, validate, call resiliently, validate the answer, fall back.

        Raises:
            PermissionDenied: the gate refused the call, the tool does not exist, or the
                arguments do not fit its input model (a smuggled field); it was not made.
            Permanent: the answer does not fit the output model, or the service refused.
            Retryable: every attempt (and the fallback's) failed with an infrastructure fault.

        ``before`` runs once the gate has allowed the call and before it is made (the executor
        writes its intent there).
        """
        spec = self._specs.get(name)
        if spec is None:
            raise self._refused(agent, name, args, facts, "unknown-tool", f"no tool named {name!r}")
        try:
            parsed = spec.parse_args(args)
        except ValidationError as err:
            first = err.errors()[0]
            reason = f"{name}: arguments refused by its contract: {first['loc']}: {first['msg']}"
            raise self._refused(agent, name, args, facts, "contract", reason, spec.effect) from err
        canonical = parsed.model_dump(mode="json")
        # Approvals bind the arguments as the reviewer saw them (the plan's), not a re-encoding.
        digest = approval_digest(name, dict(args))
        event: dict[str, Any] = {
            "agent": agent, "tool": name, "effect": spec.effect, "args": canonical,
            "digest": digest, "thread_id": facts.thread_id, "idempotency_key": idempotency_key,
            "manifest_version": self.gate.version if self.gate else None,
        }  # fmt: skip
        request = CallRequest(agent, spec, canonical, digest, facts, approval)
        denial: tuple[str, str] | None = (
            "no-manifest", "no permission manifest is loaded: every call is denied"
        )  # fmt: skip
        if self.gate is not None:
            denial = self.gate.check(request, self)
        if denial is not None:
            rule, reason = denial
            self._tell(ToolEvent(**event, decision="denied", rule=rule, reason=reason))
            raise PermissionDenied(reason, rule=rule)
        if before is not None:
            before()
        started = time.perf_counter()
        try:
            try:
                answer = self._attempt(spec, parsed, idempotency_key, retry)
            except Retryable:
                if spec.fallback is None or not fallback:
                    raise
                # Same arguments, same idempotency key: if the primary did act before it went
                # quiet, the backend answers the fallback with that first result.
                answer = self._attempt(self._specs[spec.fallback], parsed, idempotency_key, retry)
        except IntegrationError as err:
            self._tell(ToolEvent(
                **event, decision="allowed", error=str(err)[:500],
                error_kind=type(err).__name__, latency_ms=_ms(started),
                breaker_state=self.breakers[spec.integration].state,
            ))  # fmt: skip
            raise
        self._tell(ToolEvent(
            **event, decision="allowed", ok=True, output=answer.output, attempts=answer.attempts,
            via=answer.via if answer.via != name else None, latency_ms=_ms(started),
            breaker_state=self.breakers[spec.integration].state,
        ))  # fmt: skip
        return answer

    def refuse(
        self, agent: str, name: str, args: Mapping[str, Any], facts: ThreadFacts, rule: str,
        reason: str,
    ) -> PermissionDenied:  # fmt: skip
        """Record a call its caller refuses before the gate (the executor: a step of no plan the
        validator passed), as a denial like the gate's; the error that says so."""
        effect = self._specs[name].effect if name in self._specs else "read"
        return self._refused(agent, name, args, facts, rule, reason, effect)

    def _refused(
        self, agent: str, name: str, args: Mapping[str, Any], facts: ThreadFacts, rule: str,
        reason: str, effect: Effect = "read",
    ) -> PermissionDenied:  # fmt: skip
        """Record a call refused before it could be gated (no such tool, smuggled arguments)."""
        raw = {str(k): v for k, v in args.items()} if isinstance(args, Mapping) else {}
        self._tell(ToolEvent(
            agent=agent, tool=name, effect=effect, args=raw, digest=approval_digest(name, raw),
            thread_id=facts.thread_id, decision="denied", rule=rule, reason=reason,
            manifest_version=self.gate.version if self.gate else None,
        ))  # fmt: skip
        return PermissionDenied(reason, rule=rule)

    def _tell(self, event: ToolEvent) -> None:
        for listener in self.listeners:
            listener(event)

    def _attempt(
        self, spec: ToolSpec[Any, Any], parsed: Any, key: str | None, retry: RetryPolicy | None
    ) -> CallResult:
        raw, attempts = resilient_call(
            lambda: spec.func(ToolCall(parsed, key)),
            breaker=self.breakers[spec.integration],
            policy=retry or spec.retry or self.retry,
            timeout_s=spec.timeout_s or self.timeout_s,
            pool=self.pool,
        )
        return CallResult(output=_validated(spec, raw), attempts=attempts, via=spec.name)

    def recorded(self, name: str, key: str) -> dict[str, Any] | None:
        """The backend's answer to an earlier call with ``key``, validated; None if none."""
        spec = self._specs[name]
        if spec.lookup is None:
            return None
        raw = spec.lookup(key)
        return None if raw is None else _validated(spec, raw)


@dataclass(frozen=True)
class AgentTools:
    """One agent's handle on the registry: the same tools, every call made as ``agent``.

    With ``heard`` given, the outside text of every answer is appended to it: the planner reads
    records through such a handle, so what people outside the company wrote is known and taints.
    """

    registry: ToolRegistry
    agent: str
    facts: ThreadFacts = ThreadFacts()
    heard: list[HeardText] | None = None
    vouched: list[dict[str, Any]] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.registry

    def __getitem__(self, name: str) -> ToolSpec[Any, Any]:
        return self.registry[name]

    @property
    def breakers(self) -> dict[str, Breaker]:
        return self.registry.breakers

    def call(self, name: str, args: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        return self.invoke(name, args, **options).output

    def invoke(self, name: str, args: Mapping[str, Any], **options: Any) -> CallResult:
        answer = self.registry.invoke(name, args, agent=self.agent, facts=self.facts, **options)
        if self.heard is not None:
            self.heard.extend(self.registry[name].outside_text(args, answer.output))
        if self.vouched is not None:
            marked = outside_fields(self.registry[name].output_model)
            self.vouched.append({name: vouched_part(answer.output, marked)})
        return answer


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _validated(spec: ToolSpec[Any, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The answer as its output model reads it; any other shape is a fault, never data."""
    try:
        output: dict[str, Any] = spec.output_model.model_validate(dict(raw)).model_dump(mode="json")
    except ValidationError as err:
        first = err.errors()[0]
        raise ShapeChanged(
            f"{spec.name} answered in an unexpected shape: {first['loc']}: {first['msg']}"
        ) from err
    return output


__all__ = [
    "OUTSIDE_TEXT",
    "AgentTools",
    "CallRequest",
    "CallResult",
    "Gate",
    "HeardText",
    "IntegrationError",
    "OutsideText",
    "ThreadFacts",
    "ToolCall",
    "ToolEvent",
    "ToolRegistry",
    "ToolSpec",
    "outside_fields",
]
