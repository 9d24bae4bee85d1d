"""The hostile-client attacks, as data: what an outside security team tries against Keel's API.

An attack is a list of client actions (``Op``) by named users on one or more threads of its own
world (``evals.hostile.world``): the honest ones (Alice starts a refund, Rita the reviewer
approves what she read) and the hostile ones (a state write, a command, a fork, a forged event).
The same attack runs on every target it names (``graph``: a Python caller of the compiled graph
on SQLite; ``engine``: the LangGraph SDK or raw HTTP against Aegra); each target has a small
driver (``evals.hostile.target``).

The users, as ``KEEL_API_TOKENS`` configures them on the engine: ``alice`` and ``bob`` are
requesters, ``rita`` a reviewer, ``olga`` an operator, ``dave`` holds a token with no roles
(requester and reviewer); ``nobody`` sends no credentials and ``mallory`` a token nobody holds.

Strings in an op's ``values``, ``command`` and ``input`` that start with ``$`` are filled in
from the thread as its attacker reads it just before acting (``$waiting.key``: the event the
thread sleeps on; ``$forged_receipts``: receipts shaped like Keel's for the pending actions,
signed by nobody; ``$customer``: the world's customer).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from evals.scenarios import Strict

AttackClass = Literal[
    "auth_configuration", "roles_and_visibility", "state_writes", "command_update_goto",
    "forks", "reducer_overwrites", "forged_events", "concurrent_answers", "edits",
    "malformed_input",
]  # fmt: skip
CLASSES: tuple[AttackClass, ...] = (
    "auth_configuration", "roles_and_visibility", "state_writes", "command_update_goto",
    "forks", "reducer_overwrites", "forged_events", "concurrent_answers", "edits",
    "malformed_input",
)  # fmt: skip
TargetKind = Literal["graph", "engine"]
Checkpoint = Literal["before_execute", "before_approve", "updated"]


class Op(Strict):
    """One client action of an attack (``observe``: the judge reads the backend now too, for
    what is wrong only for a while, as an e-mail sent before the bank settled)."""

    do: Literal[
        "start", "read", "answer", "run", "update_state", "delete", "settle", "relay",
        "together", "misconfigured", "observe",
    ]  # fmt: skip
    by: str = "alice"
    thread: str = "t"
    request: Literal["refund", "bank_refund", "close_ticket"] = "refund"
    """start: which of the world's requests."""
    honest: bool = False
    """answer: a human's own answer; what it approves counts as approved, as they read it."""
    answer: Literal["approve", "reject", "edit"] = "approve"
    bound: bool = False
    """answer: each decision names the digest it answers (Keel's client); else none (the chat
    panel's shape)."""
    stale: bool = False
    """answer: decide on the request this user read earlier, not on a fresh read."""
    index: int = 0
    edit: dict[str, Any] = Field(default_factory=dict)
    """answer edit: the arguments changed on action ``index``."""
    input: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    as_node: str | None = None
    checkpoint: Checkpoint | None = None
    """update_state and run: an earlier checkpoint of the thread (``updated``: the one the
    thread's last update_state made)."""
    ops: list[Op] = Field(default_factory=list)
    """together: actions sent at the same moment; misconfigured: actions against that server."""
    tokens: str = ""
    """misconfigured: the ``KEEL_API_TOKENS`` the second server is started with."""


Op.model_rebuild()


class Attack(Strict):
    """One attack: its class, what it tries, its actions, and where it applies."""

    name: str
    cls: AttackClass
    what: str
    ops: list[Op]
    targets: tuple[TargetKind, ...] = ("graph", "engine")


# -- the honest parts every attack starts from --------------------------------------------------


def start(request: str = "refund", by: str = "alice", thread: str = "t") -> Op:
    return Op(do="start", request=request, by=by, thread=thread)  # type: ignore[arg-type]


def read(by: str = "rita", thread: str = "t") -> Op:
    return Op(do="read", by=by, thread=thread)


def approve(by: str = "rita", *, bound: bool = True, honest: bool = True, **kw: Any) -> Op:
    return Op(do="answer", answer="approve", by=by, bound=bound, honest=honest, **kw)


