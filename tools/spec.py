"""Typed tool specs and the registry that runs them.

A spec is the single source for the planner's tool list, the validator's argument checks and the
executor's calls. A response that does not match the output model is an integration fault,
never data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from graph.state import Effect
from keel.errors import IntegrationError, Permanent

I = TypeVar("I", bound=BaseModel)  # noqa: E741
O = TypeVar("O", bound=BaseModel)  # noqa: E741


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
    """

    name: str
    description: str
    input_model: type[I]
    output_model: type[O]
    effect: Effect
    func: Callable[[ToolCall[I]], Mapping[str, Any]]

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


class ToolRegistry:
    """The tools of one domain, by name."""

    def __init__(self, specs: Iterable[ToolSpec[Any, Any]]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ToolSpec[Any, Any]:
        return self._specs[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def catalog(self) -> list[dict[str, Any]]:
        return [self._specs[name].catalog_entry() for name in self.names()]

    def call(
        self, name: str, args: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Run one tool call through its contract and return the validated output.

        Raises:
            KeyError: the tool does not exist (the validator stops such plans first).
            pydantic.ValidationError: the arguments do not fit the input model.
            Permanent: the response does not fit the output model.
            IntegrationError: the integration itself failed.
        """
        spec = self._specs[name]
        parsed = spec.parse_args(args)
        raw = spec.func(ToolCall(parsed, idempotency_key))
        try:
            output: dict[str, Any] = spec.output_model.model_validate(dict(raw)).model_dump(
                mode="json"
            )
        except ValidationError as err:
            first = err.errors()[0]
            raise Permanent(
                f"{name} answered in an unexpected shape: {first['loc']}: {first['msg']}"
            ) from err
        return output


__all__ = ["IntegrationError", "ToolCall", "ToolRegistry", "ToolSpec"]
