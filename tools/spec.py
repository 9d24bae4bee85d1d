"""Typed tool specs and the registry every call goes through.

A spec is the single source for the planner's tool list, the validator's argument checks and the
executor's calls. Every call gets the integration's circuit breaker, a timeout per attempt and
retries for infrastructure faults (``tools.resilience``); a response that does not match the
output model is an integration fault, never data; a primary that is down hands over to its
fallback when it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from graph.state import Effect
from keel.errors import IntegrationError, Permanent, Retryable
from tools.resilience import Breaker, RetryPolicy, resilient_call

I = TypeVar("I", bound=BaseModel)  # noqa: E741
O = TypeVar("O", bound=BaseModel)  # noqa: E741


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

    def catalog_entry(self) -> dict[str, Any]:
        """How the planner sees the tool: name, purpose, effect and argument schema."""
        return {
            "name": self.name,
            "description": self.description,
            "effect": self.effect,
            "args": self.input_model.model_json_schema().get("properties", {}),
        }


@dataclass(frozen=True)
class CallResult:
    """A validated tool answer, and how it was obtained."""

    output: dict[str, Any]
    attempts: int
    via: str
    """The tool that answered: the one asked, or its fallback."""


@dataclass
class ToolRegistry:
    """The tools of one domain, by name, with one breaker per integration."""

    specs: Iterable[ToolSpec[Any, Any]]
    timeout_s: float = 2.0
    retry: RetryPolicy = RetryPolicy()  # noqa: RUF009 (an immutable NamedTuple)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._specs = {spec.name: spec for spec in self.specs}
        for spec in self._specs.values():
            self.breakers.setdefault(spec.integration, Breaker(spec.integration))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ToolSpec[Any, Any]:
        return self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def catalog(self) -> list[dict[str, Any]]:
        return [
            self._specs[n].catalog_entry() for n in self.names() if self._specs[n].planner_visible
        ]

    def call(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        fallback: bool = True,
    ) -> dict[str, Any]:
        """Run one tool call through its contract and return the validated output."""
        answer = self.invoke(
            name, args, idempotency_key=idempotency_key, retry=retry, fallback=fallback
        )
        return answer.output

    def invoke(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        fallback: bool = True,
    ) -> CallResult:
        """Run one tool call: validate, call resiliently, validate the answer, fall back if down.

        Raises:
            KeyError: the tool does not exist (the validator stops such plans first).
            pydantic.ValidationError: the arguments do not fit the input model.
            Permanent: the answer does not fit the output model, or the service refused.
            Retryable: every attempt (and the fallback's) failed with an infrastructure fault.
        """
        spec = self._specs[name]
        parsed = spec.parse_args(args)
        try:
            return self._attempt(spec, parsed, idempotency_key, retry)
        except Retryable:
            if spec.fallback is None or not fallback:
                raise
            # Same arguments, same idempotency key: if the primary did act before it went
            # quiet, the backend answers the fallback with that first result.
            return self._attempt(self._specs[spec.fallback], parsed, idempotency_key, retry)

    def _attempt(
        self, spec: ToolSpec[Any, Any], parsed: Any, key: str | None, retry: RetryPolicy | None
    ) -> CallResult:
        raw, attempts = resilient_call(
            lambda: spec.func(ToolCall(parsed, key)),
            breaker=self.breakers[spec.integration],
            policy=retry or spec.retry or self.retry,
            timeout_s=spec.timeout_s or self.timeout_s,
        )
        return CallResult(output=_validated(spec, raw), attempts=attempts, via=spec.name)

    def recorded(self, name: str, key: str) -> dict[str, Any] | None:
        """The backend's answer to an earlier call with ``key``, validated; None if none."""
        spec = self._specs[name]
        if spec.lookup is None:
            return None
        raw = spec.lookup(key)
        return None if raw is None else _validated(spec, raw)


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


__all__ = ["CallResult", "IntegrationError", "ToolCall", "ToolRegistry", "ToolSpec"]
