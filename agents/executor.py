"""Executor: runs one step of the validated plan per pass, so every step is its own checkpoint.

It never runs a step that is not in the plan (a cursor a caller set outside the plan is refused,
never used as an index), never runs an irreversible step without an unused, unexpired receipt for
exactly those arguments, and gives every irreversible call an idempotency key made from business
ids (the thread and the action's digest, never a position a client can set) so that a re-run asks
the ledger and the backend for the first result instead of acting again. A write a human approved
goes through the ledger too (its backend takes no key): a receipt works once, and a re-run of the
same approved write finds it done.

What "unused" and "rejected" mean is read from the thread guard (``stores.guard``), not from the
checkpoint: a receipt is consumed there at the moment of its call, once. So is what "validated"
means: a step runs only when its plan is one the validator passed in the thread (the guard holds
the digest of each), never because ``plan_verdict`` in the state says ok. A receipt is what the
state holds only when it is a ``Receipt``: anything else written there (a client's dict) is
read as the receipt it claims to be, which its signature then refuses, or as none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from langgraph.runtime import Runtime
from pydantic import ValidationError

from graph.approval import spent_digests, thread_entities, thread_sources
from graph.context import KeelContext, attempt_of, context_of, thread_of
from graph.domain import Domain
from graph.state import (
    ExecutorView,
    Plan,
    Receipt,
    StateUpdate,
    ToolOutcome,
    approval_digest,
    tainting,
)
from keel.errors import KeelError, PermissionDenied, StoreUnavailable
from stores.guard import GuardFacts, plan_digest, with_taint
from tools.spec import AgentTools, CallResult, ThreadFacts, ToolRegistry


def idempotency_key(thread_id: str, digest: str) -> str:
    """The key an irreversible call carries to the ledger and the backend: one per action in a
    thread, whatever step index, fork or re-run it is reached by.

    Example:
        >>> idempotency_key("t-1", "sha256:a") == idempotency_key("t-1", "sha256:a")
        True
        >>> idempotency_key("t-1", "sha256:a") == idempotency_key("t-2", "sha256:a")
        False
    """
    return "keel-" + hashlib.sha256(f"{thread_id}:{digest}".encode()).hexdigest()[:32]


def thread_facts(
    state: ExecutorView,
    thread_id: str,
    domain: Domain,
    guarded: GuardFacts | None = None,
) -> ThreadFacts:
    """What the permission gate must know about this thread for the executor's calls.

    The subjects are the entities the domain says identify the thread (``Domain.subject_keys``)
    in the request the thread guard recorded at intake (``graph.approval.thread_entities``; the
    state's ``entities`` only where no guard is live); the scopes read nothing else the request
    said. Receipts used, rejections, taint and the
    requester come from the thread guard (``guarded``); the state's copies only add to them. So
    does the low-trust text the arguments' provenance is traced against (``tools.provenance``);
    what vouches for an argument (the request, the records) is the guard's too, which the state's
    copies only narrow (``graph.approval.thread_sources``).
    """
    sources = thread_sources(
        state.get("request", ""),
        state.get("records", {}),
        with_taint(state.get("evidence", []), guarded.taint if guarded is not None else ()),
        guarded,
    )
    entities = thread_entities(
        state.get("entities", {}),
        guarded.requests if guarded is not None else None,
        domain.extract_entities,
    )
    guarded = guarded or GuardFacts()
    state_taint = [e.chunk_id for e in tainting(state.get("evidence", []))]
    return ThreadFacts(
        thread_id=thread_id,
        subjects={k: v for k, v in entities.items() if k in domain.subject_keys},
        spent=spent_digests(state.get("results", []), guarded),
        rejected=guarded.rejected | frozenset(state.get("rejected", [])),
        tainted=tuple(dict.fromkeys([*(e.chunk_id for e in guarded.taint), *state_taint])),
        requester=guarded.requester,
        sources=sources,
    )


def execute(state: ExecutorView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None  # routed here only with a validated plan
    index = state.get("cursor", 0)
    if not isinstance(index, int) or not 0 <= index < len(plan.steps):
        # The cursor is a channel any caller can write: never an index it chose.
        return {"results": [_out_of_plan(index, len(plan.steps))]}
    step = plan.steps[index]
    thread_id = thread_of(runtime)
    attempt = attempt_of(runtime)
    digest = approval_digest(step.tool, step.args)
    base: dict[str, Any] = {"step": index, "tool": step.tool, "args": step.args, "digest": digest}
    # The guard's facts and whether the validator passed this plan: one read.
    guarded = (
        ctx.guard.facts(thread_id, attempt=attempt, plan=plan_digest(plan))
        if ctx.guard is not None
        else None
    )
    if guarded is not None and not guarded.plan_validated:
        # A plan and an ok verdict written into the state past the validator: nothing of it runs.
        denied = ctx.tools.refuse(
            "executor", step.tool, step.args, ThreadFacts(thread_id=thread_id), "validated-plan",
            "the step is not in a plan the validator passed in this thread (the plan was written "
            "into the state past it); nothing was run",
        )  # fmt: skip
        outcome = ToolOutcome(**base, ok=False, denied=True, error=f"denied: {denied.reason}")
        return {"results": [outcome], "cursor": index + 1}
    held = [w for w in guarded.waiting if w[2] != digest] if guarded is not None else []
    if held:
        # An effect in flight holds the thread until its event wakes it (``graph.waits``),
        # whatever ``waiting`` in the state says: only the action that started it may run again.
        awaited, subject, _ = held[0]
        why = f"refused: the thread waits for {awaited} {subject}; nothing else runs before it"
        return {"results": [ToolOutcome(**base, ok=False, denied=True, error=why)]}
    facts = thread_facts(state, thread_id, ctx.domain, guarded)
    skipped = _unrun_approved_step(ctx.tools, plan, index, guarded, bool(facts.tainted))
    if skipped is not None:
        # A step the plan put first never ran (refused out of turn, a cursor written past it):
        # what follows it would say it happened (a notice about an action never made).
        earlier = plan.steps[skipped]
        why = (
            f"refused: step {skipped + 1} ({earlier.tool}) of this plan was never made (its "
            "approval was not used), so nothing after it runs"
        )
        return {"results": [ToolOutcome(**base, ok=False, denied=True, error=why)]}
    tools = ctx.tools.for_agent("executor", facts)
    effect = ctx.tools[step.tool].effect if step.tool in ctx.tools else step.effect
    irreversible = effect == "irreversible"
    approval = receipt_of(state.get("approvals", {}).get(digest))
    # An irreversible call, and a write a human approved (a receipt works once), go through the
    # ledger: a re-run of the same action in this thread finds it done there. Only an
    # irreversible call's backend is given the key (a write's backend takes none).
    ledgered = irreversible or (approval is not None and effect != "read")
    key = idempotency_key(thread_id, digest) if irreversible else None
    consume = _consumer(ctx, thread_id, digest, attempt, approval)
    settle = _settler(ctx, thread_id, digest) if approval is not None else None
    try:
        if ledgered and ctx.ledger is not None:
            outcome = _exactly_once(
                ctx, tools, step.tool, step.args, idempotency_key(thread_id, digest), approval,
                base, consume, keyed=irreversible, settle=settle,
            )  # fmt: skip
        else:
            answer = tools.invoke(
                step.tool, step.args, approval=approval, idempotency_key=key, before=consume
            )
            outcome = _answered(base, key, answer)
            if settle is not None:
                settle()
    except StoreUnavailable:
        # The ledger's database is down: not the tool's answer. The run stops here, unsaved, and
        # the next attempt asks the ledger and the backend whether the call happened.
        raise
    except PermissionDenied as err:
        # Never made: the gate said no. A denial is a value the graph routes on, not a crash.
        outcome = ToolOutcome(**base, ok=False, denied=True, error=f"denied: {err.reason}")
    except (KeelError, ValidationError) as err:
        outcome = ToolOutcome(**base, ok=False, error=str(err)[:500], idempotency_key=key)
    if outcome.ok and outcome.output is not None and ctx.guard is not None:
        wait = ctx.domain.awaited_event(step, index, outcome.output)
        if wait is not None:  # recorded where no state write can clear it
            ctx.guard.record_wait(thread_id, wait, digest=digest)
    return {"results": [outcome], "cursor": index + 1}


def _unrun_approved_step(
    tools: ToolRegistry, plan: Plan, index: int, guarded: GuardFacts | None, tainted: bool
) -> int | None:
    """The first step before ``index`` that needs a human's approval (irreversible, the manifest
    says so, or a write in a tainted thread) and whose receipt the thread guard never saw used,
    or None. Such a step was never made: the steps after it must not run as though it had been
    (a notice about an action that never happened). Read from the guard (no guard:
    nothing to check here). Taint as it stands now: were low-trust text to enter only after a
    write ran without a receipt, the steps after it are refused and the thread escalates, the
    side that fails closed."""
    if guarded is None or tools.gate is None:
        return None
    for j, earlier in enumerate(plan.steps[:index]):
        if earlier.tool not in tools:
            continue
        if not tools.gate.needs_approval("executor", tools[earlier.tool], tainted):
            continue
        if approval_digest(earlier.tool, earlier.args) not in guarded.spent:
            return j
    return None


def receipt_of(stored: object) -> Receipt | None:
    """The receipt the state holds for an action: a ``Receipt``, or what a dict written there
    claims to be (its signature, checked by the gate, then refuses a forged one); None for
    anything that is not one (treated as no receipt, never an ``AttributeError`` on every run).

    Example:
        >>> receipt_of({"not": "a receipt"}) is None
        True
        >>> receipt_of({"tool": "t", "digest": "d", "thread_id": "t-1", "approved_by": "m",
        ...             "approved_at": "x", "expires_at": "y", "signature": "f"}).signature
        'f'
    """
    if stored is None or isinstance(stored, Receipt):
        return stored
    try:
        return Receipt.model_validate(stored)
    except ValidationError:
        return None


def _out_of_plan(index: object, steps: int) -> ToolOutcome:
    """The outcome of a pass whose cursor points at no step: nothing ran, the thread escalates."""
    return ToolOutcome(
        step=index if isinstance(index, int) else -1,
        tool="(none)",
        args={},
        ok=False,
        denied=True,
        error=f"refused: the step cursor {index!r} is not a step of the plan "
        f"(0 to {steps - 1}); nothing was run",
    )


def _consumer(
    ctx: KeelContext, thread_id: str, digest: str, attempt: str, approval: Receipt | None
) -> Callable[[], None] | None:
    """What runs once the gate allowed a call and before it is made: the receipt it uses is
    consumed in the thread guard, atomically (a receipt works once, whatever the state says).

    Raises (when called):
        PermissionDenied: another attempt consumed the receipt since the gate looked.
    """
    if approval is None or ctx.guard is None:
        return None
    guard = ctx.guard

    def consume() -> None:
        if not guard.consume_receipt(
            thread_id, digest, attempt=attempt, approved_by=approval.approved_by
        ):
            raise PermissionDenied(
                "the approval was already used (a receipt works once)", rule="approval"
            )

    return consume


def _settler(ctx: KeelContext, thread_id: str, digest: str) -> Callable[[], None] | None:
    """What marks a consumed receipt settled once its call answered (no guard: nothing)."""
    guard = ctx.guard
    if guard is None:
        return None
    return lambda: guard.settle_receipt(thread_id, digest)


def _exactly_once(
    ctx: KeelContext,
    tools: AgentTools,
    tool: str,
    args: dict[str, Any],
    key: str,
    approval: Receipt | None,
    base: dict[str, Any],
    consume: Callable[[], None] | None = None,
    *,
    keyed: bool = True,
    settle: Callable[[], None] | None = None,
) -> ToolOutcome:
    """A call through the intent ledger: written before, settled after.

    A call the ledger or the backend knows as done is reported, not made again; any call that is
    made passes the gate first and consumes its receipt (``consume``), and a denied one leaves no
    intent behind. ``keyed``: the backend takes the key (an irreversible call) and can be asked
    whether it acted; an approved write's backend cannot, so a pending write is made again (a
    write is at-least-once, as any node is). ``settle`` marks the receipt used settled, in the
    transaction that marks the intent done (one commit less per step, issue 26).
    """
    assert ctx.ledger is not None
    ledger = ctx.ledger
    sent = key if keyed else None

    def finish(answer: Any) -> None:
        with ledger.atomic():  # the intent done and its receipt settled, or neither
            ledger.finish(key, answer)
            if settle is not None:
                settle()

    intent = ledger.get(key)
    if intent is not None and intent.status == "done" and intent.answer is not None:
        if settle is not None:
            settle()
        return ToolOutcome(**base, ok=True, output=intent.answer, idempotency_key=sent,
                           via="intent ledger (done earlier)")  # fmt: skip
    if intent is not None:  # pending: an earlier attempt died mid-call; did it act?
        earlier = ctx.tools.recorded(tool, key) if keyed else None
        if earlier is not None:
            finish(earlier)
            return ToolOutcome(**base, ok=True, output=earlier, idempotency_key=key,
                               via="intent ledger (found at the backend)")  # fmt: skip
        answer = tools.invoke(tool, args, approval=approval, idempotency_key=sent, before=consume)
    else:
        thread_id = tools.facts.thread_id or ""

        def before() -> None:
            with ledger.atomic():  # the receipt consumed and the intent written, or neither
                if consume is not None:
                    consume()
                ledger.begin(key, thread_id, base["step"], tool, base["digest"])

        answer = tools.invoke(tool, args, approval=approval, idempotency_key=sent, before=before)
    finish(answer.output)
    return _answered(base, sent, answer)


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
