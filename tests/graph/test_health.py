"""Health probes, and what the graph does when an integration is down."""

from __future__ import annotations

import pytest

from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from graph.domain import gated_registry
from keel.app import Decision, KeelApp
from keel.errors import Retryable
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST
from tools.health import probe


def test_health_reports_each_integration(settings: Settings) -> None:
    outage = settings.model_copy(update={"faults": "outage"})
    domain = SupportDesk()
    tools = gated_registry(domain, outage)
    rows = {h.integration: h for h in probe(tools, domain.health_probes())}
    assert rows["billing"].status == "down" and "connection refused" in rows["billing"].detail
    assert rows["billing_legacy"].status == "ok"
    assert rows["crm"].status == "ok" and rows["email"].status == "unprobed"


def test_a_refund_during_a_billing_outage_goes_through_the_legacy_endpoint(
    settings: Settings, backend: DemoBackend
) -> None:
    outage = settings.model_copy(update={"faults": "outage"})
    with KeelApp.open(outage, KeelContext.from_settings(outage)) as app:
        waiting = app.run(REFUND_REQUEST)
        done = app.resume(waiting.thread_id, Decision(kind="approve"))
    assert done.status == "done"
    assert done.results[0].via == "refund_charge_legacy"
    assert len(backend.refunds()) == 1


def test_an_integration_known_to_be_down_escalates_before_anything_runs(
    settings: Settings, backend: DemoBackend
) -> None:
    context = KeelContext.from_settings(settings)
    for name in ("billing", "billing_legacy"):
        context.tools.breakers[name].trip()
    with KeelApp.open(settings, context) as app:
        outcome = app.run(REFUND_REQUEST)
    assert outcome.status == "escalated"
    assert outcome.escalation is not None
    assert "billing_legacy is unavailable (circuit open)" in outcome.escalation.reason
    assert backend.refunds() == []


def test_a_plan_whose_side_effect_cannot_run_escalates_before_the_first_step(
    settings: Settings, backend: DemoBackend
) -> None:
    context = KeelContext.from_settings(settings)
    context.tools.breakers["email"].trip()
    with KeelApp.open(settings, context) as app:
        outcome = app.run("Close ticket T-77 and tell the customer")
    assert outcome.status == "escalated"
    assert outcome.escalation is not None
    assert "email is down (circuit open) and no fallback is available" in outcome.escalation.reason
    assert backend.get_ticket("T-77")["status"] == "open"


def test_a_step_whose_result_cannot_be_read_back_escalates_instead_of_crashing(
    settings: Settings, backend: DemoBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write lands, then the CRM stops answering before the validator can read it back.
    def crm_gone(*args: object) -> list[str]:
        raise Retryable("crm: 503 service unavailable")

    monkeypatch.setattr(SupportDesk, "postconditions", crm_gone)
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        outcome = app.run("Please update the billing e-mail of C-1002 to finance@hopper.example")
    assert outcome.status == "escalated"
    assert outcome.escalation is not None and "could not be verified" in outcome.escalation.reason
    assert backend.get_customer("C-1002")["billing_email"] == "finance@hopper.example"


def test_the_fault_profile_is_switchable_from_the_command_line(
    home: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from keel.cli import main

    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.chdir(str(home))
    assert main(["health", "--json", "--faults", "outage"]) == 0
    rows = {r["integration"]: r for r in json.loads(capsys.readouterr().out)["integrations"]}
    assert rows["billing"]["status"] == "down" and rows["billing_legacy"]["status"] == "ok"
    assert rows["crm"]["status"] == "ok"
    assert main(["health", "--json"]) == 0  # without the flag, the settings' profile: none
    rows = {r["integration"]: r for r in json.loads(capsys.readouterr().out)["integrations"]}
    assert rows["billing"]["status"] == "ok"
    assert main(["health", "--faults", "gremlins"]) == 2
    assert "unknown fault profile 'gremlins'" in capsys.readouterr().err
