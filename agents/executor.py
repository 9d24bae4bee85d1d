"""Executor: runs one step of the validated plan per pass, so every step is its own checkpoint.

It never runs a step that is not in the plan, never runs an irreversible step without an unused,
unexpired receipt for exactly those arguments, and gives every irreversible call an idempotency
key made from business ids (thread, step, action digest) so that a re-run asks the backend for the
first result instead of acting again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from langgraph.runtime import Runtime
from pydantic import ValidationError

from graph.context import KeelContext, context_of, thread_of
from graph.state import ExecutorView, Receipt, ToolOutcome, approval_digest, tainting
from keel.errors import KeelError, PermissionDenied, StoreUnavailable
from tools.spec import AgentTools, CallResult, ThreadFacts


def idempotency_key(thread_id: str, step: int, digest: str) -> str:
    return "keel-" + hashlib.sha256(f"{thread_id}:{step}:{digest}".encode()).hexdigest()[:32]


def thread_facts(state: ExecutorView, thread_id: str, subject_keys: Collection[str]) -> ThreadFacts:
    """What the permission gate must know about this thread for the executor's calls.

    The subjects are the entities the domain says identify the thread (``Domain.subject_keys``);
    the scopes read nothing else the request said.
    """
    return ThreadFacts(
        thread_id=thread_id,
        subjects={k: v for k, v in state.get("entities", {}).items() if k in subject_keys},
        spent=frozenset(r.digest for r in state.get("results", []) if r.ok and r.digest),
        rejected=frozenset(state.get("rejected", [])),
        tainted=tuple(e.chunk_id for e in tainting(state.get("evidence", []))),
    )


def execute(state: ExecutorView, runtime: Runtime[KeelContext]) -> dict[str, Any]:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None  # routed here only with a validated plan
    index = state.get("cursor", 0)
    step = plan.steps[index]
    thread_id = thread_of(runtime)
    digest = approval_digest(step.tool, step.args)
    base: dict[str, Any] = {"step": index, "tool": step.tool, "args": step.args, "digest": digest}
    tools = ctx.tools.for_agent("executor", thread_facts(state, thread_id, ctx.domain.subject_keys))
    irreversible = step.tool in ctx.tools and ctx.tools[step.tool].effect == "irreversible"
    key = idempotency_key(thread_id, index, digest) if irreversible else None
    approval = state.get("approvals", {}).get(digest)
    try:
        if key is not None and ctx.ledger is not None:
            outcome = _exactly_once(ctx, tools, step.tool, step.args, key, approval, base)
        else:
            answer = tools.invoke(step.tool, step.args, approval=approval, idempotency_key=key)
            outcome = _answered(base, key, answer)
    except StoreUnavailable:
        # The ledger's database is down: not the tool's answer. The run stops here, unsaved, and
        # the next attempt asks the ledger and the backend whether the call happened.
        raise
    except PermissionDenied as err:
        # Never made: the gate said no. A denial is a value the graph routes on, not a crash.
        outcome = ToolOutcome(**base, ok=False, denied=True, error=f"denied: {err.reason}")
    except (KeelError, ValidationError) as err:
        outcome = ToolOutcome(**base, ok=False, error=str(err)[:500], idempotency_key=key)
    return {"results": [outcome], "cursor": index + 1}


def _exactly_once(
    ctx: KeelContext,
    tools: AgentTools,
    tool: str,
    args: dict[str, Any],
    key: str,
    approval: Receipt | None,
    base: dict[str, Any],
) -> ToolOutcome:
    """An irreversible call through the intent ledger: written before, settled after.

    A call the ledger or the backend knows as done is reported, not made again; any call that is
    made passes the gate first, and a denied one leaves no intent behind.
    """
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
        answer = tools.invoke(tool, args, approval=approval, idempotency_key=key)
    else:
        answer = tools.invoke(
            tool, args, approval=approval, idempotency_key=key,
            before=lambda: ctx.ledger.begin(key, tools.facts.thread_id or "", base["step"],
                                            tool, base["digest"]),  # type: ignore[union-attr]
        )  # fmt: skip
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
