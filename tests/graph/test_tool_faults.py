"""The demo tools under injected faults: fallbacks, detected drift, exactly-once refunds."""

from __future__ import annotations

import pytest

from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from graph.domain import tool_registry
from keel.errors import Permanent, Retryable
from keel.settings import Settings
from tests.builders import approved, gated
from tools.faults import FaultInjector, FaultProfile, profile_named
from tools.spec import CallResult, ToolRegistry

REFUND = {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}


def _tools(settings: Settings, faults: str, **overrides: object) -> ToolRegistry:
    tuned = settings.model_copy(update={"faults": faults, "tool_timeout_s": 0.2, **overrides})
    return gated(tool_registry(SupportDesk(), tuned), settings.home)


def _refund(tools: ToolRegistry, key: str) -> CallResult:
    approval = approved(tools, "refund_charge", REFUND, invoice_id="INV-2001")
    return tools.invoke("refund_charge", REFUND, idempotency_key=key, **approval)


def test_an_outage_of_billing_goes_through_the_legacy_endpoint(
    settings: Settings, backend: DemoBackend
) -> None:
    answer = _refund(_tools(settings, "outage"), "k1")
    assert answer.via == "refund_charge_legacy"
    assert len(backend.refunds()) == 1


def test_a_changed_response_shape_is_detected_not_consumed(settings: Settings) -> None:
    with pytest.raises(Permanent, match="unexpected shape"):
        _tools(settings, "drift").call("get_invoice", {"invoice_id": "INV-2001"}, agent="validator")


def test_expired_credentials_fail_without_retrying(settings: Settings) -> None:
    with pytest.raises(Permanent, match="401"):
        tools = _tools(settings, "expired")
        email = {"to": "ada@example.com", "subject": "s", "body": "b"}
        approval = approved(tools, "send_email", email, customer_id="C-1001")
        tools.call("send_email", email, idempotency_key="k2", **approval)


def test_a_lost_response_is_retried_with_the_same_key_and_refunds_once(
    settings: Settings, backend: DemoBackend
) -> None:
    profile = '{"lost_response_rate": 1.0, "integrations": ["billing"]}'
    # The primary acts, then every answer is lost; the legacy endpoint, asked with the same
    # key, returns the first result instead of refunding again.
    answer = _refund(_tools(settings, profile), "k3")
    assert answer.output["replayed"] is True
    assert len(backend.refunds()) == 1


def test_transient_faults_are_absorbed(settings: Settings, backend: DemoBackend) -> None:
    tools = _tools(settings, "transient", fault_seed=7)
    for _ in range(10):
        assert (
            tools.call("get_customer", {"customer_id": "C-1001"}, agent="executor")["name"]
            == "Ada Lovelace"
        )


def test_unknown_fault_profile_is_a_clear_error() -> None:
    from keel.errors import BadRequest

    with pytest.raises(BadRequest, match="unknown fault profile"):
        profile_named("sometimes")


def test_faults_are_reproducible_by_seed() -> None:
    def run(seed: int) -> list[bool]:
        injector = FaultInjector(FaultProfile(failure_rate=0.5), seed)
        wrapped = injector.wrap("x", 1.0, lambda call: {"ok": True})
        out = []
        for _ in range(20):
            try:
                wrapped(None)
                out.append(True)
            except Retryable:
                out.append(False)
        return out

    assert run(1) == run(1) and run(1) != run(2)
