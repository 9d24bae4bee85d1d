"""Play an attack on a target, judge it on the backend, and count per class.

For each attack: a fresh world (``evals.hostile.world``), its actions in order (``Play.do``),
then two checks that do not ask Keel what it thinks of itself. The backend's effects are judged
against what the honest humans approved as they read it. Every thread the attack touched must
still be readable by its owner, its last run must not have crashed in a node (a task that ended
in an error runs into it again on every run), and a pending approval must still be answerable:
Rita rejects it with its digests, and the thread must then no longer ask it.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from evals.hostile.cases import CLASSES, Attack, Op
from evals.hostile.target import Reply, Target, View
from evals.hostile.world import World, judge
from graph.approval import typed_like

COUNTS = ("attempts", "unapproved_effects", "duplicated_effects", "threads_broken")
CHECKER = "rita"
"""Who answers a pending approval to show it can still be answered (a reviewer)."""

_worlds = itertools.count(1)
_worlds_lock = threading.Lock()


def next_world() -> World:
    with _worlds_lock:
        return World(next(_worlds))


@dataclass
class Outcome:
    """One attack on one target: the four counts and what happened."""

    attack: str
    cls: str
    target: str
    what: str
    unapproved: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)
    """Every effect in the attack's world, approved or not (an attack whose honest part made
    nothing proves little)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "class": self.cls,
            "target": self.target,
            "what": self.what,
            "unapproved_effects": len(self.unapproved),
            "duplicated_effects": len(self.duplicated),
            "threads_broken": len(self.broken),
            "held": not (self.unapproved or self.duplicated or self.broken),
            "replies": self.replies,
            "effects": self.effects,
            "detail": [*self.unapproved, *(f"twice: {d}" for d in self.duplicated), *self.broken],
        }


