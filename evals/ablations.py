"""Keel with one piece taken out, for the scorecard: what each piece of scaffolding is worth.

Each ablation changes only its own piece, through the seams a user has too (settings, the
runtime context, ``build_graph(nodes=...)``), never by patching Keel's code:

- ``no_curation``: the retriever hands the planner the nearest chunks as they come (superseded,
  quarantined and low-trust ones included), with nothing filtered and no conflicts reported;
- ``no_validator``: every plan passes and every result is taken as it comes (a call that failed
  still stops the run: that is the executor's own error, not a check). The unchecked plan node
  still records the plans it passes in the thread guard, as the validator does: the executor
  runs only plans passed in the thread, and the ablation measures the validator's checks, not
  that record (which stops clients, not models);
- ``no_gate``: the permission gate allows every call (approvals are still asked for and signed);
- ``no_retries``: one attempt per tool call;
- ``no_validator_no_gate``: both checks out at once. The validator checks a plan against the
  same records and rules the gate holds calls to, so either alone stops what the scenarios try;
  this row shows what the two together are worth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from langgraph.runtime import Runtime

from agents.executor import execute
from agents.respond import respond
from graph.approval import pending_update
from graph.builder import execute_then_check
from graph.context import KeelContext, context_of, guarded_thread
from graph.state import PlanCheckView, ResultCheckView, StateUpdate, Verdict
from keel.settings import Settings
from retrieval.curation import Retrieval
from retrieval.store import CorpusStore
from stores.guard import GuardFacts, plan_digest
from tools.permissions import PermissionGate
from tools.spec import CallRequest, ToolRegistry


class UncuratedStore(CorpusStore):
    """Plain similarity search: the ``k`` nearest chunks, whatever they are."""

    def search(self, text: str, k: int, today: date | None = None) -> Retrieval:
        pool = self.candidates(text, k)
        ranked = sorted(pool, key=lambda c: -c.evidence.score)[:k]
        return Retrieval(evidence=[c.evidence for c in ranked], filtered=[], conflicts=[])


class OpenGate(PermissionGate):
    """A gate that allows every call; it still signs the approvals the graph asks for."""

    @classmethod
    def around(cls, gate: PermissionGate) -> OpenGate:
        return cls(gate.manifest, gate.scopes, gate.signer, gate.clock)

    def check(self, request: CallRequest, tools: ToolRegistry) -> tuple[str, str] | None:
        return None


def unchecked_plan(state: PlanCheckView, runtime: Runtime[KeelContext]) -> StateUpdate:
    """The plan check with no checks: whatever is planned runs (approvals still asked)."""
    ctx = context_of(runtime)
    plan = state.get("plan")
    update: StateUpdate = {"plan_verdict": Verdict(stage="plan", ok=plan is not None)}
    guarded = guarded_thread(runtime)
    if plan is not None and guarded is not None:
        guarded[0].record_validated_plan(guarded[1], plan_digest(plan))
    facts = guarded[0].facts(guarded[1]) if guarded is not None else GuardFacts()
    update.update(pending_update(plan, state, ctx.tools, facts))
    return update


def unchecked_result(state: ResultCheckView, runtime: Runtime[KeelContext]) -> StateUpdate:
    """The result check with no post-conditions: only a call that failed stops the run."""
    outcome = state["results"][-1]
    reasons = [] if outcome.ok else [f"step {outcome.step + 1} failed: {outcome.error}"]
    return {"result_verdict": Verdict(stage="result", ok=outcome.ok, reasons=reasons,
                                      step=outcome.step)}  # fmt: skip


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Ablation:
    name: str
    settings: Callable[[Settings], Settings] = _same
    context: Callable[[KeelContext], KeelContext] = _same
    nodes: Mapping[str, Callable[..., Any]] | None = field(default=None)


def _uncurated(ctx: KeelContext) -> KeelContext:
    ctx.corpus = UncuratedStore(ctx.settings, ctx.corpus.embedder)
    return ctx


def _ungated(ctx: KeelContext) -> KeelContext:
    gate = ctx.tools.gate
    assert isinstance(gate, PermissionGate)
    ctx.tools.gate = OpenGate.around(gate)
    return ctx


_UNCHECKED = {
    "check_plan": unchecked_plan,
    # The result check runs inside the ``execute`` node, after the executor's step.
    "execute": execute_then_check(execute, unchecked_result, respond),
}

ABLATIONS: list[Ablation] = [
    Ablation("no_curation", context=_uncurated),
    Ablation("no_validator", nodes=_UNCHECKED),
    Ablation("no_gate", context=_ungated),
    Ablation("no_retries", settings=lambda s: s.model_copy(update={"tool_retry_attempts": 1})),
    Ablation("no_validator_no_gate", context=_ungated, nodes=_UNCHECKED),
]
