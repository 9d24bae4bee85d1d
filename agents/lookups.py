"""Planner look-ups: a model planner reads what a request needs, within its grants, then plans.

A request often names what must be read before anything can be planned ("pay the bill in
bill-december-2023.txt"). A domain's ``gather_records`` reads what its own code knows to read; a
domain built from someone else's environment (``domains/agentdojo``) has no such code, so its
model planner looks things up itself. How that fits the loop (plan, validate, approve, execute):

- **Inside the plan node, reads only.** Before it calls ``submit_plan``, the model may call the
  tools offered here: planner-visible ``read`` tools that the manifest grants to the ``planner``
  agent. Each call goes through the gate as the planner (its own grants, never the executor's),
  so the manifest decides what can be looked up; a manifest cannot grant the planner a write
  (``tools.permissions`` refuses such a grant at load), so no look-up changes anything.
- **Bounded.** At most ``budget`` calls per plan (``KEEL_PLANNER_LOOKUPS``, or the domain's
  ``planner_lookups``; 0 turns look-ups off, the default for a domain that does not ask for
  them); a call over the budget is refused, and the next turn offers ``submit_plan`` alone.
- **Every answer is outside text.** A field a tool marks as outside text (for the AgentDojo
  adapter: everything the suite's data file does not declare trusted) is screened as any
  outside text is (``agents.outside``): flagged text is withheld from the model, the rest is shown
  fenced and marked with its chunk id, and all of it becomes ``untrusted`` evidence in the
  thread, so a write or irreversible step planned after it needs an approval that shows it
  (taint).
- **The validator still stands between any look-up and any write.** The plan the model submits
  after its look-ups goes to ``check_plan`` like any other; the executor runs only validated
  steps, under their approvals.
- **The runbook planner does not look things up.** It has no model to decide what to read: it
  plans from ``gather_records`` as before, and a domain whose requests need look-ups (AgentDojo's)
  refuses what its data runbooks do not cover when no model is configured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from agents import prompts
from agents.outside import outside_evidence
from keel.errors import KeelError
from tools.permissions import PermissionGate
from tools.spec import AgentTools, HeardText, ToolRegistry, ToolSpec, outside_fields


def lookup_specs(tools: ToolRegistry, agent: str = "planner") -> list[ToolSpec[Any, Any]]:
    """The tools ``agent`` may look things up with: planner-visible reads the manifest grants it.

    Without a manifest gate nothing is offered (the gate would deny every call anyway).
    """
    gate = tools.gate
    if not isinstance(gate, PermissionGate):
        return []
    policy = gate.manifest.agents.get(agent)
    granted = set(policy.tools) if policy is not None and "read" in policy.effects else set()
    return [
        tools[name]
        for name in tools.names()
        if name in granted and tools[name].effect == "read" and tools[name].planner_visible
    ]


def lookup_schema(spec: ToolSpec[Any, Any]) -> dict[str, Any]:
    """One look-up tool in OpenAI's format: its name, description and argument schema."""
    parameters = spec.input_model.model_json_schema()
    parameters.pop("title", None)
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": parameters},
    }


def answer_lookups(
    reply: AIMessage,
    tools: AgentTools,
    offered: Sequence[ToolSpec[Any, Any]],
    heard: list[HeardText],
    today: date,
    remaining: int,
) -> tuple[list[BaseMessage], int]:
    """Make the look-ups a reply asks for (at most ``remaining``): one tool message per call.

    Each call is made through ``tools`` (the planner's handle: its grants, its heard list); a
    refusal or a failure is answered as such, never raised. Returns the messages and how many
    look-ups are left.
    """
    names = {s.name for s in offered}
    answers: list[BaseMessage] = []
    for call in reply.tool_calls:
        call_id = str(call.get("id") or call["name"])
        if call["name"] not in names:
            answers.append(_refused(call_id, f"{call['name']} is not a look-up you may make"))
            continue
        if remaining <= 0:
            answers.append(_refused(call_id, prompts.PLANNER_LOOKUPS_SPENT))
            continue
        remaining -= 1
        before = len(heard)
        try:
            output = tools.call(call["name"], call["args"])
        except KeelError as err:  # denied, refused by its contract, or the system is down
            answers.append(_refused(call_id, f"{type(err).__name__}: {err}"))
            continue
        fresh = outside_evidence(heard[before:], today)
        answers.append(
            ToolMessage(render_lookup(tools[call["name"]], output, fresh), tool_call_id=call_id)
        )
    return answers, remaining


def render_lookup(spec: ToolSpec[Any, Any], output: dict[str, Any], outside: Sequence[Any]) -> str:
    """A look-up's answer as the model reads it: fields its owner vouches for as JSON, each
    outside field replaced by a pointer to its marked (or withheld) text below."""
    marked = set(outside_fields(spec.output_model))
    by_field = {e.chunk_id.rsplit(":", 1)[-1]: e for e in outside}
    shown = {
        k: (f"(outside text: see {by_field[k].chunk_id})" if k in by_field else v)
        for k, v in output.items()
        if k not in marked or k in by_field
    }
    items = [
        prompts.PLANNER_OUTSIDE_ITEM.format(
            chunk_id=e.chunk_id,
            source=e.source,
            text=prompts.PLANNER_OUTSIDE_WITHHELD.format(flags=", ".join(e.flags))
            if e.flags
            else e.text,
        )
        for e in outside
    ]
    body = json.dumps(shown, default=str)
    return "\n".join([body, *items]) if items else body


def _refused(call_id: str, why: str) -> ToolMessage:
    return ToolMessage(f"refused: {why}", tool_call_id=call_id, status="error")
