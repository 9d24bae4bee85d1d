"""The baselines' tools: a domain's own tools as plain LangChain tools, for ``create_agent``.

Every suite that compares Keel with ``create_agent`` hands the baseline the same integrations
Keel calls (the domain's ``ToolRegistry`` specs, bound to the same backend), without Keel's
scaffolding around them: no gate, no retries, no breakers, no idempotency key of Keel's (a plain
integration sends a fresh key with every call, so a retried refund is a second refund). The
arguments are checked by the tool's own input model, as a LangChain tool's schema would; the
answer is handed to the model as it came, a changed shape included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from langchain.agents.middleware import InterruptOnConfig
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import BaseTool, StructuredTool

from tools.faults import FaultInjector, FaultProfile
from tools.resilience import with_timeout
from tools.spec import ToolCall, ToolRegistry, ToolSpec

TIMEOUT_S = 0.1
"""The client timeout of every agent in the fault evals, Keel's and the baselines'."""


def baseline_tools(
    registry: ToolRegistry,
    injector: FaultInjector | None = None,
    consumed: dict[str, int] | None = None,
    made: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[BaseTool]:
    """The registry's planner-visible tools as LangChain tools, faults injected.

    Args:
        registry: the domain's tools (built without faults: ``injector`` adds them here).
        injector: the fault layer, the same seeded one Keel's run gets.
        consumed: ``consumed["shape_changed"]`` counts changed answers handed to the model.
        made: each call the agent really makes is appended (name, arguments).
    """
    fault = injector or FaultInjector(FaultProfile())
    counts = consumed if consumed is not None else {"shape_changed": 0}
    return [
        _as_tool(registry[name], fault, counts, made)
        for name in registry.names()
        if registry[name].planner_visible
    ]


def irreversible(registry: ToolRegistry) -> dict[str, bool | InterruptOnConfig]:
    """The tools a careful user puts under ``HumanInTheLoopMiddleware``: the irreversible ones."""
    return {n: True for n in registry.names() if registry[n].effect == "irreversible"}


def _as_tool(
    spec: ToolSpec[Any, Any],
    injector: FaultInjector,
    consumed: dict[str, int],
    made: list[tuple[str, dict[str, Any]]] | None,
) -> BaseTool:
    func: Callable[[Any], Mapping[str, Any]] = injector.wrap(
        spec.integration, TIMEOUT_S, spec.func, tool=spec.name
    )

    def call(**kwargs: Any) -> str:
        if made is not None:
            made.append((spec.name, dict(kwargs)))
        key = f"plain-{uuid.uuid4()}" if spec.effect == "irreversible" else None
        request = ToolCall(args=spec.parse_args(kwargs), idempotency_key=key)
        # The same client timeout Keel uses: a careful integration does not wait forever.
        output = dict(with_timeout(lambda: func(request), TIMEOUT_S))
        if any(k.endswith("_v2") for k in output):
            consumed["shape_changed"] += 1  # a changed shape, handed to the model as data
        return json.dumps(output, default=str)

    return StructuredTool.from_function(
        func=call, name=spec.name, description=spec.description, args_schema=spec.input_model
    )


def scripted_calls(calls: list[tuple[str, dict[str, Any]]]) -> list[BaseMessage]:
    """A tool-calling model's answers: one call per turn, then "Done."."""
    script: list[BaseMessage] = [
        AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call-{i}"}])
        for i, (n, a) in enumerate(calls)
    ]
    script.append(AIMessage(content="Done."))
    return script
