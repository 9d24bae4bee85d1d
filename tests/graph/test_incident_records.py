"""Each incident-desk runbook stops only for the records it needs.

Enumerated, not picked: every runbook in ``RUNBOOKS`` against an outage of every integration the
desk reads its records from, so a new runbook or a new record read is covered without being
listed here. A record the runbook needs being down escalates (a temporary ``CannotPlan`` naming
the record); any other record being down changes nothing, and the validator's rules accept the
same plan with the same outage. The rules never read a record that is down as an empty one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import domains.incident_desk
from domains.incident_desk import IncidentDesk
from domains.incident_desk.backend import IncidentBackend
from domains.incident_desk.domain import RULE_READS, RUNBOOKS, UNREADABLE
from domains.incident_desk.tools import incident_tools
from graph.state import CannotPlan, Evidence, Plan
from tools.faults import FaultInjector, FaultProfile
from tools.permissions import open_gate
from tools.resilience import RetryPolicy
from tools.spec import AgentTools, ToolRegistry

REQUEST = "Alert ALR-101 on checkout-api: see INC-900"
ENTITIES = {"alert_id": "ALR-101", "incident_id": "INC-900"}
"""An alert that fires on a service with a live deploy, and an incident: every record is read."""

MANIFEST = Path(domains.incident_desk.__file__).parent / "permissions.yaml"
FAULTS = {
    "outage": FaultProfile(outage=True),
    "expired": FaultProfile(expired_credentials=True),
    "drift": FaultProfile(drift_rate=1.0),
}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> IncidentBackend:
    backend = IncidentBackend(tmp_path_factory.mktemp("incident-records") / "desk.db")
    backend.seed(reset=True)
    return backend


def _read_integrations() -> list[str]:
    tools = incident_tools(IncidentBackend(Path("unused.db")))
    return sorted({spec.integration for spec in tools if spec.effect == "read"})


def _records(backend: IncidentBackend, fault: FaultProfile | None = None) -> dict[str, Any]:
    specs = incident_tools(backend)
    if fault is not None:
        specs = FaultInjector(fault, seed=0).wrap_specs(specs, 1.0)
    tools = ToolRegistry(specs, retry=RetryPolicy(attempts=1), timeout_s=1.0)
    # The planner's own grants, as in a run: the records are read through the shipped manifest.
    open_gate(MANIFEST, tools, IncidentDesk().scopes(), backend.path.parent)
    return IncidentDesk().gather_records(ENTITIES, AgentTools(tools, "planner"))


def _runbook(intent: str) -> Evidence:
    return Evidence(
        chunk_id=f"runbook-{intent}:1", source=f"runbook-{intent}", title=intent, kind="runbook",
        trust_tier="reviewed", owner="sre", effective_date="2026-10-01", score=0.6,
        text=intent, intent=intent, keywords=[], requires=["alert_id"],
    )  # fmt: skip


def _plan(intent: str, records: dict[str, Any]) -> Plan | CannotPlan:
    return IncidentDesk().runbook_plan(_runbook(intent), REQUEST, ENTITIES, records)


CASES = [
    pytest.param(intent, integration, kind, id=f"{intent}-{integration}-{kind}")
    for intent in RUNBOOKS
    for integration in _read_integrations()
    for kind in FAULTS
]


def test_every_record_has_an_integration_whose_outage_takes_it_down(
    backend: IncidentBackend,
) -> None:
    read = {k for k in _records(backend) if k not in ("unavailable", "missing", UNREADABLE)}
    assert read == {"alert", "incident", "deploys", "metrics", "oncall"}
    down: set[str] = set()
    for integration in _read_integrations():
        fault = FAULTS["outage"].model_copy(update={"integrations": [integration]})
        down |= _records(backend, fault).get(UNREADABLE, {}).keys()
    assert down == read
    for filler in RUNBOOKS.values():
        assert filler.needs <= read


@pytest.mark.parametrize(("intent", "integration", "kind"), CASES)
def test_a_runbook_escalates_only_when_a_record_it_needs_is_down(
    backend: IncidentBackend, intent: str, integration: str, kind: str
) -> None:
    healthy = _plan(intent, _records(backend))
    assert isinstance(healthy, Plan)
    fault = FAULTS[kind].model_copy(update={"integrations": [integration]})
    records = _records(backend, fault)
    down = set(records[UNREADABLE])
    assert down, f"{kind} on {integration} took no record down"
    needed = RUNBOOKS[intent].needs & down
    result = _plan(intent, records)
    if needed:
        assert isinstance(result, CannotPlan) and result.temporary, result
        for record in needed:
            assert f"{record} (" in result.reason
        for record in down - needed:
            assert f"{record} (" not in result.reason
        # The plan made before the outage cannot pass the rules either: a step whose record is
        # down cannot be checked, and is never judged against an empty record.
        reasons = IncidentDesk().plan_rules(healthy, records)
        checked = {r for step in healthy.steps for r in RULE_READS.get(step.tool, set())}
        for record in needed & checked:
            assert any(f"{record} cannot be read" in reason for reason in reasons), reasons
        assert all("cannot be checked" in reason for reason in reasons), reasons
    else:
        assert result == healthy
        assert IncidentDesk().plan_rules(result, records) == []


@pytest.mark.parametrize("intent", list(RUNBOOKS))
def test_a_runbook_needs_every_record_the_rules_check_its_steps_against(
    backend: IncidentBackend, intent: str
) -> None:
    """Else it would plan a step the validator cannot check while that record is down."""
    made = _plan(intent, _records(backend))
    assert isinstance(made, Plan)
    for step in made.steps:
        assert RULE_READS.get(step.tool, frozenset()) <= RUNBOOKS[intent].needs, step.tool


@pytest.mark.parametrize("intent", list(RUNBOOKS))
def test_a_filler_is_shown_only_the_records_it_needs(
    backend: IncidentBackend, intent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[set[str]] = []
    filler = RUNBOOKS[intent]

    def spy(runbook: Evidence, records: Any) -> Plan | CannotPlan:
        shown.append(set(records))
        return filler.fill(runbook, records)

    monkeypatch.setitem(RUNBOOKS, intent, filler._replace(fill=spy))
    assert isinstance(_plan(intent, _records(backend)), Plan)
    assert shown == [set(filler.needs)]


def test_the_rules_say_a_record_that_is_down_cannot_be_checked(backend: IncidentBackend) -> None:
    records = _records(backend)
    rollback = _plan("rollback_bad_deploy", records)
    assert isinstance(rollback, Plan)
    deploys_down = {k: v for k, v in records.items() if k != "deploys"}
    deploys_down[UNREADABLE] = {"deploys": "checkout-api: deploys: 503 service unavailable"}
    assert IncidentDesk().plan_rules(rollback, deploys_down) == [
        "step 2 (rollback_deploy): cannot be checked, deploys cannot be read "
        "(checkout-api: deploys: 503 service unavailable)"
    ]
    no_oncall = {k: v for k, v in records.items() if k != "oncall"}
    assert IncidentDesk().plan_rules(rollback, no_oncall) == [
        "step 3 (page_oncall): cannot be checked, no oncall on record"
    ]


@pytest.mark.parametrize(
    ("intent", "record"),
    [pytest.param(i, r, id=f"{i}-{r}") for i, filler in RUNBOOKS.items() for r in filler.needs],
)
def test_every_record_a_runbook_declares_is_one_it_reads(
    backend: IncidentBackend, intent: str, record: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared and not read would escalate a request for nothing: without the record, either
    the filler fails to fill or a rule would check one of its steps against it."""
    filler = RUNBOOKS[intent]
    monkeypatch.setitem(RUNBOOKS, intent, filler._replace(needs=filler.needs - {record}))
    try:
        made = _plan(intent, _records(backend))
    except KeyError as err:
        assert err.args == (record,)
        return
    assert isinstance(made, Plan)
    assert any(record in RULE_READS.get(step.tool, set()) for step in made.steps)
