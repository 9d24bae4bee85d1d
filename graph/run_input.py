"""What a caller may send the graph, checked before anything is stored.

LangGraph stores a run's input as the first task's writes before the ``messages`` reducer reads
it: a message the reducer cannot read (``{"type": "human", "content": 5}``) is saved, then refused
on every later read of the thread (its state answers 500, its approval can no longer be answered;
shared/TRAPS.md, "Clients can write state"). So input is refused at the boundary, with one line
that says why: by the engine's auth handler for ``threads.create_run`` (``graph/serve_auth.py``)
and by ``KeelApp`` for Python callers. A caller of the compiled graph who skips both is not
stopped here (``tests/graph/test_run_input.py`` shows what then happens).

The rules: the input is an object with ``request`` (text) and/or ``messages`` (a list of chat
messages a client writes: ``human``/``user`` and ``ai``/``assistant``, with text content or text
blocks); nothing else, nothing deeper than ``MAX_DEPTH``, no text longer than ``MAX_TEXT_CHARS``,
no more than ``MAX_MESSAGES`` messages, ``MAX_PAYLOAD_BYTES`` in all. A resume value (an answer to
an interrupt) is bounded the same way; what it means is the interrupted node's to judge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langgraph.graph.message import add_messages

from graph.state import InputState
from keel.errors import BadRequest

MAX_PAYLOAD_BYTES = 256 * 1024
"""The most an input or a resume value may weigh, as JSON."""
MAX_DEPTH = 12
"""The deepest nesting of objects and lists in an input or a resume value."""
MAX_NODES = 20_000
"""The most values (objects, lists, scalars) in one input or resume value."""
MAX_TEXT_CHARS = 32_000
"""The longest text: a request, a message's content, one text block."""
MAX_MESSAGES = 100
"""The most messages one input may carry."""

INPUT_KEYS = frozenset(InputState.__annotations__)
"""What the graph takes as input (``graph.state.InputState``): ``request`` and ``messages``."""
MESSAGE_TYPES = frozenset({"human", "user", "ai", "assistant"})
"""The messages a client writes: its own and, for a transcript it replays, the assistant's.
Not ``system``, ``tool``, ``function`` or ``remove`` (a client's ``RemoveMessage`` would delete
the graph's own answers from the transcript)."""
MESSAGE_FIELDS = frozenset(
    {"type", "role", "content", "id", "name", "additional_kwargs", "response_metadata", "example"}
)


def _shape_refusal(value: Any) -> str | None:
    """Why ``value`` is not a bounded JSON value, or None. Walks without recursion, so a deep
    nesting is measured, not a stack overflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"more than {MAX_NODES} values"
        if isinstance(item, Mapping):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            for key, inner in item.items():
                if not isinstance(key, str):
                    return "an object key is not text"
                stack.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            stack.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            if len(item) > MAX_TEXT_CHARS:
                return f"a text longer than {MAX_TEXT_CHARS} characters"
        elif item is not None and not isinstance(item, bool | int | float):
            return f"a value of type {type(item).__name__}, not JSON"
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except ValueError:
        return "a number that is not finite"
    if size > MAX_PAYLOAD_BYTES:
        return f"{size} bytes, more than {MAX_PAYLOAD_BYTES}"
    return None


def _message_refusal(index: int, message: Any) -> str | None:
    where = f"messages[{index}]"
    if isinstance(message, str):
        return None  # a bare string is a human message (LangChain's convert_to_messages)
    if not isinstance(message, Mapping):
        return f"{where} is not a message object"
    kind = message.get("type", message.get("role"))
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        shown = repr(kind)[:40]
        return f"{where} has type {shown}; a client may send {sorted(MESSAGE_TYPES)}"
    unknown = sorted(set(message) - MESSAGE_FIELDS)
    if unknown:
        return f"{where} has unknown field(s) {unknown}"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.content must be text or a list of text blocks"
    for j, block in enumerate(content):
        if isinstance(block, str):
            continue
        if not isinstance(block, Mapping) or block.get("type") != "text":
            return f"{where}.content[{j}] is not a text block (Keel reads text only)"
        if not isinstance(block.get("text"), str):
            return f"{where}.content[{j}].text must be text"
    return None


def input_refusal(value: Any) -> str | None:
    """Why a run's input cannot be stored, in one line; None when it can (or there is none).

    Example:
        >>> input_refusal({"request": "refund the duplicate charge"}) is None
        True
        >>> input_refusal({"messages": [{"type": "human", "content": 5}]})
        'input refused: messages[0].content must be text or a list of text blocks'
        >>> input_refusal({"request": "hi", "cursor": -1})
        "input refused: unknown input key(s) ['cursor']; the graph takes ['messages', 'request']"
    """
    if value is None:
        return None
    reason = _input_reason(value)
    return None if reason is None else f"input refused: {reason}"


def _input_reason(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "the input must be an object with 'request' or 'messages'"
    shape = _shape_refusal(value)
    if shape is not None:
        return shape
    unknown = sorted(set(value) - INPUT_KEYS)
    if unknown:
        return f"unknown input key(s) {unknown}; the graph takes {sorted(INPUT_KEYS)}"
    if not INPUT_KEYS & set(value):
        return "the input needs 'request' or 'messages'"
    if "request" in value and not isinstance(value["request"], str):
        return "'request' must be text"
    if "messages" not in value:
        return None
    messages = value["messages"]
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    if len(messages) > MAX_MESSAGES:
        return f"more than {MAX_MESSAGES} messages"
    for i, message in enumerate(messages):
        reason = _message_refusal(i, message)
        if reason is not None:
            return reason
    try:
        add_messages([], list(messages))  # the channel's own reducer: what it refuses, we refuse
    except Exception as err:  # whatever the reducer refuses is the caller's error
        return f"messages cannot be read ({type(err).__name__})"
    return None


def resume_refusal(value: Any) -> str | None:
    """Why a resume value (an answer to an interrupt) cannot be sent, in one line; None if it
    can. Only its size and shape: the interrupted node judges what it says.

    Example:
        >>> resume_refusal({"decisions": [{"type": "approve"}]}) is None
        True
        >>> nested: dict = {}
        >>> for _ in range(50):
        ...     nested = {"x": nested}
        >>> resume_refusal(nested)
        'resume refused: nested deeper than 12 levels'
    """
    reason = _shape_refusal(value)
    return None if reason is None else f"resume refused: {reason}"


def check_run_input(value: Any) -> None:
    """Refuse an input that could not be stored and read back.

    Raises:
        BadRequest: the input is malformed (one line saying why).
    """
    reason = input_refusal(value)
    if reason is not None:
        raise BadRequest(reason)


def check_resume(value: Any) -> None:
    """Refuse a resume value too large or too deep to store.

    Raises:
        BadRequest: the value is out of bounds (one line saying why).
    """
    reason = resume_refusal(value)
    if reason is not None:
        raise BadRequest(reason)
