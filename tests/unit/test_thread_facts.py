"""The scopes' subjects come from the request the thread guard recorded, never from the state's
``entities`` (which any caller who can write state can write): ``agents.executor.thread_facts``."""

from __future__ import annotations

from typing import Any

import pytest

from agents.executor import thread_facts
from domains.incident_desk import IncidentDesk
from domains.support_desk import SupportDesk
from graph.domain import Domain
from stores.guard import GuardFacts

REFUND = "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate"
ROLLBACK = "Alert ALR-101 on checkout-api fired right after deploy D-4102: roll back the bad deploy"

CASES = [
    pytest.param(
        SupportDesk(), REFUND, {"customer_id": "C-1001", "invoice_id": "INV-2001"},
        id="support_desk",
    ),
    pytest.param(
        IncidentDesk(), ROLLBACK,
        {"alert_id": "ALR-101", "service": "checkout-api", "deploy_id": "D-4102"},
        id="incident_desk",
    ),
]  # fmt: skip

WRITTEN: dict[str, dict[str, str]] = {
    "changed": {"customer_id": "C-1002", "invoice_id": "INV-2002", "alert_id": "ALR-102",
                "service": "search-api", "deploy_id": "D-4201"},
    "added": {"ticket_id": "T-78", "incident_id": "INC-900"},
    "taken away": {},
    "emptied": {"customer_id": "", "alert_id": ""},
}  # fmt: skip
"""What a caller writes into ``entities``."""


def _state(request: str, entities: dict[str, str]) -> Any:
    return {"request": request, "entities": entities}


@pytest.mark.parametrize("written", sorted(WRITTEN))
@pytest.mark.parametrize(("domain", "request_text", "subjects"), CASES)
def test_the_subjects_are_the_recorded_requests_whatever_entities_say(
    domain: Domain, request_text: str, subjects: dict[str, str], written: str
) -> None:
    guarded = GuardFacts(requests=(request_text,))
    facts = thread_facts(_state(request_text, WRITTEN[written]), "t-1", domain, guarded)
    assert dict(facts.subjects) == subjects


@pytest.mark.parametrize(("domain", "request_text", "subjects"), CASES)
def test_the_last_request_the_guard_recorded_is_the_one_the_thread_is_about(
    domain: Domain, request_text: str, subjects: dict[str, str]
) -> None:
    guarded = GuardFacts(requests=("Customer C-1003 and alert ALR-103, long ago", request_text))
    assert dict(thread_facts(_state("", {}), "t-1", domain, guarded).subjects) == subjects


@pytest.mark.parametrize(("domain", "request_text", "subjects"), CASES)
def test_a_guard_with_no_request_recorded_gives_no_subject(
    domain: Domain, request_text: str, subjects: dict[str, str]
) -> None:
    facts = thread_facts(_state(request_text, subjects), "t-1", domain, GuardFacts())
    assert dict(facts.subjects) == {}


@pytest.mark.parametrize(("domain", "request_text", "subjects"), CASES)
def test_without_a_guard_the_states_entities_are_the_subjects(
    domain: Domain, request_text: str, subjects: dict[str, str]
) -> None:
    """A graph run with no stores: nothing else is there (as before the guard)."""
    written = WRITTEN["changed"] | {"email": "not a subject key"}
    facts = thread_facts(_state(request_text, written), "t-1", domain, None)
    assert dict(facts.subjects) == {k: v for k, v in written.items() if k in domain.subject_keys}
