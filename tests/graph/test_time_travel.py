"""Time travel: list a thread's checkpoints, fork it from an earlier one, and nothing is lost."""

from __future__ import annotations

import pytest

from domains.support_desk.backend import DemoBackend
from keel.app import Decision, KeelApp
from keel.errors import BadRequest, ThreadNotFound
from tests.conftest import REFUND_REQUEST


def test_a_thread_forked_before_its_approval_asks_again_and_can_take_another_way(
    app: KeelApp, backend: DemoBackend
) -> None:
    waiting = app.run(REFUND_REQUEST)
    thread = waiting.thread_id
    done = app.resume(thread, Decision(kind="approve", reviewer="alice"))
    assert done.status == "done" and len(backend.refunds()) == 1

    history = app.history(thread)
    before_approval = next(r for r in history if r["next"] == ["approve"])
    forked = app.fork(thread, before_approval["checkpoint_id"])
    assert forked.status == "awaiting_approval"
    assert forked.run_id is not None and forked.run_id != done.run_id

    # On the new branch a reviewer rejects: the thread ends refused, nothing more is refunded.
    refused = app.resume(thread, Decision(kind="reject", reason="changed my mind"))
    assert refused.status == "refused"
    assert len(backend.refunds()) == 1
    # The old branch is still in the history: the fork added checkpoints, it removed none.
    after = {r["checkpoint_id"] for r in app.history(thread)}
    assert {r["checkpoint_id"] for r in history} < after


def test_a_fork_with_the_graph_api_continues_from_the_checkpoint_id(app: KeelApp) -> None:
    """The same with LangGraph's own API: invoke with a config that names an old checkpoint.

    (``update_state`` on an old checkpoint runs the routers of the node it writes as, and Keel's
    routers need the runtime context, which ``update_state`` does not take: fork by invoking.)
    """
    waiting = app.run(REFUND_REQUEST)
    app.resume(waiting.thread_id, Decision(kind="approve"))
    config = {"configurable": {"thread_id": waiting.thread_id}}
    old = next(s for s in app.graph.get_state_history(config) if s.next == ("approve",))
    app.graph.invoke(None, old.config, context=app.context, durability="sync")
    state = app.graph.get_state(config)
    assert state.next == ("approve",) and state.interrupts
    assert (
        state.config["configurable"]["checkpoint_id"] != old.config["configurable"]["checkpoint_id"]
    )
    assert state.parent_config is not None
    assert (
        state.parent_config["configurable"]["checkpoint_id"]
        == old.config["configurable"]["checkpoint_id"]
    )


def test_fork_refuses_unknown_checkpoints_and_the_end_of_a_thread(app: KeelApp) -> None:
    waiting = app.run(REFUND_REQUEST)
    done = app.resume(waiting.thread_id, Decision(kind="approve"))
    with pytest.raises(ThreadNotFound):
        app.fork(done.thread_id, "1f000000-0000-6000-8000-000000000000")
    last = app.history(done.thread_id)[0]["checkpoint_id"]
    with pytest.raises(BadRequest, match="nothing to run"):
        app.fork(done.thread_id, last)
