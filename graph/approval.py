"""Human approval: one interrupt, in LangChain v1's human-in-the-loop schema, plus Keel's digests.

The node only builds the request, calls ``interrupt()`` once and turns the answer into receipts;
the irreversible calls happen in the executor, after it. The request is an ``ApprovalRequest``
and the answer an ``ApprovalAnswer`` (``graph/wire.py``: LangChain's ``HITLRequest`` and
``HITLResponse``, extended), one decision per action, in order. A decision may carry the
``digest`` it answers (``keel resume`` always sends it): one that does not match the pending
action is refused as stale.

Each decision is made in one place here. ``pending_actions`` says which actions still need an
approval (with ``spent_digests``, the receipts already used as the thread guard holds them); the
plan check writes its finding to the state, the router reads it, and this node asks for it and
for anything more the guard says needs one. ``approval_answer`` builds an answer from a request
and a ``Decision``, for ``KeelApp.resume`` and for the engine client (``keel.engine``) alike.

What an answer means (Agent Chat UI's digest-less shape, an edit as a new proposal that the
planner derives and the validator checks again, each request's ``request_id``, ``revision`` and
``changed_by``, and when a digest-less "Approve All" counts) is explained once, in
``docs/approvals-and-permissions.md`` ("Approvals"); the review history behind it is kept outside
the checkpoint (``stores.review_log``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field

from graph.context import KeelContext, context_of, thread_of
from graph.reviewer import UNAUTHENTICATED, answer_refusal, reviewer_of
from graph.state import (
    ApprovalView,
    Edit,
    Evidence,
    Plan,
    PlanCheckView,
    Receipt,
    Reviewer,
    StateUpdate,
    Step,
    ToolOutcome,
    approval_digest,
    tainting,
)
from graph.wire import (
    Action,
    ActionRequest,
    ApprovalAnswer,
    ApprovalRequest,
    ArgumentProvenance,
    DecisionType,
    KeelDecision,
    approval_answer_of,
    decision_of,
)
from keel.errors import BadRequest
from stores.guard import GuardFacts, with_taint
from stores.review_log import MemoryReviewLog, ReviewEntry, ReviewLog, entries_of
from tools.permissions import PermissionGate
from tools.provenance import Sources, refusal
from tools.spec import ToolRegistry

DECISIONS: tuple[DecisionType, ...] = ("approve", "edit", "reject")
"""What a reviewer may answer (LangChain's ``respond`` is not offered: a tool call here runs or
not, never answered in its place)."""


class Decision(BaseModel):
    """A human's answer to a pending approval, for every action it shows: approve them, reject
    them (with a reason), or edit one action's arguments (and approve the others).

    ``approval_answer`` turns it into the resume value; ``KeelApp.resume`` (the CLI, the demo)
    and ``keel.engine.answer_approval`` (a client of a serving engine) both send that.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["approve", "reject", "edit"]
    reason: str = ""
    edit: dict[str, Any] | None = None
    action: int | None = Field(default=None, ge=0, description="which pending action to edit")
    reviewer: str | None = Field(default=None, description="default: KEEL_REVIEWER")


def approval_answer(request: ApprovalRequest, decision: Decision) -> ApprovalAnswer:
    """The resume value that answers ``request`` with ``decision``: one LangChain HITL decision
    per pending action, in order, each naming the digest it answers (so an answer to a request
    that has changed since is refused as stale), and the reviewer when the decision names one.

    Raises:
        BadRequest: an edit with no arguments, or whose arguments name no single pending action.

    Example:
        >>> request: ApprovalRequest = {
        ...     "action_requests": [{"name": "ship_parcel", "args": {"order_id": "ORD-7"}}],
        ...     "review_configs": [{"action_name": "ship_parcel",
        ...                         "allowed_decisions": ["approve", "edit", "reject"]}],
        ...     "digests": ["sha256:ab"], "steps": [0], "manifest_version": "1",
        ...     "tainted_evidence": []}
        >>> answer = approval_answer(request, Decision(kind="reject", reason="no", reviewer="ann"))
        >>> answer["decisions"], answer["reviewer"]
        ([{'type': 'reject', 'message': 'no', 'digest': 'sha256:ab'}], 'ann')
    """
    actions = list(zip(request["action_requests"], request["digests"], strict=True))
    answer: ApprovalAnswer = {"decisions": _decisions(actions, decision)}  # type: ignore[typeddict-item]
    if decision.reviewer:
        answer["reviewer"] = decision.reviewer
    return answer


