"""Every node returns a typed partial update of the state (``graph.state.StateUpdate``), so a
misspelled channel in a node's return is a type error, not a write LangGraph drops."""

from __future__ import annotations

import inspect
from typing import get_type_hints

from agents.validator import check_result
from graph.builder import build_graph
from graph.state import KeelState, StateUpdate


def test_every_node_of_the_graph_returns_a_state_update() -> None:
    nodes = build_graph().builder.nodes
    # 9 since the validator's result check runs inside ``execute`` (issue 26); it is checked too.
    assert len(nodes) == 9
    for name, spec in nodes.items():
        node = inspect.unwrap(spec.runnable.func)  # type: ignore[attr-defined]
        assert get_type_hints(node)["return"] is StateUpdate, name
    assert get_type_hints(check_result)["return"] is StateUpdate


def test_a_state_update_holds_the_state_channels_and_no_other() -> None:
    assert StateUpdate.__total__ is False
    assert get_type_hints(StateUpdate) == get_type_hints(KeelState)
