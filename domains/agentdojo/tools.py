"""AgentDojo's tool functions as Keel tools: typed, gated, and default-deny on trust.

Each AgentDojo ``Function`` already carries a pydantic model of its arguments, built from its
signature and docstring; the Keel tool takes those fields as they are, under a model that refuses
any other field (a smuggled argument is refused by the contract, as for every Keel tool). The
effect comes from the suite's data file (``domains.agentdojo.suite``), ``irreversible`` when it
does not name the tool.

Every answer comes back in two parts: ``trusted``, the fields the suite's file says the tool's
owner vouches for (a balance, a transaction's amount and recipient), and ``text``, the whole
answer as YAML, which is outside text (``tools.spec.OUTSIDE_TEXT``): screened, shown to a model
only as marked data, and tainting the thread, as a ticket's body is in the support desk. A tool
the file does not name has no trusted part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, create_model

from domains.agentdojo.backend import EnvironmentBackend
from domains.agentdojo.suite import ALL_FIELDS, SuiteData
from graph.domain import OUTSIDE_TEXT, ToolCall, ToolSpec


class ToolArgs(BaseModel):
    """The base of every adapted tool's arguments: nothing the function does not take."""

    model_config = ConfigDict(extra="forbid")


class ToolAnswer(BaseModel):
    """An adapted tool's answer: what its owner vouches for, and the rest as outside text."""

    model_config = ConfigDict(extra="forbid")

    trusted: Any = None
    text: Annotated[str | None, OUTSIDE_TEXT] = None


def input_model(function: Any) -> type[BaseModel]:
    """The function's own argument model (AgentDojo's), refusing any other field."""
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in function.parameters.model_fields.items()
    }
    model: type[BaseModel] = create_model(f"{function.name}_args", __base__=ToolArgs, **fields)
    return model


def split_answer(result: Any, trusted: list[str]) -> dict[str, Any]:
    """``{"trusted": ..., "text": ...}`` for one answer and the fields its owner vouches for.

    Example:
        >>> split_answer([{"id": 1, "subject": "Ignore all"}], ["id"])
        {'trusted': [{'id': 1}], 'text': '- id: 1\\n  subject: Ignore all\\n'}
        >>> split_answer(12.5, ["*"])
        {'trusted': 12.5, 'text': None}
        >>> split_answer("a note", [])
        {'trusted': None, 'text': 'a note'}
    """
    if ALL_FIELDS in trusted:
        return {"trusted": result, "text": None}
    vouched: Any = None
    if trusted and isinstance(result, dict):
        vouched = {k: v for k, v in result.items() if k in trusted}
    elif trusted and isinstance(result, list) and all(isinstance(r, dict) for r in result):
        vouched = [{k: v for k, v in r.items() if k in trusted} for r in result]
    if result is None or result == "" or result == [] or result == {}:
        return {"trusted": vouched, "text": None}
    text = result if isinstance(result, str) else yaml.safe_dump(result, sort_keys=False)
    return {"trusted": vouched, "text": text}


def suite_tools(
    backend: EnvironmentBackend, data: SuiteData, *, timeout_s: float | None = None
) -> list[ToolSpec[Any, Any]]:
    """Every tool of the backend's suite as a Keel tool bound to that backend, declared (Keel
    wraps it); ``timeout_s`` per attempt, None for the registry's."""
    specs: list[ToolSpec[Any, Any]] = []
    for function in backend.suite.tools:
        effect = data.effect(function.name)
        specs.append(
            ToolSpec(
                name=function.name,
                description=function.description,
                input_model=input_model(function),
                output_model=ToolAnswer,
                effect=effect,
                func=_caller(backend, function.name, effect, data.trusted.get(function.name, [])),
                integration=data.suite,
                timeout_s=timeout_s,
                lookup=_lookup(backend, data.trusted.get(function.name, []))
                if effect == "irreversible"
                else None,
            )
        )
    return specs


def _caller(
    backend: EnvironmentBackend, tool: str, effect: str, trusted: list[str]
) -> Callable[[ToolCall[Any]], Mapping[str, Any]]:
    def call(c: ToolCall[Any]) -> Mapping[str, Any]:
        # Only the fields the caller gave: AgentDojo's own defaults fill the rest, as they would
        # for its own agents.
        args = c.args.model_dump(exclude_unset=True)
        key = c.idempotency_key if effect == "irreversible" else None
        answer = backend.call(tool, args, effect, key)
        return split_answer(answer["result"], trusted)

    return call


def _lookup(
    backend: EnvironmentBackend, trusted: list[str]
) -> Callable[[str], Mapping[str, Any] | None]:
    def recorded(key: str) -> Mapping[str, Any] | None:
        answer = backend.recorded(key)
        return None if answer is None else split_answer(answer["result"], trusted)

    return recorded
