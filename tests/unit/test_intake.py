"""Intake refuses what cannot be a request; the demo domain finds the ids a request names."""

from __future__ import annotations

import pytest

from agents.intake import refusal_reason
from domains.support_desk import SupportDesk


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [
        ("", "the request is empty"),
        ("   \n", "the request is empty"),
        ("?!?! 123 ...", "the request has no words to act on"),
        ("x" * 3000, "the request is 3000 characters long; the limit is 2000"),
    ],
)
def test_refuses_what_cannot_be_a_request(request_text: str, reason: str) -> None:
    assert refusal_reason(request_text, 2000) == reason


def test_takes_a_plain_request() -> None:
    assert refusal_reason("What is our refund window?", 2000) is None


def test_extracts_business_ids_and_amounts() -> None:
    found = SupportDesk().extract_entities(
        "Refund 12,50 EUR on inv-2002 for c-1002, mail grace@example.com about ticket T-77"
    )
    assert found == {
        "customer_id": "C-1002",
        "invoice_id": "INV-2002",
        "ticket_id": "T-77",
        "email": "grace@example.com",
        "amount": "12.50",
    }


def test_extracts_nothing_from_a_question() -> None:
    assert SupportDesk().extract_entities("What is our refund window?") == {}
