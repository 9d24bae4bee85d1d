"""The two ends of a run: respond with the outcome, or escalate to a human with a full account.

Either end also answers in the chat: one AI message whose text is the answer and whose
``additional_kwargs["keel"]`` holds the outcome's status (and, escalated, the account), so a chat
client (Studio, Agent Chat UI) shows the outcome with no Keel-specific code.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from graph.state import EscalateView, Escalation, RespondView, Status, ToolOutcome

OUTCOME_MESSAGE_ID = "keel-outcome"
"""A thread ends once: its outcome message has one id, so a re-run end node replaces it."""


def outcome_message(status: Status, answer: str, **outcome: Any) -> AIMessage:
    """The AI message that carries a thread's outcome.

    Example:
        >>> outcome_message("done", "Done.").additional_kwargs
        {'keel': {'status': 'done'}}
    """
    return AIMessage(
        answer,
        id=OUTCOME_MESSAGE_ID,
        name="keel",
        additional_kwargs={"keel": {"status": status, **outcome}},
    )


def summarize(outcome: ToolOutcome) -> str:
    if not outcome.ok:
        return f"{outcome.tool} {outcome.args}: {outcome.error}"
    output = outcome.output or {}
    shown = {k: v for k, v in output.items() if k not in ("replayed",)}
    route = f" (via fallback {outcome.via})" if outcome.via else ""
    return f"{outcome.tool}{route}: {shown}"


def respond(state: RespondView) -> dict[str, Any]:
    if state.get("status") == "refused":
        answer = state.get("answer", "Refused.")
        return {"status": "refused", "messages": [outcome_message("refused", answer)]}
    plan = state.get("plan")
    results = state.get("results", [])
    if plan is not None and plan.answer and not plan.steps:
        answer = plan.answer
    else:
        answer = "Done:\n" + "\n".join(f"- {summarize(r)}" for r in results)
    return {"status": "done", "answer": answer, "messages": [outcome_message("done", answer)]}


def escalate(state: EscalateView) -> dict[str, Any]:
    plan = state.get("plan")
    results = state.get("results", [])
    verdict = state.get("result_verdict") or state.get("plan_verdict")
    reason = "; ".join(verdict.reasons) if verdict is not None and not verdict.ok else "unknown"
    if state.get("turn") == "cut_short":
        reason = "the run stopped before it finished; a chat message arrived, which does not go on"
    done = [summarize(r) for r in results if r.ok]
    ran = {r.step for r in results}
    left = (
        [f"{s.tool} {s.args}" for i, s in enumerate(plan.steps) if i not in ran]
        if plan is not None
        else []
    )
    escalation = Escalation(reason=reason, done=done, left=left, budget=state.get("budget_stop"))
    answer = f"Escalated to a human: {reason}."
    if done:
        answer += " Already done: " + "; ".join(done) + "."
    if left:
        answer += " Not done: " + "; ".join(left) + "."
    message = outcome_message("escalated", answer, escalation=escalation.model_dump())
    return {
        "status": "escalated",
        "escalation": escalation,
        "answer": answer,
        "messages": [message],
    }
