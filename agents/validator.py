"""Validator: deterministic checks between stages, the plan before it runs and each result after.

It only reads, but for one record: a plan it passes is written to the thread guard
(``stores.guard``), where the executor looks for it before each step. A refused plan goes back to
the planner with reasons, a bounded number of times; a failed result escalates, because what
already ran cannot be un-run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime
from pydantic import ValidationError

from graph.approval import pending_update, thread_entities
from graph.context import KeelContext, context_of, guarded_thread
from graph.state import (
    Edit,
    Plan,
    PlanCheckView,
    ResultCheckView,
    StateUpdate,
    Step,
    Verdict,
    approval_digest,
    is_outside,
)
from keel.errors import IntegrationError, PermissionDenied
from stores.guard import GuardFacts, plan_digest
from tools.spec import ToolRegistry


def step_problems(
    index: int, step: Step, tools: ToolRegistry, known_evidence: set[str]
) -> list[str]:
    """What is wrong with one step alone: unknown tool, bad arguments, wrong effect, no cite."""
    where = f"step {index + 1} ({step.tool})"
    if step.tool not in tools or not tools[step.tool].planner_visible:
        return [f"{where}: no such tool"]
    spec = tools[step.tool]
    problems: list[str] = []
    try:
        spec.parse_args(step.args)
    except ValidationError as err:
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "args"
            problems.append(f"{where}: {field}: {e['msg']}")
    if step.effect != spec.effect:
        problems.append(f"{where}: effect is {spec.effect}, the plan says {step.effect}")
    if spec.effect != "read" and not set(step.evidence) & known_evidence:
        problems.append(f"{where}: cites no retrieved evidence")
    return problems


def stated(value: Any) -> re.Pattern[str] | None:
    """How a text states ``value``: a number as written with two decimals, one, or none when it
    is whole (``49.00``, ``49.0``, ``49``, not inside ``1249`` or ``49.5``); a text of three
    characters or more as itself. None for anything else (short texts, lists, booleans).

    Example:
        >>> pattern = stated(49.0)
        >>> [bool(pattern.search(t)) for t in ("shipped 49.00 kg", "ORD-3049", "49.5", "49")]
        [True, False, False, True]
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        forms = {f"{value:.2f}", str(value)}
        if float(value).is_integer():
            forms.add(str(int(value)))
        alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        return re.compile(rf"(?<![\w.,])(?:{alternatives})(?![\w]|[.,]\d)")
    if isinstance(value, str) and len(value.strip()) >= 3:
        return re.compile(re.escape(value.strip()), re.IGNORECASE)
    return None


def edit_problems(plan: Plan, edits: Sequence[Edit]) -> list[str]:
    """What contradicts a reviewer's edits in the plan derived again from them: an edited step
    that does not carry its edited arguments, or a step (its arguments, purpose or
    postcondition) that still states a value an edit replaced."""
    problems: list[str] = []
    for edit in edits:
        where = f"step {edit.step + 1} ({edit.tool})"
        if not (0 <= edit.step < len(plan.steps)) or (
            plan.steps[edit.step].tool,
            plan.steps[edit.step].args,
        ) != (edit.tool, edit.args):
            problems.append(f"{where}: the plan does not carry the edited arguments")
            continue
        for name, before in edit.before.items():
            after = edit.args.get(name)
            pattern = stated(before)
            if (
                after == before
                or pattern is None
                or (isinstance(after, str) and pattern.search(after))
            ):
                continue
            for i, step in enumerate(plan.steps):
                texts = {"purpose": step.purpose, "postcondition": step.postcondition}
                texts |= {
                    arg: value
                    for arg, value in step.args.items()
                    if isinstance(value, str) and not (i == edit.step and arg in edit.args)
                }
                for field, text in texts.items():
                    if pattern.search(text):
                        problems.append(
                            f"step {i + 1} ({step.tool}): its {field} still states {before!r}, "
                            f"which the edit of {where} changed to {after!r}"
                        )
    return problems


def unavailable(tool: str, tools: ToolRegistry) -> str | None:
    """Why ``tool`` cannot be called now (its breaker is open and so is its fallback's), or None."""
    spec = tools[tool]
    if tools.breakers[spec.integration].state != "open":
        return None
    if spec.fallback and tools.breakers[tools[spec.fallback].integration].state != "open":
        return None
    return f"{spec.integration} is down (circuit open) and no fallback is available"