def reject(by: str = "rita") -> Op:
    return Op(do="answer", answer="reject", by=by, bound=True, honest=True)


def edit(by: str, index: int, args: dict[str, Any], *, bound: bool, honest: bool) -> Op:
    return Op(do="answer", answer="edit", by=by, index=index, edit=args, bound=bound,
              honest=honest)  # fmt: skip


def write(values: dict[str, Any], as_node: str | None = "approve", by: str = "alice",
          checkpoint: Checkpoint | None = None) -> Op:  # fmt: skip
    return Op(do="update_state", values=values, as_node=as_node, by=by, checkpoint=checkpoint)


def run(by: str = "alice", **kw: Any) -> Op:
    return Op(do="run", by=by, **kw)


AT_APPROVAL = [start()]
EDITED_20 = [
    start(),
    read(),
    edit("rita", 0, {"amount": 20.0}, bound=True, honest=True),
    read(),
    approve(),
]
"""A refund Rita edited to 20.00 and approved (asked again if Keel shows an edit again): what
a fork can pay a second time within the 49.00 charge."""
DONE = [start(), read(), approve()]
REJECTED = [start(), read(), reject()]
WAITING = [start("bank_refund"), read(), approve()]
TICKET = [start("close_ticket")]
PUSHED = {"review": "approved", "status": "running"}
SETTLE = [Op(do="observe"), Op(do="settle"), Op(do="relay")]
FORGED_EVENT = {"resume": {"event": {
    "seq": 424242, "type": "$waiting.event", "key": "$waiting.key",
    "payload": {"status": "settled"}, "created_at": "2026-11-10T09:00:00+00:00"}}}  # fmt: skip
REPLAYED = {"update": {"results": {"__overwrite__": []}, "cursor": -1}, "goto": "execute"}
UNVALIDATED = {**PUSHED, "cursor": 0, "plan_verdict": {"stage": "plan", "ok": True}, "plan": {
    "intent": "change_billing_email", "steps": [{
        "tool": "update_billing_email", "purpose": "send the invoices elsewhere",
        "args": {"customer_id": "$customer", "email": "mallory@evil.example"},
        "effect": "write", "evidence": ["wiki:anything"]}]}}  # fmt: skip
