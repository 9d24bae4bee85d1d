"""The two ends of a run: respond with the outcome, or escalate to a human with a full account.

Either end also answers in the chat: one AI message whose text is the answer a person reads (what
was done, one line per action with the facts that matter, what was not done and why, and where
to look) and whose ``additional_kwargs["keel"]`` holds the outcome's status (and, escalated, the
account), so a chat client (Studio, Agent Chat UI) shows the outcome with no Keel-specific code.
The structured results stay in the state (``results``, ``escalation``) and the JSON output.

The domain words its own actions (``Domain.describe_action``); the machinery only arranges the
lines. An action whose intent the ledger holds as pending (a run cancelled or killed while the
call was in flight) is checked at the backend, as ``keel recover`` does, and reported as done
when it happened, or as "may have happened, being checked" while nobody can tell yet: never as
"not done".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from graph.context import KeelContext, context_of, thread_of
from graph.domain import action_words
from graph.state import (
    EscalateView,
    Escalation,
    Plan,
    RespondView,
    Reviewer,
    StateUpdate,
    Step,
    ThreadStatus,
    ToolOutcome,
    approval_digest,
)

OUTCOME_MESSAGE_ID = "keel-outcome"
"""A thread ends once: its outcome message has one id, so a re-run end node replaces it."""

STOPPED_MID_WAY = "the run stopped before it finished, mid-way through its plan"
"""What is known about a run a chat message finds unfinished: not why it stopped."""


def outcome_message(
    status: ThreadStatus, answer: str, *, message_id: str = OUTCOME_MESSAGE_ID, **outcome: Any
) -> AIMessage:
    """The AI message that carries a thread's outcome (``message_id``: a later account of the
    same thread, after the chat's newest message rather than in place of the first).

    Example:
        >>> outcome_message("done", "Done.").additional_kwargs
        {'keel': {'status': 'done'}}
    """
    return AIMessage(
        answer,
        id=message_id,
        name="keel",
        additional_kwargs={"keel": {"status": status, **outcome}},
    )


@dataclass
class Account:
    """What became of a plan's actions (writes and irreversible calls), each in words."""

    done: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)
    not_done: list[str] = field(default_factory=list)


def where_to_look(thread_id: str) -> str:
    """The last line of every answer: the thread, and the command that explains it."""
    return f"Thread {thread_id}: `keel explain {thread_id}` shows why each step was taken."


def account_of(
    ctx: KeelContext,
    thread_id: str,
    plan: Plan | None,
    results: list[ToolOutcome],
    *,
    rejected: frozenset[str] = frozenset(),
    stopped: bool = False,
) -> Account:
    """Each action of the plan, done, unsure or not done (and why), in the domain's words.

    Args:
        ctx: the run's context (the domain words the actions; the ledger and the backend say
            what happened to a call the checkpoint does not hold).
        thread_id: the thread whose ledger intents count.
        plan: the thread's plan.
        results: the executor's outcomes the checkpoint holds.
        rejected: digests a reviewer rejected.
        stopped: the run stopped mid-way: a step with no outcome may have been under way.
    """
    account = Account()
    if plan is None:
        return account
    outcomes = {r.step: r for r in results}
    intents = _intents(ctx, thread_id) if stopped or any(not r.ok for r in results) else {}
    # Results a client rewrote (erased past the reducer, a cursor set outside the plan): a step
    # with no outcome may have run all the same. The ledger knows its intents; for a write it
    # never held (one within the grants), nobody can say "not done".
    rewritten = any(not 0 <= r.step < len(plan.steps) for r in results)
    for index, step in enumerate(plan.steps):
        if step.effect == "read":
            continue
        outcome = outcomes.get(index)
        if outcome is not None and outcome.ok:
            account.done.append(_done(ctx, step, outcome.output, outcome.via))
            continue
        intent = intents.get((index, step.tool))
        if intent is not None:
            found = _reconciled(ctx, step, intent)
            if found is not None:
                account.done.append(found)
            else:
                account.unsure.append(
                    f"{action_words(ctx.domain, step, None)}: may have happened, being checked "
                    "(the call was under way when the run stopped; the backend does not show it "
                    "yet)"
                )
            continue
        planned = action_words(ctx.domain, step, None)
        if outcome is None and (rewritten or any(i > index for i in outcomes)):
            account.unsure.append(
                f"{planned}: may have happened (the thread's record of its steps was rewritten, "
                "and the intent ledger holds no call for it): check the backend"
            )
            continue
        if approval_digest(step.tool, step.args) in rejected:
            account.not_done.append(f"{planned}: rejected")
        elif outcome is not None and outcome.denied:
            account.not_done.append(f"{planned}: refused by the permission gate ({outcome.error})")
        elif outcome is not None:
            account.not_done.append(f"{planned}: failed ({outcome.error})")
        else:
            account.not_done.append(f"{planned}: not started")
    return account


def _done(ctx: KeelContext, step: Step, output: dict[str, Any] | None, via: str | None) -> str:
    line = action_words(ctx.domain, step, output or {})
    if via and via.startswith("intent ledger"):
        return line  # the same call, settled from the ledger or the backend: not a detour
    return f"{line} (via {via})" if via else line


def _intents(ctx: KeelContext, thread_id: str) -> dict[tuple[int, str], dict[str, Any]]:
    """The thread's ledger intents by (step, tool); a run with no ledger has none."""
    if ctx.ledger is None:
        return {}
    return {(int(i["step"]), str(i["tool"])): i for i in ctx.ledger.for_thread(thread_id)}


