"""Managed context: working memory from finished steps, and prompts assembled under a budget."""

from __future__ import annotations

import pytest

from agents.budgeted_context import Section, assemble, remember, render_memory, tokens
from graph.state import ToolOutcome

EFFECTS = {"refund_charge": "irreversible", "get_invoice": "read"}


def _read(step: int) -> ToolOutcome:
    output = {"invoice_id": f"INV-{4000 + step}", "amount": 10.0 + step, "notes": "x" * 500}
    return ToolOutcome(step=step, tool="get_invoice", args={}, ok=True, output=output)


REFUND = ToolOutcome(
    step=0,
    tool="refund_charge",
    args={},
    ok=True,
    output={"refund_id": "RF-5001", "amount": 49.0, "status": "settled"},
)


def test_memory_keeps_scalar_facts_with_provenance_and_drops_long_text() -> None:
    facts = remember([REFUND, _read(1)], EFFECTS)
    assert ("refund_charge", "refund_id", "RF-5001") in {(f.tool, f.key, f.value) for f in facts}
    assert "notes" not in {f.key for f in facts}
    assert facts[0].render() == "[step 1 refund_charge] refund_id = RF-5001"


def test_a_failed_step_is_remembered_as_its_error() -> None:
    failed = ToolOutcome(step=2, tool="get_invoice", args={}, ok=False, error="timeout")
    assert [(f.key, f.value) for f in remember([failed], EFFECTS)] == [("error", "timeout")]


def test_old_reads_fold_into_a_count_and_side_effects_stay() -> None:
    facts = remember([REFUND, *(_read(i) for i in range(1, 40))], EFFECTS)
    text = render_memory(facts, budget=600)
    assert "RF-5001" in text
    assert "36 earlier step(s) folded (get_invoice x36)" in text
    assert "INV-4039" in text and "INV-4010" not in text


def test_memory_stays_within_its_budget() -> None:
    many = [
        ToolOutcome(step=i, tool="refund_charge", args={}, ok=True,
                    output={"refund_id": f"RF-{5000 + i}", "amount": 1.0, "status": "settled"})
        for i in range(200)
    ]  # fmt: skip
    text = render_memory(remember(many, EFFECTS), budget=300)
    assert tokens(text) <= 300
    assert "RF-5199" in text  # the newest survive


def test_assemble_shrinks_the_least_important_section_first() -> None:
    sections = [
        Section("request", "Request: refund it", 0),
        Section("records", "\n".join(f"record {i}" for i in range(50)), 1),
        Section("evidence", "\n".join(f"chunk {i} " + "y" * 80 for i in range(50)), 2),
    ]
    out = assemble(sections, budget=300)
    assert out.tokens <= 300
    assert out.trimmed == ["evidence"]
    assert "Request: refund it" in out.text and "record 49" in out.text
    assert "chunk 0" in out.text and "chunk 49" not in out.text


def test_a_fixed_part_over_the_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="the budget is 10"):
        assemble([Section("request", "word " * 100, 0)], budget=10)
