"""The gate at the moment of the call: every receipt rule, and scopes that fail closed.

The registry's backend does not exist: every call here is decided before a tool could run (a
receipt is refused first, or the scope check breaks), so a call that got through would fail loudly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk import MANIFEST, SupportDesk
from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from graph.state import Receipt, approval_digest
from keel.errors import ConfigError, PermissionDenied
from tools.permissions import (
    Manifest,
    PermissionGate,
    ReceiptSigner,
    Scope,
    open_gate,
    parse_manifest,
)
from tools.spec import CallRequest, ThreadFacts, ToolEvent, ToolRegistry

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EMAIL = {"to": "ada@example.com", "subject": "Refund", "body": "Done."}
THREAD = "t-1"


@pytest.fixture
def tools(tmp_path: Path) -> ToolRegistry:
    registry = ToolRegistry(demo_tools(DemoBackend(tmp_path / "absent.sqlite")))
    open_gate(MANIFEST, registry, SupportDesk().scopes(), tmp_path, clock=lambda: NOW)
    return registry


@pytest.fixture
def events(tools: ToolRegistry) -> list[ToolEvent]:
    told: list[ToolEvent] = []
    tools.listeners.append(told.append)
    return told


def _gate(tools: ToolRegistry) -> PermissionGate:
    assert isinstance(tools.gate, PermissionGate)
    return tools.gate


def receipt(tools: ToolRegistry, **overrides: Any) -> Receipt:
    """A receipt for sending EMAIL in THREAD, as the approval node signs it, with overrides."""
    gate = _gate(tools)
    fields: dict[str, Any] = {
        "tool": "send_email",
        "digest": approval_digest("send_email", EMAIL),
        "thread_id": THREAD,
        "approved_by": "ann",
        "approved_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(minutes=30)).isoformat(),
        "manifest_version": gate.version,
    }
    fields.update(overrides)
    return gate.signer.sign(Receipt(**fields))


def _denial(
    tools: ToolRegistry, approval: Receipt, agent: str = "executor", **facts: Any
) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as caught:
        tools.invoke(
            "send_email", EMAIL, agent=agent, approval=approval,
            facts=ThreadFacts(thread_id=THREAD, subjects={"customer_id": "C-1001"}, **facts),
        )  # fmt: skip
    return caught.value


@pytest.mark.parametrize(
    ("overrides", "facts", "reason"),
    [
        ({"expires_at": (NOW - timedelta(seconds=1)).isoformat()}, {}, "has expired"),
        ({"thread_id": "t-2"}, {}, "belongs to another thread"),
        ({"manifest_version": "2020-01-01.1"}, {}, "given under manifest 2020-01-01.1"),
        ({}, {"spent": frozenset({approval_digest("send_email", EMAIL)})}, "already used"),
        ({"approved_for": "planner"}, {}, "given for agent 'planner', not 'executor'"),
        ({"digest": approval_digest("send_email", {**EMAIL, "to": "x@leak.example"})}, {},
         "different action"),
    ],
    ids=["expired", "other-thread", "other-manifest", "used-twice", "other-agent", "other-args"],
)  # fmt: skip
def test_a_receipt_that_breaks_a_rule_is_refused_and_recorded(
    tools: ToolRegistry,
    events: list[ToolEvent],
    overrides: dict[str, Any],
    facts: dict[str, Any],
    reason: str,
) -> None:
    denied = _denial(tools, receipt(tools, **overrides), **facts)
    assert denied.rule == "approval"
    assert reason in str(denied)
    assert [(e.decision, e.rule, e.tool) for e in events] == [("denied", "approval", "send_email")]
    assert reason in (events[0].reason or "")


def test_an_altered_receipt_is_refused_by_its_signature(tools: ToolRegistry) -> None:
    # Re-targeting a signed receipt to another agent breaks the signature before anything else.
    altered = receipt(tools).model_copy(update={"approved_for": "validator"})
    assert "signature" in str(_denial(tools, altered))


def test_the_unaltered_receipt_passes_every_receipt_rule(tools: ToolRegistry) -> None:
    # The control for the cases above: one second before expiry the same receipt is accepted, and
    # the call goes on to its scope (which cannot read the absent backend, so it fails closed).
    fresh = receipt(tools, expires_at=(NOW + timedelta(seconds=1)).isoformat())
    assert _denial(tools, fresh).rule == "scope:recipient_is_the_customer"


def _broken_scope(args: dict[str, Any], facts: ThreadFacts, tools: Any) -> str | None:
    return str(args["ticket_id"])  # update_billing_email takes no ticket_id: a KeyError


def test_a_scope_check_that_breaks_denies_the_call_and_is_recorded(
    tools: ToolRegistry, events: list[ToolEvent], tmp_path: Path
) -> None:
    # A scope that does not fit its tool (refused at load for the shipped scopes, which declare
    # what they read) must still fail closed if it gets through: a denial, never a crash.
    manifest = Manifest.model_validate(
        {"version": "1", "agents": {"executor": {"effects": ["read", "write"], "tools": {
            "update_billing_email": {"scopes": ["broken"]}}}}}
    )  # fmt: skip
    tools.gate = PermissionGate(
        manifest, {"broken": Scope(_broken_scope)}, ReceiptSigner.for_home(tmp_path)
    )
    with pytest.raises(PermissionDenied) as caught:
        tools.invoke(
            "update_billing_email", {"customer_id": "C-1001", "email": "a@b.example"},
            agent="executor", facts=ThreadFacts(thread_id=THREAD),
        )  # fmt: skip
    assert caught.value.rule == "scope:broken"
    assert "could not be verified: KeyError" in str(caught.value)
    assert [(e.decision, e.rule) for e in events] == [("denied", "scope:broken")]


def _four_eyes(tools: ToolRegistry, tmp_path: Path) -> None:
    """The e-mail granted to the executor with four eyes (its scope dropped: the absent backend
    could not answer it, and the four-eyes rule comes first)."""
    gate = _gate(tools)
    manifest = Manifest.model_validate(
        {"version": gate.version, "agents": {"executor": {"effects": ["irreversible"], "tools": {
            "send_email": {"approval": "required", "four_eyes": True}}}}}
    )  # fmt: skip
    tools.gate = PermissionGate(manifest, {}, gate.signer, lambda: NOW)


def test_a_four_eyes_receipt_signed_by_the_requester_is_refused(
    tools: ToolRegistry, events: list[ToolEvent], tmp_path: Path
) -> None:
    _four_eyes(tools, tmp_path)
    denied = _denial(tools, receipt(tools, approved_by="ann"), requester="ann")
    assert denied.rule == "four-eyes"
    assert "someone other than its requester (ann)" in str(denied)
    assert [(e.decision, e.rule) for e in events] == [("denied", "four-eyes")]


def test_a_four_eyes_receipt_passes_when_someone_else_or_nobody_known_requested(
    tools: ToolRegistry, tmp_path: Path
) -> None:
    """Another approver passes; so does any approver where no engine authenticated a requester
    (a local run)."""
    _four_eyes(tools, tmp_path)
    approval = receipt(tools, approved_by="ann")
    for requester in ("bob", None):
        facts = ThreadFacts(thread_id=THREAD, requester=requester)
        request = CallRequest(
            "executor", tools["send_email"], EMAIL, approval.digest, facts, approval
        )
        assert _gate(tools).check(request, tools) is None, requester
    # The requester's own receipt, for the control.
    facts = ThreadFacts(thread_id=THREAD, requester="ann")
    request = CallRequest("executor", tools["send_email"], EMAIL, approval.digest, facts, approval)
    assert _gate(tools).check(request, tools) is not None


def test_four_eyes_without_an_approval_does_not_load(tmp_path: Path) -> None:
    registry = ToolRegistry(demo_tools(DemoBackend(tmp_path / "absent.sqlite")))
    text = (
        'version: "1"\nagents:\n  executor:\n    effects: [read, write]\n    tools:\n'
        "      close_ticket:\n        four_eyes: true\n"
    )
    with pytest.raises(ConfigError, match=r"m.yaml:6: .*four_eyes: true. needs .approval: req"):
        parse_manifest(text, "m.yaml", registry, SupportDesk().scopes())
