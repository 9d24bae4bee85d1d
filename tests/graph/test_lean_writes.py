"""A node writes only the channels it changes (issue 26): a write that changes nothing still
costs the engine a write row and a new version of the channel in the next checkpoint."""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver

from evals.state_probe import summary, thread_writes
from graph.builder import build_graph, changes_only
from graph.state import ApprovalView
from keel.app import Decision, KeelApp
from tests.conftest import REFUND_REQUEST


def test_a_refund_thread_writes_no_channel_it_does_not_change(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST, thread_id="t-lean")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"
    saver = app.graph.checkpointer
    assert isinstance(saver, BaseCheckpointSaver)
    tasks = thread_writes(build_graph(), saver, "t-lean")  # as the engine bench reads it
    noops = [(t.node, w.channel) for t in tasks for w in t.writes if not w.changed]
    assert noops == []
    assert summary(tasks)["writes"] > 0
    written = {t.node: {w.channel for w in t.writes} for t in tasks}
    assert {"replans", "cursor"}.isdisjoint(written["intake"])  # a fresh thread holds neither
    assert {"edits", "review_note"}.isdisjoint(written["approve"])


def test_a_node_keeps_writes_outside_its_view_and_the_ones_that_change() -> None:
    def node(state: ApprovalView) -> dict[str, object]:
        return {"review": "approved", "review_note": "", "edits": [], "answer": "", "rejected": []}

    lean = changes_only(node, ApprovalView)
    assert lean({"review": "invalid", "review_note": ""}) == {"review": "approved", "answer": ""}
    assert lean({"review": "approved", "edits": ["x"]}) == {"edits": [], "answer": ""}


# Measured on the refund thread (``python -m evals.state_probe``, issue 26): 12 tasks (11 node
# runs and the resume's input), 26 channel writes, about 9.4 kB; then 27 once the plan check wrote
# the pending actions it decided (``pending_actions``, one place per decision, issue 22). Each
# superstep costs a served run a checkpoint, its writes and the engine's events carrying the state.
# Then 10 tasks and 11 of LangGraph's own writes (from 13) once the result check ran inside
# ``execute`` (two supersteps fewer; the same 27 channel writes and 9.4 kB, now in fewer tasks).
REFUND_TASKS, REFUND_WRITES, REFUND_BYTES, REFUND_BOOKKEEPING = 10, 27, 10_500, 11


def test_a_refund_thread_takes_no_more_supersteps_and_writes_than_measured(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST, thread_id="t-measured")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"
    saver = app.graph.checkpointer
    assert isinstance(saver, BaseCheckpointSaver)
    found = summary(thread_writes(build_graph(), saver, "t-measured"))
    assert found["tasks"] <= REFUND_TASKS, found
    assert found["writes"] <= REFUND_WRITES, found
    assert found["bytes"] <= REFUND_BYTES, found
    assert found["bookkeeping_writes"] <= REFUND_BOOKKEEPING, found


def test_the_checkpoint_after_the_steps_holds_every_result_its_verdict_and_the_answer(
    app: KeelApp,
) -> None:
    """The steps, their result checks and the answer run in the executor's superstep: no
    checkpoint holds a step's result without the validator's verdict on the last one, and the
    one that holds both steps' results holds the answer too (a crash before it re-runs them
    all, each call finding itself done in the ledger)."""
    waiting = app.run(REFUND_REQUEST, thread_id="t-verdict")
    assert app.resume(waiting.thread_id, Decision(kind="approve", reviewer="ann")).status == "done"
    config = {"configurable": {"thread_id": "t-verdict"}}
    holding = [s for s in app.graph.get_state_history(config) if s.values.get("results")]
    assert holding, "no checkpoint holds a result"
    for snapshot in holding:
        results = snapshot.values["results"]
        verdict = snapshot.values.get("result_verdict")
        assert verdict is not None and verdict.step == results[-1].step, snapshot.metadata
        assert [r.step for r in results] == [0, 1], snapshot.metadata
        assert snapshot.values.get("status") == "done" and snapshot.values.get("answer")
