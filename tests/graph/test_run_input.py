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