def _decisions(actions: list[tuple[ActionRequest, str]], decision: Decision) -> list[KeelDecision]:
    """One decision per pending action (``approval_answer``)."""
    if decision.kind == "approve":
        return [{"type": "approve", "digest": digest} for _, digest in actions]
    if decision.kind == "reject":
        message = decision.reason or "rejected"
        return [{"type": "reject", "message": message, "digest": digest} for _, digest in actions]
    patch = decision.edit or {}
    if not patch:
        raise BadRequest("--edit needs a JSON object of arguments to change")
    if decision.action is not None:
        if decision.action >= len(actions):
            raise BadRequest(
                f"there are {len(actions)} pending actions; --action {decision.action} is not one"
            )
        targets = [decision.action]
    else:
        targets = [i for i, (a, _) in enumerate(actions) if set(patch) <= set(a["args"])]
    if not targets:
        raise BadRequest(f"no pending action has the argument(s) {sorted(patch)}")
    if len(targets) > 1:
        raise BadRequest(
            f"{len(targets)} pending actions have {sorted(patch)}: choose one with --action N"
        )
    out: list[KeelDecision] = []
    for i, (action, digest) in enumerate(actions):
        if i != targets[0]:
            out.append({"type": "approve", "digest": digest})
            continue
        unknown = set(patch) - set(action["args"])
        if unknown:
            raise BadRequest(f"{action['name']} has no argument(s) {sorted(unknown)}")
        edited: Action = {"name": action["name"], "args": {**action["args"], **patch}}
        out.append({"type": "edit", "digest": digest, "edited_action": edited})
    return out


def spent_digests(results: Sequence[ToolOutcome], facts: GuardFacts) -> frozenset[str]:
    """The actions whose receipts are used in the thread: the thread guard's (the authority: a
    receipt is consumed there at the moment of its call) and any the state's ``results`` show
    (a working copy, which can only add: a caller who empties it frees no receipt).

    Example:
        >>> done = ToolOutcome(step=0, tool="t", args={}, ok=True, digest="sha256:b")
        >>> sorted(spent_digests([done], GuardFacts(spent=frozenset({"sha256:a"}))))
        ['sha256:a', 'sha256:b']
    """
    return facts.spent | frozenset(r.digest for r in results if r.ok and r.digest)


def thread_sources(
    request: object, records: object, evidence: Sequence[Evidence], facts: GuardFacts | None
) -> Sources:
    """What the thread's arguments may come from, for the approval screen and the gate: the
    request and the records as the thread guard holds them (``facts``; the state's ``request``
    and ``records`` may only narrow them, never add to them: any caller who can write state can
    write those), and ``evidence`` (the state's and the guard's taint). Without a guard (a graph
    run with no stores) the state's copies are all there is.

    Example:
        >>> facts = GuardFacts(requests=("Pay the bill",), records=({"iban": "GB29"},))
        >>> forged = thread_sources("Pay US13", {"iban": "US13"}, [], facts)
        >>> forged.trace({"to": "US13"})["to"].source
        'planner'
    """
    if facts is None:
        return Sources.of(request, records, evidence)
    return Sources.guarded(
        facts.requests, facts.records, evidence, state_request=request, state_records=records
    )


def thread_entities(
    entities: Mapping[str, str],
    requests: Sequence[str] | None,
    extract: Callable[[str], Mapping[str, str]],
) -> dict[str, str]:
    """What the thread is about (the entities its request names), as far as a guarantee goes:
    the scopes' subjects (``agents.executor.thread_facts``), the records the validator checks a
    plan against, and the records the planner reads (which then vouch for arguments).

    With a guard, ``requests`` are the requests it recorded at intake (``GuardFacts.requests``)
    and the entities are the last one's, read again with ``extract`` (the domain's
    ``extract_entities``, a pure function of the text): the state's ``entities`` are not read,
    since any caller who can write state can write them. Not even to narrow: a scope may read a
    missing subject as no restriction (a scope may check a second entity only when the
    request names one), so a subject taken away widens as surely as one
    added. A guard with no request recorded gives none (every scope that needs a subject
    refuses). Without a guard (``requests`` None: a graph run with no stores), the state's copy
    is all there is.

    Example:
        >>> def ids(text: str) -> dict[str, str]:
        ...     return {"account_id": w for w in text.split() if w.startswith("A-")}
        >>> thread_entities({"account_id": "A-1002"}, ["Close A-1001"], ids)
        {'account_id': 'A-1001'}
        >>> thread_entities({}, ["Close A-1001"], ids)
        {'account_id': 'A-1001'}
        >>> thread_entities({"account_id": "A-1002"}, None, ids)
        {'account_id': 'A-1002'}
    """
    if requests is None:
        return dict(entities)
    return dict(extract(requests[-1])) if requests else {}


