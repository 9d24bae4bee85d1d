"""Digests and the typed boundary objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from graph.state import Step, approval_digest

json_scalars = st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.none())
arg_dicts = st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=6)


@given(arg_dicts)
def test_digest_ignores_key_order(args: dict[str, object]) -> None:
    reordered = dict(reversed(list(args.items())))
    assert approval_digest("refund_charge", args) == approval_digest("refund_charge", reordered)


@given(arg_dicts, st.text(min_size=1, max_size=8), json_scalars)
def test_digest_changes_with_any_argument(args: dict[str, object], key: str, value: object) -> None:
    changed = {**args, key: value}
    if changed != args:
        assert approval_digest("refund_charge", args) != approval_digest("refund_charge", changed)


def test_digest_binds_the_tool() -> None:
    args = {"to": "ada@example.com"}
    assert approval_digest("send_email", args) != approval_digest("refund_charge", args)


def test_a_smuggled_field_is_an_error() -> None:
    with pytest.raises(ValidationError):
        Step(tool="x", args={}, purpose="p", effect="read", approved=True)  # type: ignore[call-arg]


def test_an_unknown_effect_is_an_error() -> None:
    with pytest.raises(ValidationError):
        Step(tool="x", args={}, purpose="p", effect="sometimes")  # type: ignore[arg-type]


def test_langgraph_json_allows_exactly_the_state_types() -> None:
    """The server's strict serializer must know every type the state holds, and nothing else."""
    import json
    from pathlib import Path

    from graph.state import STATE_TYPES

    config = json.loads((Path(__file__).parents[2] / "langgraph.json").read_text())
    allowed = config["checkpointer"]["serde"]["allowed_msgpack_modules"]
    assert sorted(map(tuple, allowed)) == sorted((t.__module__, t.__name__) for t in STATE_TYPES)
