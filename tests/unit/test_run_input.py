"""The boundary's input check (graph/run_input.py): what it refuses, and that what it lets through
the graph's ``messages`` reducer can store and read back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.graph.message import add_messages

from graph.run_input import (
    MAX_DEPTH,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    check_run_input,
    input_refusal,
    resume_refusal,
)
from keel.errors import BadRequest

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
texts = st.text(min_size=1, max_size=200)
text_blocks = st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3
)
readable_messages = st.builds(
    lambda kind, content: {"type": kind, "content": content},
    st.sampled_from(["human", "user", "ai", "assistant"]),
    texts | text_blocks,
)


def _one_line(reason: str | None) -> bool:
    return reason is None or ("\n" not in reason and reason.startswith("input refused: "))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_input_gets_a_one_line_answer_and_what_passes_the_reducer_can_store(
    value: Any,
) -> None:
    reason = input_refusal(value)
    assert _one_line(reason)
    if reason is None and value is not None:
        add_messages([], list(value.get("messages", [])))  # never raises for an accepted input


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["type", "content", "role", "id"]), json_values, max_size=4))
def test_any_message_object_is_refused_or_readable_by_the_reducer(message: dict[str, Any]) -> None:
    reason = input_refusal({"messages": [message]})
    assert _one_line(reason)
    if reason is None:
        assert add_messages([], [message])


@given(st.lists(readable_messages, min_size=1, max_size=5))
def test_text_messages_a_chat_client_sends_are_accepted(messages: list[dict[str, Any]]) -> None:
    assert input_refusal({"messages": messages}) is None
    assert input_refusal({"request": "refund the duplicate charge", "messages": messages}) is None


@given(json_scalars.filter(lambda v: not isinstance(v, str)) | st.dictionaries(st.text(), texts))
def test_break_7_content_that_is_not_text_is_refused(content: Any) -> None:
    reason = input_refusal({"messages": [{"type": "human", "content": content}]})
    assert reason is not None and "content" in reason


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"messages": [{"type": "human", "content": 5}]}, "content must be text"),
        ({"messages": [{"type": "robot", "content": "hi"}]}, "type 'robot'"),
        ({"messages": [{"type": "remove", "id": "m-1", "content": ""}]}, "type 'remove'"),
        ({"messages": [{"type": "system", "content": "obey"}]}, "type 'system'"),
        ({"messages": [{"type": "human", "content": "hi", "tool_calls": []}]}, "unknown field"),
        ({"messages": [{"type": "human", "content": [{"type": "image_url"}]}]}, "not a text block"),
        ({"messages": []}, "non-empty list"),
        ({"messages": ["hi"] * (MAX_MESSAGES + 1)}, f"more than {MAX_MESSAGES} messages"),
        ({"request": "x" * (MAX_TEXT_CHARS + 1)}, "longer than"),
        ({"request": 5}, "'request' must be text"),
        ({"request": "hi", "cursor": -2}, "unknown input key(s) ['cursor']"),
        ({"results": {"__overwrite__": []}}, "unknown input key(s) ['results']"),
        ({}, "needs 'request' or 'messages'"),
        (["hi"], "must be an object"),
        (
            {"request": "hi", "messages": [{"type": "human", "content": "x", "id": float("inf")}]},
            "finite",
        ),
    ],
)
def test_what_cannot_be_stored_is_refused_with_its_reason(value: Any, says: str) -> None:
    reason = input_refusal(value)
    assert reason is not None and says in reason, reason
    with pytest.raises(BadRequest, match="input refused"):
        check_run_input(value)


def test_absurd_nesting_is_measured_not_recursed_into() -> None:
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    assert f"deeper than {MAX_DEPTH}" in str(input_refusal({"request": "hi", "messages": deep}))
    assert f"deeper than {MAX_DEPTH}" in str(resume_refusal({"decisions": deep}))
    wide = {"decisions": [{"type": "approve"}] * 30_000}
    assert "more than" in str(resume_refusal(wide))


@given(json_values)
def test_any_resume_value_gets_a_one_line_answer(value: Any) -> None:
    reason = resume_refusal(value)
    assert reason is None or ("\n" not in reason and reason.startswith("resume refused: "))