def pending_actions(
    plan: Plan,
    approvals: Mapping[str, Receipt],
    tools: ToolRegistry,
    facts: GuardFacts,
    evidence: Sequence[Evidence] = (),
    results: Sequence[ToolOutcome] = (),
) -> list[int]:
    """Indexes of the plan's steps that still need a human's approval: the one place this is
    decided (the plan check writes it to the state as ``pending_actions``; the router and the
    approval node read it there, and the approval node checks it again here).

    A step needs one when the manifest says so (every irreversible tool), or when it writes and
    low-trust evidence is in the thread's context (taint: the state's ``evidence`` and the thread
    guard's). A receipt already used (``spent_digests``) does not count.

    Args:
        plan: the plan whose steps are asked about.
        approvals: the receipts the state holds, by digest.
        tools: the registry with its permission gate.
        facts: what the thread guard holds for the thread (``GuardFacts()`` where none is live).
        evidence: the state's evidence.
        results: the state's results.
    """
    tainted = bool(tainting(with_taint(evidence, facts.taint)))
    used = spent_digests(results, facts)
    out = []
    for i, step in enumerate(plan.steps):
        if step.tool not in tools or tools.gate is None:
            continue
        digest = approval_digest(step.tool, step.args)
        needed = tools.gate.needs_approval("executor", tools[step.tool], tainted)
        if needed and (digest not in approvals or digest in used):
            out.append(i)
    return out


def pending_update(
    plan: Plan | None, state: PlanCheckView, tools: ToolRegistry, facts: GuardFacts
) -> StateUpdate:
    """What a passed plan check writes about approvals: ``pending_actions`` (none for no plan)
    and, when one is pending, the ``awaiting_approval`` status before the interrupt, so Studio
    and raw graph users see it too. A replacement plan check (``build_graph(nodes=...)``) writes
    it the same way, or the router sends the thread past the approval to the executor's gate."""
    pending = (
        []
        if plan is None
        else pending_actions(
            plan,
            state.get("approvals", {}),
            tools,
            facts,
            state.get("evidence", []),
            state.get("results", []),
        )
    )
    update: StateUpdate = {"pending_actions": pending}
    if pending:
        update["status"] = "awaiting_approval"
    return update


