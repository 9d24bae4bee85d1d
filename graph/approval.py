"""Human approval: one interrupt, in LangChain v1's human-in-the-loop schema, plus Keel's digests.

The node only builds the request, calls ``interrupt()`` once and turns the answer into receipts;
the irreversible calls happen in the executor, after it. The request is an ``ApprovalRequest``
and the answer an ``ApprovalAnswer`` (``graph/wire.py``: LangChain's ``HITLRequest`` and
``HITLResponse``, extended), one decision per action, in order. A decision may carry the
``digest`` it answers (``keel resume`` always sends it): one that does not match the pending
action is refused as stale.

Agent Chat UI's human-in-the-loop panel sends exactly LangChain's shape, with no digest and no
reviewer: ``{"decisions": [{"type": "approve"}]}``, ``{"type": "reject", "message": ...}``, or
``{"type": "edit", "edited_action": {"name": ..., "args": ...}}`` (one per action, in order; its
edit fields return every value as text). An approve or reject answers the actions pending now.
An edit that changes an argument is a new proposal, never an approval: the edited action is
validated again and asked for again with its own digest (text put back into the original's JSON
types), together with the other actions of that answer (which may depend on it), unless the edit
names the digest it edits (``keel resume --edit``), whose reviewer typed the exact arguments. An
edit that changes nothing approves the action shown. The reviewer is the serving engine's
authenticated user when there is one (``graph.reviewer``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graph.context import KeelContext, context_of, thread_of
from graph.reviewer import answer_refusal, reviewer_of
from graph.state import (
    ApprovalView,
    Evidence,
    Plan,
    Receipt,
    Reviewer,
    Step,
    approval_digest,
    tainting,
)
from graph.wire import (
    ApprovalRequest,
    DecisionType,
    KeelDecision,
    approval_answer_of,
    decision_of,
)
from tools.permissions import PermissionGate
from tools.spec import ToolRegistry

DECISIONS: tuple[DecisionType, ...] = ("approve", "edit", "reject")
"""What a reviewer may answer (LangChain's ``respond`` is not offered: a tool call here runs or
not, never answered in its place)."""


def pending_actions(
    plan: Plan,
    approvals: dict[str, Receipt],
    tools: ToolRegistry,
    evidence: list[Evidence] | None = None,
    spent: set[str] | None = None,
) -> list[int]:
    """Indexes of the plan's steps that still need a human's approval.

    A step needs one when the manifest says so (every irreversible tool), or when it writes and
    low-trust evidence is in the thread's context (taint). A receipt already used does not count.
    """
    tainted = bool(tainting(evidence or []))
    used = spent or set()
    out = []
    for i, step in enumerate(plan.steps):
        if step.tool not in tools or tools.gate is None:
            continue
        digest = approval_digest(step.tool, step.args)
        needed = tools.gate.needs_approval("executor", tools[step.tool], tainted)
        if needed and (digest not in approvals or digest in used):
            out.append(i)
    return out


def approval_request(
    plan: Plan, indexes: list[int], tools: ToolRegistry, evidence: list[Evidence], note: str = ""
) -> ApprovalRequest:
    """The interrupt's payload: LangChain's HITL schema, the digests, and the tainted evidence."""
    steps = [plan.steps[i] for i in indexes]
    tainted = tainting(evidence)
    return {
        "action_requests": [
            {"name": s.tool, "args": s.args, "description": _describe(s, tools, tainted, note)}
            for s in steps
        ],
        "review_configs": [
            {"action_name": s.tool, "allowed_decisions": [*DECISIONS]} for s in steps
        ],
        "digests": [approval_digest(s.tool, s.args) for s in steps],
        "steps": indexes,
        "manifest_version": tools.gate.version if tools.gate else None,
        "tainted_evidence": [
            {
                "chunk_id": e.chunk_id,
                "source": e.source,
                "trust_tier": e.trust_tier,
                "excerpt": e.text[:300],
                "flags": e.flags,
            }
            for e in tainted
        ],
    }


def _describe(step: Step, tools: ToolRegistry, tainted: list[Evidence], note: str) -> str:
    effect = tools[step.tool].effect if step.tool in tools else step.effect
    text = f"{step.purpose}. {effect.capitalize()}. After: {step.postcondition}."
    if step.evidence:
        text += f" Evidence: {', '.join(step.evidence)}."
    if tainted and effect != "read":
        sources = ", ".join(sorted({f"{e.source} ({e.trust_tier})" for e in tainted}))
        text += f" Low-trust evidence is in this thread's context: {sources}; check it first."
    return f"{text} ({note})" if note else text


def approve(
    state: ApprovalView, config: RunnableConfig, runtime: Runtime[KeelContext]
) -> dict[str, Any]:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None
    evidence = state.get("evidence", [])
    spent = {r.digest for r in state.get("results", []) if r.ok and r.digest}
    indexes = pending_actions(plan, state.get("approvals", {}), ctx.tools, evidence, spent)
    request = approval_request(plan, indexes, ctx.tools, evidence, state.get("review_note", ""))
    answer = interrupt(request)
    refused = answer_refusal(config)  # an engine's unauthenticated caller signs nothing
    if refused is not None:
        return _invalid(refused)
    claimed = answer.get("reviewer") if isinstance(answer, dict) else None
    reviewer = reviewer_of(config, claimed if isinstance(claimed, str) else None)
    return read_decisions(answer, request, plan, thread_of(runtime), ctx, reviewer)


def read_decisions(
    answer: Any,
    request: ApprovalRequest,
    plan: Plan,
    thread_id: str,
    ctx: KeelContext,
    reviewer: Reviewer | None = None,
) -> dict[str, Any]:
    """Turn a human's answer into receipts, rejections or an edited plan; refuse anything else.

    The answer is read as an ``ApprovalAnswer`` whose fields are closed: a resume payload answers
    the pending question; it cannot add steps, receipts or state. ``reviewer`` is who answered
    (``graph.reviewer.reviewer_of``); without one, the answer's own ``reviewer`` names them.
    """
    raw = answer.get("decisions") if isinstance(answer, dict) else None
    if not isinstance(raw, list) or len(raw) != len(request["digests"]):
        return _invalid(f"expected {len(request['digests'])} decision(s) in 'decisions'")
    try:
        envelope = approval_answer_of({**answer, "decisions": []})
        decisions: list[KeelDecision] = [decision_of(d) for d in raw]
    except ValueError as err:
        return _invalid(f"not an answer of {DECISIONS} decisions ({err})")
    if not isinstance(ctx.tools.gate, PermissionGate):
        return _invalid("no permission gate is loaded: approvals cannot be signed")
    signer, version = ctx.tools.gate.signer, ctx.tools.gate.version
    shown = [f"{e['chunk_id']} ({e['trust_tier']})" for e in request["tainted_evidence"]]
    reviewer = reviewer or reviewer_of(None, envelope.get("reviewer"))
    now = ctx.clock()
    expires = now + timedelta(seconds=ctx.settings.approval_ttl_s)
    receipts: dict[str, Receipt] = {}
    rejected: list[str] = []
    reasons: list[str] = []
    steps = list(plan.steps)
    edited = proposed = False
    for decision, digest, index in zip(
        decisions, request["digests"], request["steps"], strict=True
    ):
        if decision.get("digest", digest) != digest:
            return _invalid("a decision names a digest that is not pending (stale approval)")
        step = steps[index]
        kind = decision["type"]
        if decision["type"] == "reject":
            rejected.append(digest)
            reasons.append(decision.get("message") or "no reason given")
            continue
        if decision["type"] == "edit":
            action = decision["edited_action"]
            if action["name"] != step.tool:
                return _invalid("an edit may change the arguments of the action, not the tool")
            args = typed_like(step.args, action["args"])
            if approval_digest(step.tool, args) == digest:
                kind = "approve"  # nothing changed: the action approved is the one shown
            else:
                step = step.model_copy(update={"args": args})
                steps[index] = step
                digest = approval_digest(step.tool, step.args)
                edited = True
                if "digest" not in decision:
                    proposed = True  # validated again, then asked for with its own digest
                    continue
        receipts[digest] = signer.sign(
            Receipt(
                tool=step.tool,
                digest=digest,
                thread_id=thread_id,
                approved_by=reviewer.name,
                approved_at=now.isoformat(),
                expires_at=expires.isoformat(),
                edited=kind == "edit",
                approved_for="executor",  # the agent that runs plan steps; the gate checks it
                manifest_version=version,
                shown=shown,
            )
        )
    if rejected:
        return {
            "review": "rejected",
            "reviewed_by": reviewer,
            "rejected": rejected,
            "status": "refused",
            "answer": f"Rejected by {reviewer.name}: "
            + "; ".join(reasons)
            + ". Nothing irreversible was done.",
        }
    if proposed:
        # The other actions are asked for again with the edited one: what they say may depend
        # on it (a notice about the edited action), so no approval is kept from this answer.
        receipts = {}
    update: dict[str, Any] = {
        "approvals": receipts,
        "reviewed_by": reviewer,
        "review": "edited" if edited else "approved",
        "status": "running",
    }
    if edited:
        update["plan"] = plan.model_copy(update={"steps": steps})
    return update


def typed_like(original: dict[str, Any], edited: dict[str, Any]) -> dict[str, Any]:
    """Edited arguments with text put back into the JSON type the original value had.

    Agent Chat UI's edit fields return every value as text, written by JavaScript, where 49.0
    and 49 are one number (``"49"`` for ``49.0``): a value equal to the original is the original
    (so an edit that changes nothing keeps the action's digest), and a number edited in place of
    a float stays a float. A value whose text does not parse as the original's type stays text,
    for the validator to refuse.

    Example:
        >>> typed_like({"amount": 49.0, "to": "a@b.c", "ids": [1]},
        ...            {"amount": "10", "to": "x@y.z", "ids": "[1, 2]"})
        {'amount': 10.0, 'to': 'x@y.z', 'ids': [1, 2]}
        >>> typed_like({"amount": 49.0}, {"amount": "49"})
        {'amount': 49.0}
    """
    out: dict[str, Any] = {}
    for key, value in edited.items():
        before = original.get(key)
        if isinstance(value, str) and before is not None and not isinstance(before, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value
            number = isinstance(parsed, (int, float)) and not isinstance(parsed, bool)
            if parsed == before:
                value = before
            elif number and isinstance(before, float):
                value = float(parsed)
            elif type(parsed) is type(before) or (number and isinstance(before, int)):
                value = parsed
        out[key] = value
    return out


def _invalid(reason: str) -> dict[str, Any]:
    return {"review": "invalid", "review_note": f"previous answer refused: {reason}"}
