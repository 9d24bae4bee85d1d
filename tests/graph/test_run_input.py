"""Break 7 for Python callers: ``KeelApp`` refuses an input the graph could not read back, before
anything is stored, and the thread it was aimed at stays readable and answerable."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.types import Command

from domains.support_desk.backend import DemoBackend
from keel.app import Decision, KeelApp
from keel.errors import BadRequest
from tests.conftest import REFUND_REQUEST

UNREADABLE: list[Any] = [
    {"messages": [{"type": "human", "content": 5}]},
    {"messages": [{"type": "bogus", "content": "hi"}]},
    {"request": "hi", "cursor": -2},
    {"request": "x" * 40_000},
]


@pytest.mark.parametrize("payload", UNREADABLE)
def test_an_unreadable_input_to_a_waiting_thread_is_refused_and_the_thread_still_answers(
    app: KeelApp, backend: DemoBackend, payload: Any
) -> None:
    outcome = app.run(REFUND_REQUEST, "t-waiting")
    assert outcome.status == "awaiting_approval"
    before = app.graph.get_state(app._config("t-waiting")).config
    with pytest.raises(BadRequest, match=r"^input refused: "):
        app.invoke_segment(payload, "t-waiting", "run")
    assert app.graph.get_state(app._config("t-waiting")).config == before  # nothing stored
    assert app.show("t-waiting").status == "awaiting_approval"
    done = app.resume("t-waiting", Decision(kind="approve", reviewer="rita"))
    assert done.status == "done"
    assert len(backend.refunds()) == 1


def test_an_absurd_resume_value_is_refused_before_it_is_stored(app: KeelApp) -> None:
    app.run(REFUND_REQUEST, "t-deep")
    deep: Any = {}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(BadRequest, match=r"^resume refused: nested deeper"):
        app.invoke_segment(Command(resume={"decisions": [deep]}), "t-deep", "resume")
    assert app.show("t-deep").status == "awaiting_approval"


@pytest.mark.parametrize(
    "message",
    [{"type": "human", "content": 5}, {"type": "bogus", "content": "hi"}, {"role": 7}],
)
def test_a_raw_graph_caller_cannot_break_a_waiting_thread_with_an_unreadable_message(
    app: KeelApp, backend: DemoBackend, message: Any
) -> None:
    """A caller of the compiled graph skips KeelApp's check: the unreadable message is kept as a
    refusal the transcript shows, never as a pending write that breaks every later read."""
    app.run(REFUND_REQUEST, "t-raw")
    config = app._config("t-raw")
    app.graph.invoke({"messages": [message]}, config, context=app.context)
    state = app.graph.get_state(config)  # readable: before the fix this raised
    refused = [m for m in state.values["messages"] if m.additional_kwargs.get("keel_refused")]
    assert len(refused) == 1 and refused[0].content == ""
    assert "could not be read" in state.values["messages"][-1].content
    assert app.show("t-raw").status == "awaiting_approval"
    done = app.resume("t-raw", Decision(kind="approve", reviewer="rita"))
    assert done.status == "done"
    assert len(backend.refunds()) == 1


def test_a_new_thread_whose_only_message_is_unreadable_is_refused_in_one_line(
    app: KeelApp, backend: DemoBackend
) -> None:
    config = app._config("t-raw-new")
    app.graph.invoke({"messages": [{"type": "human", "content": 5}]}, config, context=app.context)
    values = app.graph.get_state(config).values
    assert values["status"] == "refused"
    assert values["answer"].startswith("Refused: the last human message could not be read")
    assert backend.refunds() == []