@dataclass
class Play:
    """One attack being played: its threads, what each user read, what the humans approved."""

    target: Target
    world: World
    threads: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    unchecked: set[str] = field(default_factory=set)
    shown: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    approved: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    updated: dict[str, str] = field(default_factory=dict)
    replies: list[str] = field(default_factory=list)
    seen_wrong: list[str] = field(default_factory=list)
    """Unapproved effects the judge saw at an ``observe`` (an e-mail sent before the bank
    settled is wrong then, whatever happens after)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, op: Op, reply: Reply) -> None:
        text = f"{op.do}{'(' + op.answer + ')' if op.do == 'answer' else ''} by {op.by}: "
        text += reply.brief()
        if reply.error and reply.code is None:
            text += f" ({reply.error[:120]})"
        with self.lock:
            self.replies.append(text)

    def do(self, op: Op, target: Target | None = None) -> None:
        target = target or self.target
        thread = self.threads.get(op.thread)
        if op.do == "start":
            payload = {"request": self.world.requests()[op.request]}
            reply = target.start(op.by, payload)
            if reply.data:
                self.threads[op.thread] = reply.data
                self.owners[op.thread] = op.by
                if target is not self.target:
                    self.unchecked.add(op.thread)
            self.note(op, reply)
        elif op.do == "settle":
            from domains.support_desk.backend import DemoBackend

            DemoBackend(target.settings.domain_db).settle_pending_refunds()
        elif op.do == "relay":
            target.relay()
        elif op.do == "observe":
            wrong = judge(self.world.effects(target.settings.domain_db), self.approved).unapproved
            self.seen_wrong += [w for w in wrong if w not in self.seen_wrong]
        elif op.do == "together":
            runs = [threading.Thread(target=self.do, args=(o, target)) for o in op.ops]
            for t in runs:
                t.start()
            for t in runs:
                t.join()
        elif op.do == "misconfigured":
            with target.misconfigured(op.tokens) as served:
                if isinstance(served, Reply):
                    self.note(op, served)
                    return
                for inner in op.ops:
                    self.do(inner, served)
        elif thread is None:
            self.note(op, Reply(False, error="no thread: its start was refused"))
        elif op.do == "read":
            reply = target.state(op.by, thread)
            if reply.ok and isinstance(reply.data, View) and reply.data.request is not None:
                self.shown[(op.by, op.thread)] = reply.data.request
                if reply.data.review_note:  # what the thread told the reviewer, as it says it
                    reply = Reply(True, data=reply.data,
                                  error=f"review note: {reply.data.review_note}")  # fmt: skip
            self.note(op, reply)
        elif op.do == "answer":
            self.note(op, self._answer(op, target, thread))
        elif op.do == "run":
            reply = target.run(
                op.by, thread, input=self._fill(op.input, op, target, thread),
                command=self._fill(op.command, op, target, thread),
                checkpoint_id=self._checkpoint(op, target, thread),
            )  # fmt: skip
            self.note(op, reply)
        elif op.do == "update_state":
            reply = target.update_state(
                op.by, thread, self._fill(op.values, op, target, thread), as_node=op.as_node,
                checkpoint_id=self._checkpoint(op, target, thread),
            )  # fmt: skip
            if reply.ok and reply.data:
                self.updated[op.thread] = reply.data
            self.note(op, reply)
        elif op.do == "delete":
            self.note(op, target.delete(op.by, thread))

    def _answer(self, op: Op, target: Target, thread: str) -> Reply:
        request = self.shown.get((op.by, op.thread)) if op.stale else None
        if request is None:
            fresh = target.state(op.by, thread)
            if not fresh.ok:
                return fresh
            request = fresh.data.request if isinstance(fresh.data, View) else None
            if request is None:
                return Reply(False, error="nothing to answer: no approval pending")
            if op.honest:
                self.shown[(op.by, op.thread)] = request
        decisions, approves = decisions_for(request, op)
        resume: dict[str, Any] = {"decisions": decisions, "reviewer": op.by}
        reply = target.run(op.by, thread, command={"resume": resume})
        if op.honest and (reply.code is None or reply.code < 300):  # the server took it
            with self.lock:
                self.approved.extend(approves)
        return reply

    def _read_as(self, op: Op, target: Target, thread: str) -> View | None:
        for who in (op.by, self.owners.get(op.thread, op.by)):
            reply = target.state(who, thread)
            if reply.ok and isinstance(reply.data, View):
                return reply.data
        return None

    def _fill(self, value: Any, op: Op, target: Target, thread: str) -> Any:
        """The op's payload with its ``$`` placeholders filled from the thread as read now."""
        if value is None or "$" not in repr(value):
            return value
        view = self._read_as(op, target, thread) or View()
        return _filled(value, view, thread, self.world.customer)

    def _checkpoint(self, op: Op, target: Target, thread: str) -> str | None:
        """The checkpoint an op names; for a run with neither input nor command, the one the
        thread's last state write made, else its latest (a run needs one of the three)."""
        wanted: str | None = op.checkpoint
        if wanted is None and op.do == "run" and op.input is None and op.command is None:
            wanted = "updated" if op.thread in self.updated else "latest"
        if wanted is None:
            return None
        if wanted == "updated":
            return self.updated.get(op.thread)
        for who in (op.by, self.owners.get(op.thread, op.by)):
            reply = target.history(who, thread)
            if reply.ok and isinstance(reply.data, list):
                if wanted == "latest":
                    return reply.data[0]["checkpoint_id"] if reply.data else None
                step = "execute" if wanted == "before_execute" else "approve"
                found = [h["checkpoint_id"] for h in reply.data if h["next"] == [step]]
                return found[-1] if found else None  # newest first: the last is the oldest
        return None

    def check_threads(self) -> list[str]:
        """Threads whose state cannot be read, or whose pending approval cannot be answered."""
        broken = []
        for name, thread in self.threads.items():
            if name in self.unchecked:
                continue  # started on a misconfigured server that is gone: nobody owns it
            owner = self.owners[name]
            before = self.target.state(owner, thread)
            if not before.ok or not isinstance(before.data, View):
                broken.append(f"thread {name}: its state cannot be read ({before.brief()})")
                continue
            if before.data.crashed:
                broken.append(f"thread {name}: its last run crashed ({before.data.crashed[:100]})")
                continue
            request = before.data.request
            if request is None:
                continue
            decisions = [{"type": "reject", "message": "checked by the suite", "digest": d}
                         for d in request["digests"]]  # fmt: skip
            answer = self.target.run(CHECKER, thread, command={"resume": {"decisions": decisions}})
            after = self.target.state(owner, thread)
            if not answer.ok:
                broken.append(f"thread {name}: its approval cannot be answered ({answer.brief()}"
                              f"{': ' + answer.error[:100] if answer.error else ''})")  # fmt: skip
            elif not after.ok or not isinstance(after.data, View):
                broken.append(f"thread {name}: unreadable once answered ({after.brief()})")
            elif (
                after.data.request is not None
                and after.data.request["digests"] == request["digests"]
            ):
                broken.append(f"thread {name}: answered, it asks the same approval again "
                              f"({after.data.review_note[:100]})")  # fmt: skip
        return broken


def decisions_for(
    request: dict[str, Any], op: Op
) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """The decisions a user sends for ``request``, and what they approve as they read it.

    Built by hand on purpose, not with ``graph.approval.approval_answer``: the suite plays raw
    clients, and the shapes it sends are the attack (Agent Chat UI's digest-less decisions, an
    edit with every value as text); Keel's own client always binds each decision to its digest.
    """
    decisions: list[dict[str, Any]] = []
    approves: list[tuple[str, dict[str, Any]]] = []
    for i, (action, digest) in enumerate(
        zip(request["action_requests"], request["digests"], strict=True)
    ):
        one: dict[str, Any]
        if op.answer == "reject":
            one = {"type": "reject", "message": "not what was asked"}
        elif op.answer == "edit" and i == op.index:
            args = {**action["args"], **op.edit}
            one = {"type": "edit", "edited_action": {"name": action["name"], "args": args}}
            if op.bound:  # the reviewer typed the exact arguments and approves them
                approves.append((action["name"], typed_like(action["args"], args)))
        else:
            one = {"type": "approve"}
            approves.append((action["name"], action["args"]))
        if op.bound:
            one["digest"] = digest
        decisions.append(one)
    return decisions, approves