def approval_request(
    plan: Plan,
    indexes: list[int],
    tools: ToolRegistry,
    evidence: list[Evidence],
    note: str = "",
    shown: ReviewEntry | None = None,
    sources: Sources | None = None,
) -> ApprovalRequest:
    """The interrupt's payload: LangChain's HITL schema, the digests, the tainted evidence, the
    request's identity (``shown``: its entry in the thread's review log) and note, and, with the
    thread's ``sources``, where each argument came from (``tools.provenance``)."""
    steps = [plan.steps[i] for i in indexes]
    tainted = tainting(evidence)
    traced = [_provenance(s, tools, sources) for s in steps]
    identity: dict[str, Any] = {}
    if shown is not None:
        identity = {
            "request_id": shown.request_id,
            "revision": shown.revision,
            "changed_by": shown.by,
        }
    return {
        "action_requests": [
            {
                "name": s.tool,
                "args": s.args,
                "description": _describe(s, tools, tainted, note, traced[n]),
            }
            for n, s in enumerate(steps)
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
        **identity,  # type: ignore[typeddict-item]
        "review_note": note,
        **(
            {
                "provenance": traced,
                "flagged": [_flagged(t, s, tainted) for t, s in zip(traced, steps, strict=True)],
            }
            if sources is not None
            else {}
        ),
    }


def _provenance(
    step: Step, tools: ToolRegistry, sources: Sources | None
) -> dict[str, ArgumentProvenance]:
    """Each argument's source, and whether the manifest refuses it from outside text."""
    if sources is None:
        return {}
    gate = tools.gate
    policy = gate.manifest.agents.get("executor") if isinstance(gate, PermissionGate) else None
    grant = policy.tools.get(step.tool) if policy is not None else None
    protected = grant.refuse_outside if grant is not None else []
    refused = refusal(step.tool, step.args, protected, sources) if sources.tainted else None
    out: dict[str, ArgumentProvenance] = {}
    for name, found in sources.trace(step.args).items():
        entry: ArgumentProvenance = {"source": found.source}
        if found.where:
            entry["where"] = found.where
        if refused is not None and name in protected and found.source not in ("request", "record"):
            entry["refused"] = True
        out[name] = entry
    return out


def _flagged(
    traced: dict[str, ArgumentProvenance], step: Step, tainted: list[Evidence]
) -> list[str]:
    """What the screen warns about in one action: its arguments that rest on outside text, and
    the evidence it cites that the injection screen flagged (not every flagged text in the
    thread: an action neither built from nor citing it does not rest on it)."""
    screened = {e.chunk_id for e in tainted if e.flags}
    cited = [f"evidence:{c}" for c in step.evidence if c in screened]
    return [name for name, found in traced.items() if found["source"] == "outside"] + cited


def request_identity(thread_id: str, revision: int, digests: Sequence[str]) -> str:
    """The identity of the request showing these actions at this revision of the thread.

    Example:
        >>> a = request_identity("t-1", 0, ["sha256:a"])
        >>> a == request_identity("t-1", 0, ["sha256:a"]), a == request_identity("t-1", 1, ["x"])
        (True, False)
    """
    canonical = json.dumps([thread_id, revision, list(digests)], separators=(",", ":"))
    return "req:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def shown_entry(
    history: Sequence[ReviewEntry], thread_id: str, key: str, digests: Sequence[str]
) -> ReviewEntry:
    """The review log's entry for a request raised by the approval task ``key``: the one its
    first run wrote (a resumed node runs again), else a new one whose revision and ``changed_by``
    follow from the last request shown and the edits proposed since (module docstring)."""
    for entry in history:
        if entry.kind == "shown" and entry.key == key:
            return entry
    shown = [i for i, e in enumerate(history) if e.kind == "shown"]
    revision, by = 0, ""
    if shown:
        last = history[shown[-1]]
        if list(last.digests) == list(digests):
            revision, by = last.revision, last.by
        else:
            proposers = [e.by for e in history[shown[-1] + 1 :] if e.kind == "proposed"]
            revision, by = last.revision + 1, proposers[-1] if proposers else ""
    return ReviewEntry(
        "shown",
        key,
        by=by,
        digests=tuple(digests),
        revision=revision,
        request_id=request_identity(thread_id, revision, digests),
    )


def blind_refusal(
    history: Sequence[ReviewEntry], request: ApprovalRequest, reviewer: Reviewer
) -> str | None:
    """Why a digest-less answer by ``reviewer`` may not approve ``request``, or None when it may
    (the rule is the module docstring's)."""
    revision = request.get("revision", 0)
    if revision == 0:
        return None
    changed_by = request.get("changed_by", "")
    engine_anonymous = reviewer.name.startswith(UNAUTHENTICATED)
    if changed_by and changed_by == reviewer.name and not engine_anonymous:
        return None
    if any(
        e.kind == "acknowledged" and e.by == reviewer.name and e.revision == revision
        for e in history
    ):
        return None
    what = (
        f"{changed_by} proposed an edit"
        if changed_by
        else "they were planned again or rewritten since they were first shown"
    )
    return f"the actions changed since you saw them: {what}; review them again"


_PROCESS_LOG = MemoryReviewLog()
"""The review log of a context that has none (a caller that built its own context)."""


def review_log_of(ctx: KeelContext) -> ReviewLog:
    """Where the thread's approval history is kept (``stores.review_log``)."""
    return ctx.reviews if ctx.reviews is not None else _PROCESS_LOG


def _describe(
    step: Step,
    tools: ToolRegistry,
    tainted: list[Evidence],
    note: str,
    traced: dict[str, ArgumentProvenance] | None = None,
) -> str:
    effect = tools[step.tool].effect if step.tool in tools else step.effect
    text = f"{step.purpose}. {effect.capitalize()}. After: {step.postcondition}."
    if step.evidence:
        text += f" Evidence: {', '.join(step.evidence)}."
    if traced:
        text += " " + _sources_in_words(traced)
    if tainted and effect != "read":
        sources = ", ".join(sorted({f"{e.source} ({e.trust_tier})" for e in tainted}))
        text += f" Low-trust evidence is in this thread's context: {sources}; check it first."
    return f"{text} ({note})" if note else text


_WORDS = {
    "request": "from the request",
    "record": "from a trusted record",
    "planner": "written by the planner",
}


