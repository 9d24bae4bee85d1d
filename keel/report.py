"""How a thread reads on a terminal: evidence, plan, verdict, approval, tool calls, answer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from keel.app import Decision, Outcome

if TYPE_CHECKING:
    from observability.replay import ReplayReport


def _planner_line(planner: str) -> str:
    if planner.startswith("model:"):
        return f"planner: {planner} (a language model)"
    if planner == "runbook":
        return "planner: runbook (the offline runbook planner; no model is configured)"
    if planner.startswith("runbook"):
        return f"planner: {planner} (the offline runbook planner ran because the model failed)"
    return f"planner: {planner}"


def print_outcome(outcome: Outcome, *, show_details: bool = True) -> None:
    if outcome.status == "stalled":
        print(f"thread {outcome.thread_id}: stalled at {outcome.stalled_at}")
        print(
            "  its worker stopped mid-run (crashed or killed); continue it with: "
            f"keel recover {outcome.thread_id}"
        )
    elif outcome.status == "running":
        print(f"thread {outcome.thread_id}: running at {outcome.stalled_at} ({outcome.owner})")
    else:
        print(f"thread {outcome.thread_id}: {outcome.status}")
    print(f"  {_planner_line(outcome.planner)}")
    if show_details and outcome.run_id:
        print(
            f"  recorded as run {outcome.run_id} (keel trace / explain / replay {outcome.run_id})"
        )
    if show_details and outcome.evidence:
        print("  evidence:")
        for e in outcome.evidence[:4]:
            print(f"    - [{e.trust_tier}] {e.title} ({e.chunk_id}, score {e.score:.2f})")
    if show_details and outcome.filtered:
        print(f"  kept from the planner: {len(outcome.filtered)} chunk(s)")
        for f in outcome.filtered[:4]:
            print(f"    - {f.chunk_id}: {f.reason}")
    if show_details and outcome.conflicts:
        print("  conflicts:")
        for c in outcome.conflicts:
            print(
                f"    - {c.topic}: {c.winner_says} ({c.winner}) over {c.loser_says} "
                f"({c.loser}): {c.why}"
            )
    if show_details and outcome.plan is not None:
        print(f"  plan ({outcome.plan.intent}):")
        for i, step in enumerate(outcome.plan.steps):
            print(f"    {i + 1}. {step.tool} {json.dumps(step.args)} [{step.effect}]")
        if not outcome.plan.steps:
            print("    (no tool calls: an answer from the corpus)")
    if show_details and outcome.plan_verdict is not None:
        verdict = outcome.plan_verdict
        print(
            "  validator: "
            + ("plan ok" if verdict.ok else "plan refused: " + "; ".join(verdict.reasons))
        )
    if outcome.pending:
        print("  awaiting approval:")
        for i, action in enumerate(outcome.pending):
            print(f"    [{i}] {action.name} {json.dumps(action.args)}")
            print(f"        {action.description}")
            print(f"        digest {action.digest}")
        print(
            f"  answer with: keel resume {outcome.thread_id} --approve | --reject --reason ... "
            "| --edit JSON"
        )
    if outcome.waiting is not None:
        w = outcome.waiting
        print(f"  waiting for event {w.event} {w.key}: {w.why}")
        print("  nothing polls it: the event's arrival wakes it (`keel events` relays the outbox)")
    for r in outcome.results:
        mark = "ok" if r.ok else ("DENIED" if r.denied else "FAILED")
        shown = r.output if r.ok else r.error
        print(f"  tool {r.tool} -> {mark}: {json.dumps(shown)}")
    if outcome.answer:
        print("  answer: " + outcome.answer.replace("\n", "\n    "))


def print_history(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        nxt = ",".join(row["next"]) or "-"
        print(f"{row['checkpoint_id']}  step {row['step']!s:>3}  next: {nxt}  {row['created_at']}")


def print_runs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no recorded runs")
        return
    print(f"{'run':<36}  {'status':<17} {'ms':>8} {'tools':>5} {'denied':>6} {'approvals':>9} "
          f"{'escal.':>6}  request")  # fmt: skip
    for r in rows:
        request = (r["request"] or "")[:50]
        print(
            f"{r['run_id']:<36}  {r['status']:<17} {r['duration_ms']:>8.0f} {r['tool_calls']:>5} "
            f"{r['denials']:>6} {r['approvals']:>9} {r['escalations']:>6}  {request}"
        )


def print_stalled(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no stalled threads")
        return
    print(f"{'thread':<36}  {'stalled at':<14} {'saved writes':<14} checkpoint")
    for r in rows:
        saved = ",".join(r["saved_writes"]) or "-"
        print(
            f"{r['thread_id']:<36}  {r['stalled_at'] or '-':<14} {saved:<14} {r['checkpoint_id']}"
        )
    print(f"{len(rows)} stalled; continue them with: keel recover --all")


def print_replay(verdict: ReplayReport) -> None:
    print(f"replay of run {verdict.run_id} (thread {verdict.thread_id})")
    if verdict.policy_file:
        print(f"  under the permission manifest {verdict.policy_file}")
    print(
        f"  served from the record: {verdict.served_tool_calls} tool call(s), "
        f"{verdict.served_model_calls} model call(s); nothing live was called"
    )
    print(f"  recorded: {verdict.recorded_decisions} decisions, ended {verdict.recorded_status}")
    print(f"  replayed: {verdict.replayed_decisions} decisions, ended {verdict.replayed_status}")
    if verdict.same:
        print("  same: every decision came out the same")
    else:
        print("  same: NO")
        d = verdict.first_divergence
        if d is not None:
            print(f"  first divergence at decision {d.index}:")
            for side, point in (("recorded", d.recorded), ("replayed", d.replayed)):
                shown = (
                    f"{point.kind} in {point.node or '-'} (segment {point.segment}): "
                    f"{json.dumps(point.detail, sort_keys=True)}"
                    if point is not None
                    else "(nothing)"
                )
                print(f"    {side}: {shown}")
    if verdict.recorded_graph is None:
        print(
            "  recorded before Keel kept its graph's version (replayed on graph "
            f"{verdict.replay_graph}): a divergence may be the graph's change, not the run's"
        )
    elif verdict.recorded_graph != verdict.replay_graph:
        print(
            f"  the graph changed: recorded on graph {verdict.recorded_graph}, replayed on graph "
            f"{verdict.replay_graph}; a divergence may be the graph's change, not the run's"
        )
    if verdict.redacted_events:
        print(
            f"  {verdict.redacted_events} recorded event(s) hold [redacted] placeholders (sensitive"
            " fields and patterns): replay served them so, and a decision that depended on a"
            " redacted value cannot come out the same"
        )
    if verdict.misses:
        print(f"  not in the record: {', '.join(verdict.misses)}")
    if verdict.changed_prompts:
        print(
            f"  prompts that differ from the recorded ones: model call(s) {verdict.changed_prompts}"
        )
    if verdict.error:
        print(f"  replay stopped: {verdict.error}")


def ask(outcome: Outcome, reviewer: str) -> Decision | None:
    """Ask on the terminal; None leaves the thread waiting."""
    reply = input("approve all [a], reject [r], edit [e], leave waiting [enter]? ").strip().lower()
    if reply == "a":
        return Decision(kind="approve", reviewer=reviewer)
    if reply == "r":
        return Decision(kind="reject", reason=input("reason: ").strip(), reviewer=reviewer)
    if reply == "e":
        patch = json.loads(input('arguments to change as JSON, e.g. {"amount": 10}: '))
        return Decision(kind="edit", edit=patch, reviewer=reviewer)
    return None