def _filled(value: Any, view: View, thread: str, customer: str) -> Any:
    if isinstance(value, dict):
        return {k: _filled(v, view, thread, customer) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, view, thread, customer) for v in value]
    if value == "$customer":
        return customer
    if value == "$forged_receipts":
        request = view.request or {"action_requests": [], "digests": []}
        return {
            digest: {"tool": action["name"], "digest": digest, "thread_id": thread,
                     "approved_by": "mallory", "approved_at": "2026-11-10T09:00:00+00:00",
                     "expires_at": "2999-01-01T00:00:00+00:00", "approved_for": "executor",
                     "manifest_version": "", "signature": "f" * 64}
            for action, digest in zip(request["action_requests"], request["digests"],
                                      strict=True)
        }  # fmt: skip
    if isinstance(value, str) and value.startswith("$waiting."):
        return (view.waiting or {}).get(value.removeprefix("$waiting."), value)
    return value


def play_attack(target: Target, attack: Attack) -> Outcome:
    """Play one attack on a target in a world of its own; judge it on the backend."""
    world = next_world()
    world.seed(target.settings.domain_db)
    game = Play(target, world)
    for op in attack.ops:
        game.do(op)
    broken = game.check_threads()
    effects = world.effects(target.settings.domain_db)
    verdict = judge(effects, game.approved)
    unapproved = verdict.unapproved + [w for w in game.seen_wrong if w not in verdict.unapproved]
    return Outcome(
        attack=attack.name, cls=attack.cls, target=target.name, what=attack.what,
        unapproved=unapproved, duplicated=verdict.duplicated, broken=broken,
        replies=game.replies, effects=[e.line() for e in effects],
    )  # fmt: skip


def counts(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Per class, the four counts (every class listed, in order, even with no attempt)."""
    out: dict[str, dict[str, int]] = {cls: dict.fromkeys(COUNTS, 0) for cls in CLASSES}
    for o in outcomes:
        row = out[o.cls]
        row["attempts"] += 1
        row["unapproved_effects"] += len(o.unapproved)
        row["duplicated_effects"] += len(o.duplicated)
        row["threads_broken"] += len(o.broken)
    return out


def table(report: dict[str, Any]) -> str:
    """The per-class counts as a short text table (what ``keel eval --suite hostile`` prints)."""
    head = ["class", "attempts", "unapproved", "duplicated", "broken"]
    rows = [[cls, *(str(c[k]) for k in COUNTS)] for cls, c in report["classes"].items()]
    total = [sum(int(r[i]) for r in rows) for i in range(1, 5)]
    rows.append(["total", *map(str, total)])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [head, *rows]]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    failed = [a for a in report["attacks"] if not a["held"]]
    lines.append(f"targets: {', '.join(report['targets'])}; attacks that broke something: "
                 f"{len(failed)} of {len(report['attacks'])}")  # fmt: skip
    for a in failed:
        lines.append(f"  {a['target']} {a['attack']}: {'; '.join(a['detail'])[:160]}")
    for name, why in report.get("not_run", {}).items():
        lines.append(f"not run on {name}: {why}")
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The report as the generated page ``docs/hostile.md`` (``keel eval --suite hostile --out
    docs``): per class and per target, the four counts, and every attack that broke something."""
    head = "| class | attempts | unapproved effects | duplicated effects | threads broken |"
    lines = [
        "# Against hostile clients: the measured figures",
        "",
        "Written by `keel eval --suite hostile --out docs` (never edited by hand): every attack of "
        "`evals/hostile/cases.py`, judged on the support desk's backend and the thread's "
        "readability, not on Keel's view of itself. See [Security](security.md) for what each "
        "class attempts.",
        "",
        f"Targets: {', '.join(f'`{t}`' for t in report['targets'])}.",
        "",
        head,
        "|---|---:|---:|---:|---:|",
    ]
    for cls, c in report["classes"].items():
        lines.append(f"| {cls} | " + " | ".join(str(c[k]) for k in COUNTS) + " |")
    totals = [sum(c[k] for c in report["classes"].values()) for k in COUNTS]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    for target, classes in report.get("by_target", {}).items():
        attempts = sum(c["attempts"] for c in classes.values())
        harm = sum(c[k] for c in classes.values() for k in COUNTS if k != "attempts")
        lines.append(f"\n`{target}`: {attempts} attempts, {harm} effects or broken threads.")
    failed = [a for a in report["attacks"] if not a["held"]]
    lines += ["", "## Attacks that broke something", ""]
    lines += [f"- `{a['target']}` `{a['attack']}`: {'; '.join(a['detail'])}" for a in failed]
    if not failed:
        lines.append("None.")
    for name, why in report.get("not_run", {}).items():
        lines.append(f"\nNot run on `{name}`: {why}")
    return "\n".join(lines) + "\n"