def _sources_in_words(traced: dict[str, ArgumentProvenance]) -> str:
    """What a chat panel's description says about the arguments, warnings first."""
    warnings = [
        f"WARNING: {name} comes from outside text ({found.get('where', 'unknown')}), not from "
        "the request"
        + ("; the manifest refuses it, so the call will be denied" if found.get("refused") else "")
        + "."
        for name, found in traced.items()
        if found["source"] == "outside"
    ]
    refused = [
        f"{name} is not in the request or a trusted record; the manifest refuses it."
        for name, found in traced.items()
        if found["source"] != "outside" and found.get("refused")
    ]
    rest = [
        f"{name} {_WORDS[found['source']]}"
        for name, found in traced.items()
        if found["source"] != "outside"
    ]
    listed = [f"Arguments: {', '.join(rest)}."] if rest else []
    return " ".join([*warnings, *refused, *listed])


def approve(
    state: ApprovalView, config: RunnableConfig, runtime: Runtime[KeelContext]
) -> StateUpdate:
    ctx = context_of(runtime)
    plan = state["plan"]
    assert plan is not None
    thread_id = thread_of(runtime)
    # Receipts used, rejections and taint as the thread guard holds them, not as the state says;
    # the approval history with them (one read, issue 26).
    guarded = ctx.guard.facts(thread_id, reviews=True) if ctx.guard is not None else GuardFacts()
    evidence = with_taint(state.get("evidence", []), guarded.taint)
    # The plan check's finding (``pending_actions``) routed the thread here; what is asked is
    # worked out again against the guard, so a caller who wrote that channel (an empty list, a
    # spent action, ``None``) neither removes an action from the request nor adds a paid one.
    indexes = pending_actions(
        plan, state.get("approvals", {}), ctx.tools, guarded, evidence, state.get("results", [])
    )
    if not indexes:
        return {}  # nothing needs a human: on to the executor, whose gate checks every call
    held = [plan.steps[i] for i in indexes if _digest(plan.steps[i]) in guarded.rejected]
    if held:
        return _rejection_holds(held)
    log = review_log_of(ctx)
    digests = [approval_digest(plan.steps[i].tool, plan.steps[i].args) for i in indexes]
    # One entry per approval task: a resumed node runs again and finds the one it wrote.
    info = runtime.execution_info
    key = info.task_id if info is not None else ""
    history = entries_of(log, thread_id, store=ctx.guard, read=guarded.reviews)
    shown = shown_entry(history, thread_id, key, digests)
    if shown not in history:  # else the node was resumed and its first run wrote it
        log.add(thread_id, shown)
        history = [*history, shown]
    note = state.get("review_note", "")
    sources = thread_sources(
        state.get("request", ""),
        state.get("records", {}),
        evidence,
        guarded if ctx.guard is not None else None,
    )
    request = approval_request(plan, indexes, ctx.tools, evidence, note, shown, sources)
    answer = interrupt(request)
    refused = answer_refusal(config)  # an engine's unauthenticated caller signs nothing
    if refused is not None:
        return _invalid(refused)
    claimed = answer.get("reviewer") if isinstance(answer, dict) else None
    reviewer = reviewer_of(config, claimed if isinstance(claimed, str) else None)
    return read_decisions(
        answer, request, plan, thread_id, ctx, reviewer, log=log, facts=guarded, history=history
    )


def _digest(step: Step) -> str:
    return approval_digest(step.tool, step.args)


def _rejection_holds(steps: list[Step]) -> StateUpdate:
    """A rejected action is never asked for again in its thread, whatever the state says."""
    actions = "; ".join(f"{s.tool} {s.args}" for s in steps)
    return {
        "review": "rejected",
        "status": "refused",
        "answer": f"A reviewer rejected {actions} earlier in this thread, and a rejection holds. "
        "Nothing irreversible was done.",
    }


