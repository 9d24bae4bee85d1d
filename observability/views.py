"""What ``keel trace`` and ``keel explain`` show: a run's timeline as a tree, and why it ended so.

Both read the record only; neither reruns anything.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graph.wire import decision_types
from observability.record_events import RecordEvent
from stores.flight_record import summarize


class TraceNode(BaseModel):
    """One line of the trace tree, with the lines under it."""

    model_config = ConfigDict(extra="forbid")

    label: str
    kind: str
    seq: int | None = None
    checkpoint_id: str | None = None
    children: list[TraceNode] = Field(default_factory=list)


def trace_tree(events: list[RecordEvent]) -> TraceNode:
    """Run → segments (run, resume, recover) → nodes → what each node did.

    A node's line names the checkpoint its step wrote; events outside nodes (checkpoints, the
    approval request, the end) sit at segment level.
    """
    summary = summarize(events)
    root = TraceNode(
        label=f"run {summary.run_id}  thread {summary.thread_id}  {summary.status}  "
        f"{summary.duration_ms:.1f} ms  planner {summary.planner or '-'}",
        kind="run",
    )
    written = {
        (e.segment, e.payload.step): e.payload.checkpoint_id
        for e in events
        if e.payload.kind == "checkpoint"
    }
    segment: TraceNode | None = None
    node: TraceNode | None = None
    for event in events:
        p = event.payload
        if p.kind == "run_started":
            request = f'  "{_short(p.request, 70)}"' if p.request else ""
            delivered = (p.resume_value or {}).get("event") or {}
            if delivered:
                request = f"  {delivered.get('type')} {delivered.get('key')}"
            segment = TraceNode(
                label=f"segment {event.segment}: {p.mode}{request}  (LangSmith trace {p.trace_id})",
                kind="segment",
                seq=event.seq,
            )
            root.children.append(segment)
            node = None
            continue
        if segment is None:
            continue
        if p.kind == "node_entered":
            node = TraceNode(label=f"{event.node} [step {event.step}]", kind="node", seq=event.seq)
            segment.children.append(node)
            continue
        if p.kind == "node_left":
            if node is not None:
                checkpoint = written.get((event.segment, event.step))
                node.checkpoint_id = checkpoint
                status = (
                    "interrupted (the thread waits)"
                    if p.interrupted
                    else f"failed: {p.error_kind}: {_short(p.error, 80)}"
                    if p.error
                    else "ok"
                )
                node.label += f"  {p.latency_ms:.1f} ms  {status}"
                if checkpoint:
                    node.label += f"  -> checkpoint {checkpoint}"
            node = None
            continue
        line = TraceNode(label=_describe(event), kind=p.kind, seq=event.seq)
        if p.kind == "checkpoint":
            continue  # shown on the node whose step wrote it
        (node or segment).children.append(line)
    return root


def _describe(event: RecordEvent) -> str:
    p = event.payload
    if p.kind == "tool_call":
        c = p.call
        args = _short(json.dumps(c.args, sort_keys=True), 80)
        if c.decision == "denied":
            return f"DENIED {c.tool} {args} by {c.agent}: {c.rule}: {c.reason}"
        result = "ok" if c.ok else f"{c.error_kind}: {_short(c.error, 60)}"
        extra = [f"attempt(s) {c.attempts}", f"breaker {c.breaker_state}"]
        if c.via:
            extra.append(f"via fallback {c.via}")
        if c.idempotency_key:
            extra.append(f"key {c.idempotency_key}")
        return f"tool {c.tool} {args} by {c.agent}: {result}  {c.latency_ms:.1f} ms  " + ", ".join(
            extra
        )
    if p.kind == "retrieval":
        top = ", ".join(
            f"{e['chunk_id']} ({e['trust_tier']}, {e['score']:.2f})" for e in p.evidence[:3]
        )
        return (
            f'retrieval "{_short(p.query, 50)}": {len(p.evidence)} kept [{top}], '
            f"{len(p.filtered)} filtered, {len(p.conflicts)} conflict(s)"
        )
    if p.kind == "model_call":
        result = f"error {p.error_kind}" if p.error else f"{len(p.output or '')} chars"
        return (
            f"model {p.model} ({p.role}): {result}, tokens in {p.input_tokens} out "
            f"{p.output_tokens}, {p.latency_ms:.1f} ms"
        )
    if p.kind == "plan":
        steps = (p.plan or {}).get("steps", [])
        if p.plan is None:
            return f"plan: none ({p.planner})"
        shown = ", ".join(f"{s['tool']}({s['effect']})" for s in steps) or "no steps (answer)"
        return f"plan by {p.planner}: {p.plan.get('intent')}: {shown}"
    if p.kind == "verdict":
        which = f" step {p.step}" if p.step is not None else ""
        return f"verdict {p.stage}{which}: {'ok' if p.ok else 'REJECTED'}" + (
            f": {'; '.join(p.reasons)}" if p.reasons else ""
        )
    if p.kind == "approval_requested":
        actions = ", ".join(a["name"] for a in p.request["action_requests"])
        return f"approval requested for {actions}"
    if p.kind == "event_awaited":
        return f"waiting for event {p.waiting['event']} {p.waiting['key']}"
    if p.kind == "approval_answered":
        answers = decision_types(p.answer)
        return f"approval answered by {p.answer.get('reviewer')}: {', '.join(answers)}"
    if p.kind == "escalation":
        return f"ESCALATED: {p.reason}"
    if p.kind == "clock":
        return f"clock {p.value}"
    if p.kind == "run_ended":
        tail = f" ({p.error})" if p.error else ""
        return f"ended {p.status} after {p.duration_ms:.1f} ms{tail}"
    return p.kind


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_tree(node: TraceNode, *, show_clock: bool = False) -> str:
    """The tree as indented text for a terminal."""
    lines = [node.label]

    def walk(children: list[TraceNode], prefix: str) -> None:
        shown = [c for c in children if show_clock or c.kind != "clock"]
        for i, child in enumerate(shown):
            last = i == len(shown) - 1
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{child.label}")
            walk(child.children, prefix + ("   " if last else "│  "))

    walk(node.children, "")
    return "\n".join(lines)


class Explanation(BaseModel):
    """Why a run ended as it did: what ``keel explain RUN --json`` prints."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    thread_id: str
    request: str | None
    status: str
    why: str
    answer: str = ""
    planner: str | None = None
    plan: list[dict[str, Any]] = Field(default_factory=list)
    evidence: list[dict[str, Any]] = Field(
        default_factory=list, description="the evidence the plan relied on, with provenance"
    )
    filtered: list[dict[str, Any]] = Field(default_factory=list)
    verdicts: list[dict[str, Any]] = Field(default_factory=list)
    denials: list[dict[str, Any]] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    human_decisions: list[dict[str, Any]] = Field(default_factory=list)
    escalation: dict[str, Any] | None = None
    budget: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the meter's events: each model call's reservation, settlement or refusal",
    )
    spend: dict[str, Any] | None = Field(
        default=None,
        description="what the run's model calls used (settled) and how many a budget refused",
    )


