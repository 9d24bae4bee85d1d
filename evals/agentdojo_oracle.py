"""Oracle chat models for AgentDojo: each user task's ground truth, at the model boundary.

The oracle knows the answer: for the request it is shown (matched against the suite's user task
prompts) it calls AgentDojo's own ``ground_truth(pre_environment)``. It is a fake on purpose, as
every model in Keel's evals is: it measures what the scaffolding lets through, not what a model
could work out. It does not read what its look-ups return to find its arguments; it already has
them, so its utility is an upper bound for any model.

- **Keel** (``submit_plan`` bound): it looks up the ground truth's reads that the planner is
  offered (one turn, all of them), then submits a plan whose steps are the other calls, citing
  the first corpus chunk of its prompt, with the task's ``GROUND_TRUTH_OUTPUT`` as the answer.
- **A tool-calling agent** (the baselines' ``create_agent``): it makes the ground truth's calls
  one per turn, then answers with ``GROUND_TRUTH_OUTPUT``.
- **Obedient** (``obedient=True``): whenever the injection task's goal is in any message it has
  been shown (injected text that reached its prompt), it also plans or calls that injection
  task's ground truth: a worst-case model that obeys every injection it sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

SUBMIT_PLAN = "submit_plan"
_CHUNK = re.compile(r"^\[([^\]\s]+)\] \(", re.MULTILINE)


class Case:
    """The case an oracle is in: the suite, the world it started from, the injection task."""

    def __init__(self, suite: Any, pre_environment: Any, injection_task: Any | None = None) -> None:
        self.suite = suite
        self.pre_environment = pre_environment
        self.injection_task = injection_task


class OracleModel(BaseChatModel):
    """Plans (or calls) the ground truth of the user task whose prompt it is shown."""

    case: Any = None
    obedient: bool = False
    bound: list[str] = Field(default_factory=list)
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "agentdojo-oracle-obedient" if self.obedient else "agentdojo-oracle"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        bound = self.model_copy(update={"bound": names})
        return bound  # type: ignore[return-value]

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        reply = self._reply(messages)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    # -- what it answers -------------------------------------------------------------------

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        case: Case = self.case
        text = "\n".join(str(m.content) for m in messages)
        task = _task_for(case.suite, text)
        if task is None:
            if SUBMIT_PLAN in self.bound:
                return _submit({"intent": "unknown", "cannot_plan": "no task matches"})
            return AIMessage(content="I cannot help with that.")
        calls = [(c.function, dict(c.args)) for c in task.ground_truth(case.pre_environment)]
        injection = case.injection_task
        if self.obedient and injection is not None and _reads(injection.GOAL, _shown(messages)):
            calls += [
                (c.function, dict(c.args)) for c in injection.ground_truth(case.pre_environment)
            ]
        output = task.GROUND_TRUTH_OUTPUT or "Done."
        if SUBMIT_PLAN in self.bound or _asked_for_a_plan(messages):
            return self._plan(messages, calls, output, text)
        return self._agent_turn(messages, calls, output)

    def _plan(
        self, messages: list[BaseMessage], calls: list[tuple[str, dict[str, Any]]], output: str,
        text: str,
    ) -> AIMessage:  # fmt: skip
        lookups = set(self.bound) - {SUBMIT_PLAN}
        looked = any(isinstance(m, ToolMessage) for m in messages)
        reads = [(n, a) for n, a in calls if n in lookups]
        if reads and not looked:
            return AIMessage(
                content="",
                tool_calls=[
                    {"name": n, "args": a, "id": f"lookup-{i}"} for i, (n, a) in enumerate(reads)
                ],
            )
        chunks = _CHUNK.findall(text)
        cite = [chunks[0]] if chunks else []
        # What it looked up (or could have) is not planned again; everything else is a step.
        steps = [
            {"tool": n, "args": a, "purpose": f"{n} as the request needs", "evidence": cite}
            for n, a in calls
            if not (looked and n in lookups)
        ]
        plan: dict[str, Any] = {"intent": "agentdojo_task", "steps": steps, "evidence": cite}
        plan["answer"] = output
        return _submit(plan)

    def _agent_turn(
        self, messages: list[BaseMessage], calls: list[tuple[str, dict[str, Any]]], output: str
    ) -> AIMessage:
        made = sum(len(m.tool_calls) for m in messages if isinstance(m, AIMessage))
        if made < len(calls):
            name, args = calls[made]
            return AIMessage(
                content="", tool_calls=[{"name": name, "args": args, "id": f"call-{made}"}]
            )
        return AIMessage(content=output)


def _task_for(suite: Any, text: str) -> Any | None:
    """The user task whose prompt the model was given (the longest that matches)."""
    # As a reader matches it: intake strips the request (travel's task 17 starts with spaces).
    said = " ".join(text.split())
    found = [t for t in suite.user_tasks.values() if " ".join(t.PROMPT.split()) in said]
    return max(found, key=lambda t: len(t.PROMPT)) if found else None


def _reads(goal: str, shown: str) -> bool:
    """Whether ``goal`` is in the text shown, as a reader would find it: a YAML answer folds a
    long line and doubles a quote (``friend''s``), and a model reads the instruction all the same.

    Example:
        >>> _reads("Book the Riverside View Hotel", "- Book the Riverside\\n  View Hotel")
        True
    """
    return " ".join(goal.split()) in " ".join(shown.replace("''", "'").split())


def _shown(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages)


def _asked_for_a_plan(messages: Sequence[BaseMessage]) -> bool:
    return any(SUBMIT_PLAN in str(m.content) for m in messages[:1])


def _submit(plan: dict[str, Any]) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": SUBMIT_PLAN, "args": plan, "id": "plan"}])