def read_decisions(
    answer: Any,
    request: ApprovalRequest,
    plan: Plan,
    thread_id: str,
    ctx: KeelContext,
    reviewer: Reviewer | None = None,
    log: ReviewLog | None = None,
    facts: GuardFacts | None = None,
    history: Sequence[ReviewEntry] | None = None,
) -> StateUpdate:
    """Turn a human's answer into receipts, rejections or edits; refuse anything else.

    The answer is read as an ``ApprovalAnswer`` whose fields are closed: a resume payload answers
    the pending question; it cannot add steps, receipts or state. ``reviewer`` is who answered
    (``graph.reviewer.reviewer_of``); without one, the answer's own ``reviewer`` names them.
    ``log`` is the thread's review history (``review_log_of``): a digest-less approval is
    judged by it, and an edit proposal or a refusal of a changed request is written to it.
    ``facts`` is what the thread guard held when the answer arrived (read again when None);
    ``history`` the log's entries read with them, with the request's own (read when None).
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
    named = envelope.get("request_id")
    if named is not None and named != request.get("request_id"):
        return _invalid("the answer names a request that is not pending (stale approval)")
    exact = named is not None or all("digest" in d for d in decisions)
    gate = ctx.tools.gate
    signer, version = gate.signer, gate.version
    if facts is None and ctx.guard is not None:
        facts = ctx.guard.facts(thread_id)
    held = facts.rejected if facts is not None else frozenset()
    requester = facts.requester if facts is not None else None
    shown = [f"{e['chunk_id']} ({e['trust_tier']})" for e in request["tainted_evidence"]]
    reviewer = reviewer or reviewer_of(None, envelope.get("reviewer"))
    now = ctx.clock()
    expires = now + timedelta(seconds=ctx.settings.approval_ttl_s)
    receipts: dict[str, Receipt] = {}
    rejected: list[str] = []
    reasons: list[str] = []
    edits: list[Edit] = []
    proposed = False
    for decision, digest, index in zip(
        decisions, request["digests"], request["steps"], strict=True
    ):
        if decision.get("digest", digest) != digest:
            return _invalid("a decision names a digest that is not pending (stale approval)")
        step = plan.steps[index]
        pending = digest
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
                edits.append(
                    Edit(step=index, tool=step.tool, before=step.args, args=args, by=reviewer.name)
                )
                digest = approval_digest(step.tool, args)
                if "digest" not in decision:
                    proposed = True  # derived again, validated again, then asked for again
                    continue
        if digest in held or pending in held:
            return _invalid(f"{step.tool} was rejected earlier in this thread; a rejection holds")
        if requester is not None and reviewer.name == requester and gate.four_eyes(step.tool):
            return _invalid(
                f"{step.tool} needs the approval of someone other than its requester "
                f"({requester}): four eyes"
            )
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
        if ctx.guard is not None:
            for digest in rejected:
                ctx.guard.record_rejection(thread_id, digest, by=reviewer.name)
        return {
            "review": "rejected",
            "reviewed_by": reviewer,
            "rejected": rejected,
            "review_note": "",
            "edits": [],
            "status": "refused",
            "answer": f"Rejected by {reviewer.name}: "
            + "; ".join(reasons)
            + ". Nothing irreversible was done.",
        }
    if history is None:
        history = log.entries(thread_id) if log is not None else []
    request_id = request.get("request_id", "")
    if proposed:
        # The other actions are asked for again with the edited one: what they say may depend
        # on it (a notice about the edited action), so no approval is kept from this answer.
        receipts = {}
        if log is not None:
            log.add(
                thread_id,
                ReviewEntry("proposed", f"{request_id}:{reviewer.name}", by=reviewer.name),
            )
    elif not exact and (refused := blind_refusal(history, request, reviewer)):
        if log is not None:
            # Refused and asked again: what this reviewer answers next is the changed request.
            key = f"{request_id}:{reviewer.name}"
            revision = request.get("revision", 0)
            log.add(
                thread_id, ReviewEntry("acknowledged", key, by=reviewer.name, revision=revision)
            )
        return _invalid(refused)
    update: StateUpdate = {
        "approvals": receipts,
        "reviewed_by": reviewer,
        "review": "edited" if edits else "approved",
        "review_note": _proposal_note(edits) if edits else "",
        "edits": edits,
        "status": "running",
    }
    if edits:
        steps = list(plan.steps)
        for edit in edits:
            steps[edit.step] = steps[edit.step].model_copy(update={"args": edit.args})
        update["plan"] = plan.model_copy(update={"steps": steps})
    return update


def _proposal_note(edits: list[Edit]) -> str:
    """What the request asked after an edit says about it."""
    changes = "; ".join(
        f"step {e.step + 1} ({e.tool}) "
        + ", ".join(
            f"{name} {e.before.get(name)!r} -> {value!r}"
            for name, value in e.args.items()
            if e.before.get(name) != value
        )
        for e in edits
    )
    return f"{edits[0].by} edited {changes}; the plan was derived again from the edit"


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


def _invalid(reason: str) -> StateUpdate:
    return {"review": "invalid", "review_note": f"previous answer refused: {reason}"}