def explain(events: list[RecordEvent]) -> Explanation:
    """Assemble the account of one run from its record."""
    summary = summarize(events)
    chunks: dict[str, dict[str, Any]] = {}
    filtered: list[dict[str, Any]] = []
    plan: dict[str, Any] | None = None
    planner = None
    verdicts: list[dict[str, Any]] = []
    denials: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    humans: list[dict[str, Any]] = []
    escalation = None
    answer = ""
    budget: list[dict[str, Any]] = []
    for event in events:
        p = event.payload
        if p.kind == "budget":
            budget.append(p.model_dump(exclude={"kind"}, exclude_none=True))
        elif p.kind == "retrieval":
            chunks.update({e["chunk_id"]: e for e in p.evidence})
            filtered = [*p.filtered]
        elif p.kind == "plan":
            plan, planner = p.plan, p.planner
        elif p.kind == "verdict":
            verdicts.append(p.model_dump(exclude={"kind"}))
        elif p.kind == "tool_call":
            c = p.call
            if c.decision == "denied":
                denials.append(
                    {
                        "by": "permission gate",
                        "agent": c.agent,
                        "tool": c.tool,
                        "args": c.args,
                        "rule": c.rule,
                        "reason": c.reason,
                    }
                )
            elif not c.ok:
                failures.append(
                    {
                        "what": f"tool {c.tool}",
                        "error_kind": c.error_kind,
                        "error": c.error,
                        "attempts": c.attempts,
                        "breaker": c.breaker_state,
                    }
                )
        elif p.kind == "node_left":
            if p.error:
                failures.append(
                    {"what": f"node {event.node}", "error_kind": p.error_kind, "error": p.error}
                )
        elif p.kind == "model_call" and p.error:
            failures.append(
                {"what": f"model {p.model}", "error_kind": p.error_kind, "error": p.error}
            )
        elif p.kind == "approval_requested":
            humans.append(
                {
                    "asked": [
                        {"tool": a["name"], "args": a["args"], "digest": d}
                        for a, d in zip(
                            p.request["action_requests"], p.request["digests"], strict=True
                        )
                    ]
                }
            )
        elif p.kind == "approval_answered":
            humans.append(
                {
                    "answered_by": p.answer.get("reviewer"),
                    "decisions": [
                        {k: v for k, v in d.items() if k in ("type", "message", "edited_action")}
                        for d in p.answer.get("decisions", [])
                        if isinstance(d, dict)
                    ],
                }
            )
        elif p.kind == "escalation":
            escalation = p.model_dump(exclude={"kind"})
        elif p.kind == "run_ended":
            answer = p.answer or answer
    steps = (plan or {}).get("steps", [])
    relied = sorted(
        {c for s in steps for c in s.get("evidence", [])} | set((plan or {}).get("evidence", []))
    )
    evidence = [
        {
            k: chunks[c].get(k)
            for k in ("chunk_id", "title", "trust_tier", "owner", "effective_date", "score")
        }
        if c in chunks
        else {"chunk_id": c, "title": "(not in any recorded retrieval)"}
        for c in relied
    ]
    return Explanation(
        run_id=summary.run_id,
        thread_id=summary.thread_id,
        request=summary.request,
        status=summary.status,
        why=_why(summary.status, escalation, verdicts, denials, failures, humans, answer),
        answer=answer,
        planner=planner,
        plan=[
            {
                k: s.get(k)
                for k in ("tool", "args", "effect", "purpose", "evidence", "postcondition")
            }
            for s in steps
        ],
        evidence=evidence,
        filtered=filtered,
        verdicts=verdicts,
        denials=denials,
        failures=failures,
        human_decisions=humans,
        escalation=escalation,
        budget=budget,
        spend=_spend(budget),
    )


