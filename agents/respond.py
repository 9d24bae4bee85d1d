"""The two ends of a run: respond with the outcome, or escalate to a human with a full account."""

from __future__ import annotations

from typing import Any

from graph.state import EscalateView, Escalation, RespondView, ToolOutcome


def summarize(outcome: ToolOutcome) -> str:
    if not outcome.ok:
        return f"{outcome.tool} {outcome.args}: {outcome.error}"
    output = outcome.output or {}
    shown = {k: v for k, v in output.items() if k not in ("replayed",)}
    route = f" (via fallback {outcome.via})" if outcome.via else ""
    return f"{outcome.tool}{route}: {shown}"


def respond(state: RespondView) -> dict[str, Any]:
    if state.get("status") == "refused":
        return {"status": "refused"}
    plan = state.get("plan")
    results = state.get("results", [])
    if plan is not None and plan.answer and not plan.steps:
        return {"status": "done", "answer": plan.answer}
    lines = [f"- {summarize(r)}" for r in results]
    return {"status": "done", "answer": "Done:\n" + "\n".join(lines)}


def escalate(state: EscalateView) -> dict[str, Any]:
    plan = state.get("plan")
    results = state.get("results", [])
    verdict = state.get("result_verdict") or state.get("plan_verdict")
    reason = "; ".join(verdict.reasons) if verdict is not None and not verdict.ok else "unknown"
    done = [summarize(r) for r in results if r.ok]
    ran = {r.step for r in results}
    left = (
        [f"{s.tool} {s.args}" for i, s in enumerate(plan.steps) if i not in ran]
        if plan is not None
        else []
    )
    escalation = Escalation(reason=reason, done=done, left=left)
    answer = f"Escalated to a human: {reason}."
    if done:
        answer += " Already done: " + "; ".join(done) + "."
    if left:
        answer += " Not done: " + "; ".join(left) + "."
    return {"status": "escalated", "escalation": escalation, "answer": answer}