def _reconciled(ctx: KeelContext, step: Step, intent: dict[str, Any]) -> str | None:
    """An intent the checkpoint does not hold: its answer when the ledger or the backend shows
    the call happened (what ``keel recover`` asks before issuing a call again), else None."""
    if ctx.ledger is not None and intent.get("status") == "done":
        settled = ctx.ledger.get(str(intent["key"]))
        if settled is not None and settled.answer is not None:
            return action_words(ctx.domain, step, settled.answer)
    if step.tool not in ctx.tools:
        return None
    found = ctx.tools.recorded(step.tool, str(intent["key"]))
    return None if found is None else action_words(ctx.domain, step, found)


def _lines(title: str, items: list[str]) -> list[str]:
    return [title, *(f"- {item}" for item in items)] if items else []


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def rejected_by(reviewer: Reviewer | None) -> str:
    """Who rejected, in words, saying plainly when the server could not tell.

    Example:
        >>> rejected_by(Reviewer(name="ann", authenticated=True))
        'Rejected by ann'
        >>> rejected_by(Reviewer(name="unknown", authenticated=False))  # doctest: +ELLIPSIS
        'Rejected by a reviewer this server cannot name (it has no users: ...)'
    """
    if reviewer is None or reviewer.name == "unknown":
        return (
            "Rejected by a reviewer this server cannot name (it has no users: no sign-in in "
            "front of it)"
        )
    if reviewer.name.startswith("unauthenticated:"):
        claimed = reviewer.name.removeprefix("unauthenticated:")
        return f"Rejected by someone the server did not sign in (they gave the name {claimed})"
    return f"Rejected by {reviewer.name}"


def _rejection_note(answer: str, reviewer: Reviewer | None) -> str:
    """The reviewer's own words from the approval node's answer (``Rejected by NAME: NOTE.
    Nothing irreversible was done.``); empty when it has another shape."""
    name = reviewer.name if reviewer is not None else "unknown"
    note = answer.removeprefix(f"Rejected by {name}: ")
    if note == answer:
        return ""
    return note.removesuffix(". Nothing irreversible was done.").strip()


def respond(state: RespondView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    thread_id = thread_of(runtime)
    plan = state.get("plan")
    results = state.get("results", [])
    if state.get("status") == "refused":
        answer = state.get("answer", "Refused.")
        if state.get("review") == "rejected":
            answer = _rejection(ctx, thread_id, state, answer)
        return {"status": "refused", "answer": answer,
                "messages": [outcome_message("refused", answer)]}  # fmt: skip
    if plan is not None and plan.answer and not plan.steps:
        answer = plan.answer
    else:
        account = account_of(ctx, thread_id, plan, results)
        lines = _lines("Done:", [_capital(d) for d in account.done]) or [
            "Done: nothing needed changing."
        ]
        lines += _lines("Not done:", [_capital(n) for n in account.not_done])
        answer = "\n".join([*lines, where_to_look(thread_id)])
    return {"status": "done", "answer": answer, "messages": [outcome_message("done", answer)]}


def _rejection(ctx: KeelContext, thread_id: str, state: RespondView, answer: str) -> str:
    reviewer = state.get("reviewed_by")
    note = _rejection_note(answer, reviewer)
    head = rejected_by(reviewer) + (f": {note}." if note else ".")
    account = account_of(
        ctx, thread_id, state.get("plan"), state.get("results", []),
        rejected=frozenset(state.get("rejected", [])),
    )  # fmt: skip
    lines = [head]
    if not account.done:
        lines.append("Nothing was done.")
    lines += _lines("Done before the review:", [_capital(d) for d in account.done])
    lines += _lines("Not done:", [_capital(n) for n in account.not_done])
    return "\n".join([*lines, where_to_look(thread_id)])


def escalate(state: EscalateView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    thread_id = thread_of(runtime)
    plan = state.get("plan")
    results = state.get("results", [])
    turn = state.get("turn")
    earlier = state.get("escalation")
    verdict = state.get("result_verdict") or state.get("plan_verdict")
    if turn == "cut_short":
        reason = STOPPED_MID_WAY
    elif turn == "follow_up" and earlier is not None:
        reason = earlier.reason  # a message on an escalated thread: the account checked again
    elif verdict is not None and not verdict.ok:
        reason = "; ".join(verdict.reasons)
    elif failed := next((r for r in results if not r.ok), None):
        # A later verdict passed (a caller's goto ran a branch beside this one): the step that
        # failed is still why the thread stopped.
        reason = f"step {failed.step + 1} ({failed.tool}) failed: {failed.error}"
    else:
        reason = "the run could not go on (no verdict says why)"
    stopped = turn in ("cut_short", "follow_up")
    account = account_of(ctx, thread_id, plan, results, stopped=stopped)
    escalation = Escalation(
        reason=reason,
        done=account.done,
        left=account.not_done,
        unsure=account.unsure,
        budget=state.get("budget_stop"),
    )
    lines = [f"Escalated to a human: {reason}."]
    lines += _lines("Done:", [_capital(d) for d in account.done])
    lines += _lines("May have happened, being checked:", [_capital(u) for u in account.unsure])
    lines += _lines("Not done:", [_capital(n) for n in account.not_done])
    if account.unsure:
        lines.append("Send any message to this thread to check again.")
    answer = "\n".join([*lines, where_to_look(thread_id)])
    # Checked again on a later message: a new message after it, not the first one rewritten.
    message_id = (
        f"{OUTCOME_MESSAGE_ID}-{hashlib.sha256(answer.encode()).hexdigest()[:12]}"
        if turn == "follow_up"
        else OUTCOME_MESSAGE_ID
    )
    message = outcome_message(
        "escalated", answer, message_id=message_id, escalation=escalation.model_dump()
    )
    return {
        "status": "escalated",
        "escalation": escalation,
        "answer": answer,
        "messages": [message],
    }