def _spend(budget: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's model spend from its budget events: settled usage (calls that failed count at
    their reservation), and refusals."""
    if not budget:
        return None
    used = [b for b in budget if b["action"] in ("settled", "failed")]
    tokens = sum(
        b.get("input_tokens", 0) + b.get("output_tokens", 0)
        if b["action"] == "settled"
        else b["reserved_tokens"]
        for b in used
    )
    costs = [
        b.get("cost_micros") if b["action"] == "settled" else b.get("reserved_cost_micros")
        for b in used
    ]
    return {
        "tokens": tokens,
        "calls": len(used),
        "cost_usd": None if not used or None in costs else sum(c or 0 for c in costs) / 1_000_000,
        "refused": sum(b["action"] == "refused" for b in budget),
    }


def _why(
    status: str,
    escalation: dict[str, Any] | None,
    verdicts: list[dict[str, Any]],
    denials: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    humans: list[dict[str, Any]],
    answer: str,
) -> str:
    rejected = [v for v in verdicts if not v["ok"]]
    if status == "escalated" and escalation is not None:
        cause = f"Escalated to a human because {escalation['reason']}"
        if failures:
            last = failures[-1]
            cause += f" (last failure: {last['what']}: {last['error_kind']})"
        return cause + "."
    if status == "refused":
        who = [h for h in humans if any(d.get("type") == "reject" for d in h.get("decisions", []))]
        if who:
            return f"Refused: rejected by {who[-1]['answered_by']}. {answer}"
        if denials:
            return f"Refused after a denial: {denials[-1]['reason']}."
        return answer if answer.startswith("Refused") else f"Refused: {answer}"
    if status == "awaiting_approval":
        return "Waiting for a human to approve: " + ", ".join(
            a["tool"] for a in humans[-1].get("asked", [])
        )
    if status == "done":
        approved = [h["answered_by"] for h in humans if "answered_by" in h]
        tail = f", approved by {', '.join(map(str, approved))}" if approved else ""
        extra = f"; {len(rejected)} plan objection(s) were fixed by replanning" if rejected else ""
        return f"Done: the plan passed validation{tail}{extra}."
    if status == "error":
        return "The run stopped on an error: " + (failures[-1]["error"] if failures else "unknown")
    return f"The run is {status}."


def _budget_line(b: dict[str, Any]) -> str:
    """One meter event: ``settled planner gpt-x: 900 in, 300 out, $0.000315``."""
    head = f"{b['action']} {b['role']} {b['model']}"
    if b["action"] == "refused":
        return f"{head}: {b.get('refused_by')}"
    if b["action"] == "settled":
        guessed = " (estimated)" if b.get("estimated") else ""
        cost = b.get("cost_micros")
        money = f", ${cost / 1_000_000:.6f}" if cost is not None else ""
        return f"{head}: {b.get('input_tokens')} in, {b.get('output_tokens')} out{guessed}{money}"
    cost = b.get("reserved_cost_micros")
    money = f", ${cost / 1_000_000:.6f}" if cost is not None else ""
    note = f" ({b['note']})" if b.get("note") else ""
    return f"{head}: {b['reserved_tokens']} tokens reserved{money}{note}"


def render_explanation(x: Explanation) -> str:
    """The explanation as text for a terminal."""
    out = [f"run {x.run_id}  thread {x.thread_id}", f"request: {x.request}", f"status: {x.status}"]
    out.append(f"why: {x.why}")
    if x.plan:
        out.append(f"plan (by {x.planner}):")
        for i, s in enumerate(x.plan):
            out.append(
                f"  {i}. {s['tool']} {json.dumps(s['args'], sort_keys=True)} "
                f"[{s['effect']}] {s['purpose']}; relies on {', '.join(s['evidence']) or '-'}"
            )
    elif x.planner:
        out.append(f"plan: none or an answer (by {x.planner})")
    if x.evidence:
        out.append("evidence relied on:")
        out += [
            f"  {e['chunk_id']}: {e.get('title')} ({e.get('trust_tier', '?')}, "
            f"effective {e.get('effective_date', '?')}, score {e.get('score')})"
            for e in x.evidence
        ]
    if x.filtered:
        out.append("kept from the planner:")
        out += [f"  {f['chunk_id']}: {f['reason']}" for f in x.filtered]
    if x.verdicts:
        out.append("verdicts:")
        out += [
            f"  {v['stage']}{'' if v['step'] is None else ' step ' + str(v['step'])}: "
            f"{'ok' if v['ok'] else 'rejected: ' + '; '.join(v['reasons'])}"
            for v in x.verdicts
        ]
    if x.denials:
        out.append("denials:")
        out += [
            f"  {d['tool']} by {d['by']}: {d.get('rule') or ''} {d['reason']}" for d in x.denials
        ]
    if x.failures:
        out.append("failures:")
        out += [f"  {f['what']}: {f['error_kind']}: {f['error']}" for f in x.failures]
    if x.human_decisions:
        out.append("human decisions:")
        for h in x.human_decisions:
            if "asked" in h:
                out.append("  asked: " + ", ".join(a["tool"] for a in h["asked"]))
            else:
                out.append(
                    f"  {h['answered_by']}: "
                    + ", ".join(str(d.get("type")) for d in h["decisions"])
                )
    if x.spend is not None:
        s = x.spend
        money = f", ${s['cost_usd']:.6f}" if s["cost_usd"] is not None else ""
        refused = f"; {s['refused']} refused by a budget" if s["refused"] else ""
        out.append(f"model spend: {s['tokens']} tokens in {s['calls']} calls{money}{refused}")
        out += [f"  {_budget_line(b)}" for b in x.budget]
    if x.escalation:
        out.append(f"escalation: {x.escalation['reason']}")
        out += [f"  done: {d}" for d in x.escalation["done"]]
        out += [f"  left: {d}" for d in x.escalation["left"]]
        out += [f"  may have happened: {d}" for d in x.escalation.get("unsure", [])]
    if x.answer:
        out.append(f"answer: {x.answer}")
    return "\n".join(out)