def check_plan(state: PlanCheckView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    plan = state.get("plan")
    replans = state.get("replans", 0)
    if plan is None:
        verdict = Verdict(stage="plan", ok=False, reasons=["there is no plan"])
        return {"plan_verdict": verdict, "replans": replans + 1}
    # Only the corpus is an authority for a step: outside text a tool returned is data about the
    # request (it taints the thread), never a reason to act.
    known = {e.chunk_id for e in state.get("evidence", []) if not is_outside(e)}
    # Rejections and taint as the thread guard holds them; the state's copies only add to them.
    guarded = guarded_thread(runtime)
    facts = guarded[0].facts(guarded[1]) if guarded is not None else GuardFacts()
    rejected = set(state.get("rejected", [])) | facts.rejected
    reasons: list[str] = []
    if not plan.steps and not plan.answer:
        reasons.append("the plan has neither steps nor an answer")
    if plan.answer and not plan.steps and not set(plan.evidence) & known:
        reasons.append("the answer cites no retrieved evidence")
    losers = {c.loser: c for c in state.get("conflicts", [])}
    for chunk_id in plan.evidence + [c for s in plan.steps for c in s.evidence]:
        if chunk_id in losers:
            c = losers[chunk_id]
            reasons.append(
                f"relies on {chunk_id} ({c.loser_says}), which conflicts with {c.winner} "
                f"({c.winner_says}); {c.why}"
            )
    acted: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        reasons += step_problems(i, step, ctx.tools, known)
        if step.effect != "read":
            # The same action twice in one plan is a model's repeated step, never a request.
            first = acted.setdefault(approval_digest(step.tool, step.args), i)
            if first != i:
                reasons.append(f"step {i + 1} ({step.tool}) repeats step {first + 1} exactly")
        if approval_digest(step.tool, step.args) in rejected:
            reasons.append(f"step {i + 1} ({step.tool}): a reviewer rejected this exact action")
    for i, step in enumerate(plan.steps):
        if step.tool in ctx.tools and (down := unavailable(step.tool, ctx.tools)):
            # A fact for the plan, never a reason to skip a check or an approval.
            reasons.append(f"step {i + 1} ({step.tool}): {down}")
    edits = state.get("edits") or []
    # A plan derived again from a reviewer's edit states nothing the edit contradicts.
    reasons += edit_problems(plan, edits)
    if not reasons:
        # Business rules read fresh records: the validator does not trust the planner's copy.
        # Of the request the thread guard recorded, not of entities a caller wrote.
        entities = thread_entities(
            state.get("entities", {}),
            facts.requests if guarded is not None else None,
            ctx.domain.extract_entities,
        )
        records = ctx.domain.gather_records(entities, ctx.tools.for_agent("validator"))
        reasons += ctx.domain.plan_rules(plan, records)
    verdict = Verdict(stage="plan", ok=not reasons, reasons=reasons)
    update: StateUpdate = {
        "plan_verdict": verdict,
        "replans": replans + (0 if verdict.ok else 1),
    }
    if edits and not verdict.ok:
        # The edit is refused and the plan made again without it; the approval asked next says
        # why, so the edit never disappears without a word.
        update["edits"] = []
        update["review_note"] = f"the edit by {edits[0].by} was refused: " + "; ".join(reasons)
    if verdict.ok and guarded is not None:
        # The executor runs the steps of this plan and of no other (whatever the state says).
        guarded[0].record_validated_plan(guarded[1], plan_digest(plan))
    # What still needs approval, decided here once: the router and the approval node read it.
    update.update(pending_update(plan if verdict.ok else None, state, ctx.tools, facts))
    return update


def check_result(state: ResultCheckView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None  # the executor only runs validated plans
    outcome = state["results"][-1]
    if not 0 <= outcome.step < len(plan.steps):
        # The executor refused a cursor outside the plan: there is no step to check.
        reasons = [outcome.error or f"step index {outcome.step} is not a step of the plan"]
        verdict = Verdict(stage="result", ok=False, reasons=reasons, step=outcome.step)
        return {"result_verdict": verdict}
    step = plan.steps[outcome.step]
    if not outcome.ok:
        reasons = [f"step {outcome.step + 1} ({step.tool}) failed: {outcome.error}"]
    else:
        assert outcome.output is not None
        try:
            reasons = ctx.domain.postconditions(
                step, outcome.output, ctx.tools.for_agent("validator")
            )
        except (IntegrationError, PermissionDenied) as err:
            # The step ran; whether it did what it should cannot be read now. A human checks.
            reasons = [
                f"step {outcome.step + 1} ({step.tool}) ran, but could not be verified: {err}"
            ]
    verdict = Verdict(stage="result", ok=not reasons, reasons=reasons, step=outcome.step)
    update: StateUpdate = {"result_verdict": verdict}
    if verdict.ok and outcome.output is not None:
        wait = ctx.domain.awaited_event(step, outcome.step, outcome.output)
        if wait is not None:
            update |= {"waiting": wait, "status": "awaiting_event"}
    return update
