"""Contract: bad input is refused cleanly, with one line, and nothing is lost or done.

An empty or oversized request, a request naming a record that does not exist, and tool arguments
outside a tool's contract (as the domain declares them): each is refused before anything
happens, the domain's facts do not change, and no thread is left stalled.
"""

from __future__ import annotations

import pytest

from graph.domain import Showcase
from keel.app import KeelApp
from keel.cli import main
from keel.errors import BadRequest, PermissionDenied
from keel.settings import Settings
from tests.contract.spec import Contract
from tests.contract.test_runs import snapshot


def test_an_empty_or_oversized_request_is_refused_in_one_line(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = snapshot(domain, settings)
    with pytest.raises(BadRequest):
        app.run("   ")
    too_long = contract.acting.request + " " + "x" * settings.max_request_chars
    outcome = app.run(too_long)
    assert outcome.status == "refused", outcome.status
    assert "\n" not in outcome.answer.strip() and outcome.answer
    monkeypatch.setenv("KEEL_HOME", str(settings.home))
    monkeypatch.setenv("KEEL_DOMAIN", settings.domain)
    assert main(["run", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keel: error:") and len(err.splitlines()) == 1, err
    assert snapshot(domain, settings) == before


def test_a_request_naming_an_unknown_record_is_refused_and_the_thread_is_not_stalled(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract
) -> None:
    before = snapshot(domain, settings)
    outcome = app.run(contract.unknown)
    assert outcome.status == "refused", (outcome.status, outcome.answer, outcome.escalation)
    assert app.show(outcome.thread_id).status == "refused"
    assert snapshot(domain, settings) == before


def test_arguments_outside_a_tools_contract_are_refused_before_the_call(
    app: KeelApp, domain: Showcase, settings: Settings, contract: Contract
) -> None:
    before = snapshot(domain, settings)
    tools = app.context.tools.for_agent("executor")
    for bad in contract.bad_calls:
        assert bad.tool in app.context.tools, f"contract.yaml names no tool {bad.tool}"
        with pytest.raises(PermissionDenied) as refused:
            tools.call(bad.tool, bad.args, idempotency_key="contract-bad-input")
        assert refused.value.rule == "contract", (bad.tool, refused.value.rule)
    assert snapshot(domain, settings) == before