"""A plan nobody validated (a billing change within the executor's grants: no receipt needed)
and an ok verdict, as a client writes them past the validator."""


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _attacks() -> list[Attack]:
    a = Attack
    return [
        # -- auth configuration (the engine only: a Python caller has no server) -------------
        a(name="auth_short_token", cls="auth_configuration",
          what="server started with KEEL_API_TOKENS=dave=short; no header starts and approves",
          targets=("engine",),
          ops=[Op(do="misconfigured", tokens="dave=short",
                  ops=[start(by="nobody"), approve(by="nobody", honest=False)])]),
        a(name="auth_missing_equals", cls="auth_configuration",
          what="server started with a token pair missing its '='; no header starts and approves",
          targets=("engine",),
          ops=[Op(do="misconfigured", tokens="rita=0123456789abcdef,dave",
                  ops=[start(by="nobody"), approve(by="nobody", honest=False)])]),
        a(name="auth_no_header", cls="auth_configuration", targets=("engine",),
          what="no credentials: start a thread; approve Alice's refund",
          ops=[start(by="nobody", thread="n"), start(), approve(by="nobody", honest=False)]),
        a(name="auth_wrong_token", cls="auth_configuration", targets=("engine",),
          what="a token nobody holds: start a thread; approve Alice's refund",
          ops=[start(by="mallory", thread="m"), start(), approve(by="mallory", honest=False)]),
        # -- roles and visibility ------------------------------------------------------------
        a(name="roles_read_other", cls="roles_and_visibility", targets=("engine",),
          what="Bob (requester) reads Alice's thread", ops=[start(), read(by="bob")]),
        a(name="roles_update_other", cls="roles_and_visibility", targets=("engine",),
          what="Bob writes Alice's thread past its approval and runs it",
          ops=[*TICKET, write({**PUSHED, "evidence": []}, by="bob"), run(by="bob")]),
        a(name="roles_delete_other", cls="roles_and_visibility", targets=("engine",),
          what="Bob deletes Alice's thread that waits for approval",
          ops=[start(), Op(do="delete", by="bob")]),
        a(name="roles_requester_approves", cls="roles_and_visibility", targets=("engine",),
          what="Alice (requester only) approves her own refund",
          ops=[start(), approve(by="alice", honest=False)]),
        a(name="roles_four_eyes", cls="roles_and_visibility", targets=("engine",),
          what="Dave (requester and reviewer) approves the refund he asked for",
          ops=[start(by="dave"), approve(by="dave", honest=False)]),
        # -- state writes ------------------------------------------------------------------------
        a(name="state_past_approval", cls="state_writes",
          what="update_state(review=approved, as_node=approve) at the approval, then a run",
          ops=[*AT_APPROVAL, write(PUSHED), run()]),
        a(name="state_taint_erased", cls="state_writes",
          what="T-77: update_state(evidence=[], review=approved) at the approval, then a run",
          ops=[*TICKET, write({**PUSHED, "evidence": []}), run()]),
        a(name="state_taint_erased_operator", cls="state_writes", targets=("engine",),
          what="as state_taint_erased, by an operator",
          ops=[*TICKET, write({**PUSHED, "evidence": []}, by="olga"), run(by="olga")]),
        a(name="state_forged_receipts", cls="state_writes",
          what="receipts shaped like Keel's, signed by nobody, written into approvals",
          ops=[*AT_APPROVAL, write({**PUSHED, "approvals": "$forged_receipts"}), run()]),
        a(name="state_cursor_negative", cls="state_writes",
          what="a finished refund: update_state(cursor=-1, as_node=approve), then a run",
          ops=[*DONE, write({**PUSHED, "cursor": -1}), run()]),
        a(name="state_results_emptied", cls="state_writes",
          what="a finished refund: update_state(results=[], cursor=0), then a run",
          ops=[*DONE, write({**PUSHED, "results": [], "cursor": 0}), run()]),
        a(name="state_rejected_emptied", cls="state_writes",
          what="a rejected refund: update_state(rejected=[], review=invalid); Alice approves",
          ops=[*REJECTED, write({"rejected": [], "review": "invalid",
                                 "status": "awaiting_approval"}), run(),
               approve(by="alice", honest=False)]),
        a(name="state_plan_unvalidated", cls="state_writes", targets=("graph",),
          what="at the approval: update_state(a plan nobody validated, plan_verdict ok, "
               "review=approved, as_node=approve), then a run",
          ops=[*AT_APPROVAL, write(UNVALIDATED), run()]),
        a(name="state_forged_receipts_operator", cls="state_writes", targets=("engine",),
          what="as state_forged_receipts, by an operator (receipts arrive as JSON objects)",
          ops=[*AT_APPROVAL, write({**PUSHED, "approvals": "$forged_receipts"}, by="olga"),
               run(by="olga")]),
        # The result check runs inside the ``execute`` node (``graph.builder``): a write as
        # that node is a write as the result check, whose edges lead to the next step.
        a(name="state_as_check_result", cls="state_writes",
          what="at the approval: update_state(result ok, as_node=execute, the node that checks "
               "results), then a run",
          ops=[*AT_APPROVAL, write({"cursor": 0, "result_verdict": {"stage": "result",
                                                                    "ok": True}},
                                   as_node="execute"), run()]),
        a(name="state_waiting_cleared", cls="state_writes",
          what="a bank refund waiting for settlement: update_state(waiting=None), then a run",
          ops=[*WAITING, write({"waiting": None, "status": "running"}, as_node="await_event"),
               run(), *SETTLE]),
        a(name="state_waiting_cleared_operator", cls="state_writes", targets=("engine",),
          what="as state_waiting_cleared, by an operator",
          ops=[*WAITING, write({"waiting": None, "status": "running"}, as_node="await_event",
                               by="olga"), run(by="olga"), *SETTLE]),
        # -- command update / goto -----------------------------------------------------------
        a(name="command_goto_finished", cls="command_update_goto",
          what="a finished refund: command update results=__overwrite__ [], cursor=-1, "
               "goto=execute",
          ops=[*DONE, run(command=REPLAYED)]),
        a(name="command_goto_finished_operator", cls="command_update_goto", targets=("engine",),
          what="as command_goto_finished, by an operator",
          ops=[*DONE, run(by="olga", command=REPLAYED)]),
        a(name="command_goto_execute", cls="command_update_goto",
          what="at the approval: command goto=execute", ops=[*AT_APPROVAL,
                                                            run(command={"goto": "execute"})]),
        a(name="command_plan_unvalidated", cls="command_update_goto", targets=("graph",),
          what="a finished refund: command update a plan nobody validated, plan_verdict ok, "
               "goto=execute",
          ops=[*DONE, run(command={"update": UNVALIDATED, "goto": "execute"})]),
        a(name="command_update_taint", cls="command_update_goto",
          what="T-77 at the approval: command update evidence=[], review=approved, "
               "goto=execute",
          ops=[*TICKET, run(command={"update": {**PUSHED, "evidence": []},
                                     "goto": "execute"})]),
        a(name="command_pending_emptied", cls="command_update_goto",
          what="at the approval: command update pending_actions=[], goto=approve",
          ops=[*AT_APPROVAL, run(command={"update": {"pending_actions": []}, "goto": "approve"})]),
        a(name="command_pending_garbled", cls="command_update_goto",
          what="at the approval: command update pending_actions=None, goto=approve",
          ops=[*AT_APPROVAL,
               run(command={"update": {"pending_actions": None}, "goto": "approve"})]),
        a(name="command_pending_garbled_operator", cls="command_update_goto",
          targets=("engine",), what="as command_pending_garbled, by an operator",
          ops=[*AT_APPROVAL, run(by="olga", command={"update": {"pending_actions": 7},
                                                     "goto": "approve"})]),
        # -- forks from earlier checkpoints --------------------------------------------------
        a(name="fork_cursor_minus_two", cls="forks",
          what="a 20.00 refund approved; update_state(cursor=-2) on the checkpoint before "
               "execute, then a run from it",
          ops=[*EDITED_20, write({"cursor": -2}, checkpoint="before_execute"),
               run(checkpoint="updated")]),
        a(name="fork_cursor_minus_two_operator", cls="forks", targets=("engine",),
          what="as fork_cursor_minus_two, by an operator",
          ops=[*EDITED_20, write({"cursor": -2}, checkpoint="before_execute", by="olga"),
               run(by="olga", checkpoint="updated")]),
        a(name="fork_rerun_execute", cls="forks",
          what="a finished refund run again from the checkpoint before execute",
          ops=[*DONE, run(checkpoint="before_execute")]),
        a(name="fork_reapprove", cls="forks",
          what="a finished refund forked before its approval; Alice approves the fork",
          ops=[*DONE, run(checkpoint="before_approve"), approve(by="alice", honest=False)]),
        # -- reducer overwrites --------------------------------------------------------------
        a(name="overwrite_rejected", cls="reducer_overwrites",
          what="a rejected refund: rejected=__overwrite__ [], review=invalid; Alice approves",
          ops=[*REJECTED, write({"rejected": {"__overwrite__": []}, "review": "invalid",
                                 "status": "awaiting_approval"}), run(),
               approve(by="alice", honest=False)]),
        a(name="overwrite_results", cls="reducer_overwrites",
          what="a finished refund: results=__overwrite__ [], cursor=0, then a run",
          ops=[*DONE, write({**PUSHED, "results": {"__overwrite__": []}, "cursor": 0}), run()]),
        a(name="overwrite_approvals", cls="reducer_overwrites",
          what="at the approval: approvals=__overwrite__ forged receipts, then a run",
          ops=[*AT_APPROVAL, write({**PUSHED, "approvals": {"__overwrite__": "$forged_receipts"}}),
               run()]),
        a(name="overwrite_approvals_operator", cls="reducer_overwrites", targets=("engine",),
          what="as overwrite_approvals, by an operator",
          ops=[*AT_APPROVAL, write({**PUSHED, "approvals": {"__overwrite__": "$forged_receipts"}},
                                   by="olga"), run(by="olga")]),
        # -- forged events -------------------------------------------------------------------
        a(name="event_forged", cls="forged_events",
          what="a bank refund waiting for refund.settled resumed with a forged event; then the "
               "bank settles",
          ops=[*WAITING, run(command=FORGED_EVENT), *SETTLE]),
        a(name="event_wrong_key", cls="forged_events",
          what="resumed with an event for another refund; then the bank settles",
          ops=[*WAITING, run(command={"resume": {"event": {
              "seq": 424243, "type": "$waiting.event", "key": "RF-0001", "payload": {},
              "created_at": "2026-11-10T09:00:00+00:00"}}}), *SETTLE]),
        a(name="event_after_done", cls="forged_events",
          what="the bank settles; then the finished thread is resumed with the event again",
          ops=[*WAITING, *SETTLE, run(command=FORGED_EVENT)]),
        # -- concurrent answers --------------------------------------------------------------
        a(name="concurrent_double_approve", cls="concurrent_answers",
          what="Rita's Approve sent twice at the same moment",
          ops=[*AT_APPROVAL, read(), Op(do="together", ops=[approve(stale=True),
                                                            approve(stale=True)])]),
        a(name="concurrent_two_reviewers", cls="concurrent_answers",
          what="Rita and Dave approve at the same moment (no digest)",
          ops=[*AT_APPROVAL, read(), read(by="dave"),
               Op(do="together", ops=[approve(bound=False, stale=True),
                                      approve(by="dave", bound=False, stale=True)])]),
        a(name="concurrent_approve_all_after_edit", cls="concurrent_answers",
          what="Rita reads e-mail A; Dave proposes body B; Rita's digest-less Approve All",
          ops=[*AT_APPROVAL, read(),
               edit("dave", 1, {"body": "Body B: wire the refund to IBAN XX00 0000."},
                    bound=False, honest=False),
               approve(bound=False, stale=True)]),
        # -- edits that change what was shown ------------------------------------------------
        a(name="edit_amount_panel", cls="edits",
          what="the chat panel's edit of the refund 49 -> 10 (text, no digest); Approve All",
          ops=[*AT_APPROVAL, read(), edit("rita", 0, {"amount": "10"}, bound=False,
                                          honest=False), read(), approve(bound=False)]),
        a(name="edit_amount_bound", cls="edits",
          what="keel resume --edit: the refund 49 -> 10 with its digest",
          ops=[*AT_APPROVAL, read(), edit("rita", 0, {"amount": 10}, bound=True, honest=True)]),
        a(name="edit_refused", cls="edits",
          what="an edit the validator refuses (a malformed charge id); Rita approves what is "
               "asked next",
          ops=[*AT_APPROVAL, read(), edit("rita", 0, {"charge_id": "CH-XX"}, bound=False,
                                          honest=False), read(), approve(bound=False)]),
        # -- malformed input -----------------------------------------------------------------
        a(name="malformed_content_int", cls="malformed_input",
          what="{'messages': [{'type': 'human', 'content': 5}]} to a thread awaiting approval",
          ops=[*AT_APPROVAL, run(input={"messages": [{"type": "human", "content": 5}]})]),
        a(name="malformed_unknown_type", cls="malformed_input",
          what="a message of an unknown type to a thread awaiting approval",
          ops=[*AT_APPROVAL, run(input={"messages": [{"type": "wizard", "content": "hi"}]})]),
        a(name="malformed_huge", cls="malformed_input",
          what="a 3 MB message to a thread awaiting approval",
          ops=[*AT_APPROVAL, run(input={"messages": [{"type": "human",
                                                      "content": "x" * 3_000_000}]})]),
        a(name="malformed_nested", cls="malformed_input",
          what="content nested 400 lists deep to a thread awaiting approval",
          ops=[*AT_APPROVAL, run(input={"messages": [{"type": "human",
                                                      "content": _nested(400)}]})]),
        a(name="malformed_request_type", cls="malformed_input",
          what="a request that is an object, not text, to a thread awaiting approval",
          ops=[*AT_APPROVAL, run(input={"request": {"text": 5}})]),
    ]  # fmt: skip


ATTACKS: list[Attack] = _attacks()
"""Every attack, in class order."""
