"""The graph: intake, retrieve, plan, check, approve, execute (checked and answered), or escalate.

```
START -> intake -> retrieve -> plan -> check_plan --ok--> approve? --> execute: each step, then
                      ^                     |         (interrupt)       its result check; the
                      +--replan (bounded)---+                           answer at the plan's end
                                            +--> escalate <-- a step failed its check ---+
                                                   await_event <-- effect in flight -----+
                                                   (interrupt; an outbox event wakes it)
```

The ``execute`` node runs the plan's steps in turn, each checked by the validator right after it
(``execute_then_check``), and answers (``agents.respond``) once all passed: from the approval to
the answer is one superstep (issue 26: every superstep costs a served run a checkpoint and its
events). ``respond`` is its own node for the other ends: a refusal, a rejection, a plan with no
steps, a step whose event arrived last.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, get_origin, get_type_hints

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from agents.executor import execute
from agents.intake import intake
from agents.planner import plan
from agents.respond import escalate, respond
from agents.retriever import retrieve
from agents.validator import check_plan, check_result
from graph.approval import approve
from graph.context import KeelContext, context_of
from graph.state import (
    ApprovalView,
    AwaitView,
    EscalateView,
    ExecuteView,
    InputState,
    IntakeView,
    KeelState,
    OutputState,
    PlanCheckView,
    PlannerView,
    RespondView,
    ResultCheckView,
    RetrieverView,
    StateUpdate,
    Step,
)
from graph.waits import after_event, await_event


def after_intake(
    state: KeelState,
) -> Literal["retrieve", "respond", "approve", "await_event", "escalate", "__end__"]:
    """A new request goes on (or is refused); a chat message on a thread that already took its
    request puts a pending question back (the approval, the event wait), ends a finished run, or
    hands a run that stopped mid-way to a person (and checks again an escalated thread's actions
    that may have happened): LangGraph drops a thread's unfinished tasks when
    new input arrives, so that work would otherwise be left half-done with nobody told."""
    turn = state.get("turn")
    if turn == "cut_short":
        return "escalate"
    if turn == "follow_up":
        status = state.get("status")
        if status == "awaiting_approval":
            return "approve"
        if status == "awaiting_event":
            return "await_event"
        escalation = state.get("escalation")
        if status == "escalated" and escalation is not None and escalation.unsure:
            return "escalate"  # its account holds actions that may have happened: check again
        return "__end__"
    return "respond" if state.get("status") == "refused" else "retrieve"


def after_plan(state: KeelState) -> Literal["check_plan", "respond", "escalate"]:
    if state.get("status") == "refused":
        return "respond"
    return "escalate" if state.get("plan") is None else "check_plan"


def after_plan_check(
    state: KeelState, runtime: Runtime[KeelContext]
) -> Literal["approve", "execute", "respond", "retrieve", "escalate"]:
    ctx = context_of(runtime)
    verdict = state.get("plan_verdict")
    plan_ = state.get("plan")
    if verdict is None or not verdict.ok or plan_ is None:
        # A replan retrieves again for the validator's objections, then plans.
        return "retrieve" if state.get("replans", 0) <= ctx.settings.max_replans else "escalate"
    if not plan_.steps:
        return "respond"
    # The plan check decided what still needs approval (``graph.approval.pending_actions``,
    # with the thread guard's receipts and taint). A caller who empties it past the plan check
    # skips no approval: the executor's gate refuses a call without an unused receipt. Anything
    # but a list (a caller's write) goes to the approval node, which works it out again.
    listed = state.get("pending_actions")
    return "execute" if isinstance(listed, list) and not listed else "approve"


def after_approval(state: KeelState) -> Literal["execute", "plan", "respond", "approve"]:
    """An edit goes back to the planner, which derives the plan again with the edited arguments
    fixed (the validator then checks it and the approval asks for it again)."""
    review = state.get("review")
    if review == "rejected":
        return "respond"
    if review == "edited":
        return "plan"
    if review == "invalid":
        return "approve"
    return "execute"


def after_result(state: KeelState) -> Literal["execute", "escalate", "await_event", "__end__"]:
    """After the ``execute`` node: it answered once every step passed (``__end__``); it stopped
    at a failed check (escalate) or an effect in flight (wait for its event)."""
    verdict = state.get("result_verdict")
    plan_ = state.get("plan")
    if verdict is None or not verdict.ok or plan_ is None:
        return "escalate"
    if state.get("waiting") is not None:
        return "await_event"
    return "execute" if state.get("cursor", 0) < len(plan_.steps) else "__end__"


def kept_outside_the_checkpoint(step: Step, runtime: Any) -> bool:
    """Whether the ``execute`` node may run the next step in the same superstep after ``step``:
    after a read (a re-run reads again, harmlessly; the answer counts no reads) or an
    irreversible call (the intent ledger and the backend's idempotency key keep it once, and
    the answer finds it in the ledger). Not after a write: one the grants allow without an
    approval holds no ledger intent, so were the node cut short after it, a re-run would make it
    again and the answer would call it "not started"; its outcome is checkpointed first."""
    tools = context_of(runtime).tools
    effect = tools[step.tool].effect if step.tool in tools else step.effect
    return effect in ("read", "irreversible")


def execute_then_check(
    step: Callable[..., StateUpdate],
    check: Callable[..., StateUpdate],
    finish: Callable[..., StateUpdate],
    goes_on: Callable[[Step, Any], bool] = kept_outside_the_checkpoint,
) -> Callable[..., StateUpdate]:
    """The executor's steps (``step``), each followed by the validator's result check of it
    (``check``), and the answer (``finish``) once every step ran and passed: one node.

    The node runs the plan's steps in turn from the cursor while each passes its check and no
    step left an effect in flight; the check reads the state as its step leaves it (the outcome
    appended to ``results``, the cursor moved on), and the node's update holds every outcome and
    the last verdict. It stops at the first failed check (the router escalates), at an awaited
    event (the router waits) and after a step ``goes_on`` refuses to run past in one superstep
    (``kept_outside_the_checkpoint``: a write; the router runs the rest in the next); at the
    plan's end, ``finish`` (``agents.respond``) answers on the state as the steps leave it. So a
    run of reads and irreversible calls takes one superstep from its approval to its answer
    (issue 26: every superstep costs a served run a checkpoint and its events).

    The executor, the validator and the answer stay separate code; only the superstep is
    shared. A re-run of the node (a crash before its checkpoint) runs the steps again: each
    irreversible or approved call finds itself done in the ledger (or at the backend) and
    answers as it did, and the check and the answer only read, so they must stay free of side
    effects.

    Example:
        >>> from graph.state import Plan, Step, Verdict
        >>> def step(state, runtime):
        ...     return {"results": [state["cursor"]], "cursor": state["cursor"] + 1}
        >>> def check(state, runtime):
        ...     return {"result_verdict": Verdict(stage="result", ok=True)}
        >>> def finish(state, runtime):
        ...     return {"answer": f"ran {state['results']}"}
        >>> step_ = Step(tool="t", args={}, purpose="p", effect="read")
        >>> two = Plan(intent="i", steps=[step_, step_])
        >>> node = execute_then_check(step, check, finish, goes_on=lambda made, runtime: True)
        >>> update = node({"plan": two, "cursor": 0, "results": []}, None)
        >>> update["results"], update["cursor"], update["answer"]
        ([0, 1], 2, 'ran [0, 1]')
    """

    @functools.wraps(step)
    def node(state: Mapping[str, Any], runtime: Any) -> StateUpdate:
        plan_ = state.get("plan")
        view: dict[str, Any] = dict(state)
        total: dict[str, Any] = {}
        outcomes: list[Any] = []
        while True:
            update = step(view, runtime)
            outcomes += update.get("results", [])
            ran: ResultCheckView = {
                "plan": plan_,
                "cursor": update.get("cursor", view.get("cursor", 0)),
                "results": [*view.get("results", []), *update.get("results", [])],
            }
            checked = check(ran, runtime)
            total |= update | checked | {"results": outcomes}
            view |= update | checked
            view["results"] = ran["results"]
            verdict = checked.get("result_verdict")
            if (
                plan_ is None
                or "cursor" not in update  # nothing ran: a cursor outside the plan
                or verdict is None
                or not verdict.ok
                or checked.get("waiting") is not None
            ):
                return total  # type: ignore[return-value]
            if view["cursor"] >= len(plan_.steps):
                return total | finish(view, runtime)  # type: ignore[return-value]
            made = plan_.steps[view["cursor"] - 1]
            if not goes_on(made, runtime):
                return total  # type: ignore[return-value]

    return node


_APPENDED: frozenset[str] = frozenset(
    name
    for name, hint in get_type_hints(KeelState, include_extras=True).items()
    if get_origin(hint) is Annotated and name not in ("messages",)
)
"""Channels with a reducer that appends or merges (``results``, ``approvals``...): an empty
write adds nothing. ``messages`` is left out: its reducer also replaces by id."""
_OUTPUT: frozenset[str] = frozenset(OutputState.__annotations__)
_EMPTY: tuple[Any, ...] = (None, "", [], {})


def unchanged(channel: str, value: Any, state: Mapping[str, Any]) -> bool:
    """Whether writing ``value`` to ``channel`` would leave ``state`` as it is: an empty write
    to a channel that appends; the same value again; an empty value (None, "", 0, [], {}) on a
    channel the state does not hold yet, which its readers take as that empty value (``get``
    with a default), except on the output channels, where a caller sees the key.

    Example:
        >>> unchanged("results", [], {}), unchanged("replans", 0, {"replans": 0})
        (True, True)
        >>> unchanged("review_note", "", {}), unchanged("status", None, {})
        (True, False)
        >>> unchanged("cursor", 1, {"cursor": 0})
        False
    """
    if channel in _APPENDED:
        return value in ([], {})
    if channel in state:
        try:
            return bool(state[channel] == value)
        except Exception:  # a value that cannot be compared is written
            return False
    if channel in _OUTPUT or isinstance(value, bool):
        return False
    return value in _EMPTY or (type(value) is int and value == 0)


def changes_only(node: Callable[..., Any], view: type) -> Callable[..., Any]:
    """``node``, returning only the channels its update changes (issue 26).

    A write that changes nothing still costs the engine a write row and, for a plain channel,
    a new version of the channel's value in the next checkpoint. Only the channels the node's
    view holds can be judged (the others are written as returned), so a view lists a channel
    its node writes even where the node does not read it. The node's signature is kept
    (``functools.wraps``): LangGraph reads it to pass ``config`` and ``runtime``.
    """
    keys = frozenset(get_type_hints(view))

    @functools.wraps(node)
    def lean(state: Any, *args: Any, **kwargs: Any) -> Any:
        update = node(state, *args, **kwargs)
        if not isinstance(update, dict):
            return update
        return {
            channel: value
            for channel, value in update.items()
            if (channel not in keys and channel not in _APPENDED)
            or not unchanged(channel, value, state)
        }

    return lean


GRAPH_REVISION = 2
"""Raised by hand whenever what a node does changes in a way a recorded run's decisions show,
when its name and edges do not: 2 is ``execute`` running the plan's steps in turn, each with
its result check (issue 26); a record made before 2 shows ``execute, execute, respond``."""


@functools.cache
def graph_version() -> str:
    """The version of Keel's graph a run is recorded on (``RunStarted.graph_version``): the
    revision, and a digest of its nodes and edges. ``keel replay`` compares it with the graph it
    replays on, so a divergence that comes from the graph's change is named as such.

    Example:
        >>> graph_version().startswith(f"{GRAPH_REVISION}:")
        True
    """
    drawn = build_graph(with_context_schema=False).get_graph()
    edges = sorted((e.source, e.target, e.conditional) for e in drawn.edges)
    shape = json.dumps([sorted(drawn.nodes), edges])
    return f"{GRAPH_REVISION}:{hashlib.sha256(shape.encode()).hexdigest()[:12]}"


def build_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    *,
    with_context_schema: bool = True,
    nodes: Mapping[str, Callable[..., Any]] | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile Keel's graph.

    Args:
        checkpointer: where state persists (``stores.backends.open_checkpointer`` gives the
            configured one); None for ``langgraph dev``, which brings its own.
        with_context_schema: declare ``KeelContext`` as the runtime context. The server build
            leaves it out: its dependencies are live objects, not a JSON form.
        nodes: node functions to use instead of Keel's, by node name, with the same view of the
            state and the same edges (the evals ablate the validator this way: ``check_plan``,
            and ``execute`` made with ``execute_then_check`` and another result check).

    Example:
        >>> from graph.builder import build_graph
        >>> sorted(build_graph().get_graph().nodes)[:3]
        ['__end__', '__start__', 'approve']
    """
    builder = StateGraph(
        KeelState,
        context_schema=KeelContext if with_context_schema else None,
        input_schema=InputState,
        output_schema=OutputState,
    )
    agents: dict[str, tuple[Callable[..., Any], type]] = {
        "intake": (intake, IntakeView),
        "retrieve": (retrieve, RetrieverView),
        "plan": (plan, PlannerView),
        "check_plan": (check_plan, PlanCheckView),
        "approve": (approve, ApprovalView),
        "execute": (execute_then_check(execute, check_result, respond), ExecuteView),
        "await_event": (await_event, AwaitView),
        "respond": (respond, RespondView),
        "escalate": (escalate, EscalateView),
    }
    unknown = sorted(set(nodes or {}) - agents.keys())
    if unknown:
        raise ValueError(f"no node(s) {unknown} to replace; the nodes are {sorted(agents)}")
    for name, (node, view) in agents.items():
        builder.add_node(
            name,
            changes_only((nodes or {}).get(name, node), view),
            input_schema=view,
            # The escalation is the thread's last word: it runs once no other branch is pending
            # (one a client's ``Command(goto=...)`` started), so it never writes the outcome
            # (``status``, ``answer``) in the same superstep as ``respond`` or ``approve``, which
            # LangGraph refuses (a thread every resume then fails on). Alone, it runs next.
            defer=name == "escalate",
        )

    builder.add_edge(START, "intake")
    builder.add_conditional_edges("intake", after_intake)
    builder.add_edge("retrieve", "plan")
    builder.add_conditional_edges("plan", after_plan)
    builder.add_conditional_edges("check_plan", after_plan_check)
    builder.add_conditional_edges("approve", after_approval)
    builder.add_conditional_edges("execute", after_result)
    builder.add_conditional_edges("await_event", after_event)
    builder.add_edge("respond", END)
    builder.add_edge("escalate", END)
    return builder.compile(checkpointer=checkpointer, name="keel")
