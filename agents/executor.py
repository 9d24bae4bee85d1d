"""Executor: runs one step of the validated plan per pass, so every step is its own checkpoint.

It never runs a step that is not in the plan, never runs an irreversible step without an unused,
unexpired receipt for exactly those arguments, and gives every irreversible call an idempotency
key made from business ids (thread, step, action digest) so that a re-run asks the backend for the
first result instead of acting again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from langgraph.runtime import Runtime
from pydantic import ValidationError

from graph.context import KeelContext, context_of, thread_of
from graph.state import ExecutorView, Receipt, ToolOutcome, approval_digest
from keel.errors import KeelError
from tools.spec import CallResult


def idempotency_key(thread_id: str, step: int, digest: str) -> str:
    return "keel-" + hashlib.sha256(f"{thread_id}:{step}:{digest}".encode()).hexdigest()[:32]


def receipt_problem(
    receipt: Receipt | None, digest: str, thread_id: str, spent: set[str], now: datetime
) -> str | None:
    """Why a receipt does not allow this call, or None when it does."""
    if receipt is None:
        return "no approval for this exact action"
    if receipt.digest != digest or receipt.thread_id != thread_id:
        return "the approval is for a different action"
    if digest in spent:
        return "the approval was already used"
    if datetime.fromisoformat(receipt.expires_at) < now:
        return "the approval has expired"
    return None


def execute(state: ExecutorView, runtime: Runtime[KeelContext]) -> dict[str, Any]:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None  # routed here only with a validated plan
    index = state.get("cursor", 0)
    step = plan.steps[index]
    thread_id = thread_of(runtime)
    digest = approval_digest(step.tool, step.args)
    spec = ctx.tools[step.tool]
    base: dict[str, Any] = {"step": index, "tool": step.tool, "args": step.args, "digest": digest}

    key = None
    if digest in set(state.get("rejected", [])):
        denial: str | None = "a reviewer rejected this exact action"
    elif spec.effect == "irreversible":
        spent = {r.digest for r in state.get("results", []) if r.ok and r.digest}
        denial = receipt_problem(
            state.get("approvals", {}).get(digest), digest, thread_id, spent, ctx.clock()
        )
        key = idempotency_key(thread_id, index, digest)
    else:
        denial = None
    if denial is not None:
        outcome = ToolOutcome(**base, ok=False, denied=True, error=f"denied: {denial}")
        return {"results": [outcome], "cursor": index + 1}

    try:
        if key is not None and ctx.ledger is not None:
            outcome = _exactly_once(ctx, step.tool, step.args, key, thread_id, index, base)
        else:
            answer = ctx.tools.invoke(step.tool, step.args, agent="executor", idempotency_key=key)
            outcome = _answered(base, key, answer)
    except (KeelError, ValidationError) as err:
        outcome = ToolOutcome(**base, ok=False, error=str(err)[:500], idempotency_key=key)
    return {"results": [outcome], "cursor": index + 1}


def _exactly_once(
    ctx: KeelContext,
    tool: str,
    args: dict[str, Any],
    key: str,
    thread_id: str,
    index: int,
    base: dict[str, Any],
) -> ToolOutcome:
    """An irreversible call through the intent ledger: written before, settled after."""
    assert ctx.ledger is not None
    intent = ctx.ledger.get(key)
    if intent is not None and intent.status == "done" and intent.answer is not None:
        return ToolOutcome(**base, ok=True, output=intent.answer, idempotency_key=key,
                           via="intent ledger (done earlier)")  # fmt: skip
    if intent is not None:  # pending: an earlier attempt died mid-call; did it act?
        earlier = ctx.tools.recorded(tool, key)
        if earlier is not None:
            ctx.ledger.finish(key, earlier)
            return ToolOutcome(**base, ok=True, output=earlier, idempotency_key=key,
                               via="intent ledger (found at the backend)")  # fmt: skip
    else:
        ctx.ledger.begin(key, thread_id, index, tool, base["digest"])
    answer = ctx.tools.invoke(tool, args, agent="executor", idempotency_key=key)
    ctx.ledger.finish(key, answer.output)
    return _answered(base, key, answer)


def _answered(base: dict[str, Any], key: str | None, answer: CallResult) -> ToolOutcome:
    """The outcome of a call that answered; ``via`` only when a fallback did."""
    via = answer.via if answer.via != base["tool"] else None
    return ToolOutcome(
        **base,
        ok=True,
        output=answer.output,
        idempotency_key=key,
        attempts=answer.attempts,
        via=via,
    )
