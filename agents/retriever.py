"""Retriever: the evidence this request needs, curated, with provenance and conflicts.

What curation kept from the planner (superseded, quarantined, low-trust) is recorded in the
state with the reason, so a decision can be explained later. The low-trust evidence that does
reach the planner taints the thread: it is recorded in the thread guard as it enters (the state's
``evidence`` is a copy a caller can empty; the guard's record is append-only).
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from graph.context import KeelContext, context_of, guarded_thread
from graph.state import RetrieverView, StateUpdate


def retrieve(state: RetrieverView, runtime: Runtime[KeelContext]) -> StateUpdate:
    ctx = context_of(runtime)
    verdict = state.get("plan_verdict")
    # On a replan, ask for what the validator's objections need, not the whole history.
    query = state["request"]
    if verdict is not None and not verdict.ok:
        query = f"{query}\n" + "\n".join(verdict.reasons)
    found = ctx.corpus.search(query, ctx.settings.retrieval_k, ctx.clock().date())
    if (guarded := guarded_thread(runtime)) is not None:
        guard, thread_id = guarded
        guard.record_taint(thread_id, found.evidence)
    return {"evidence": found.evidence, "filtered": found.filtered, "conflicts": found.conflicts}
