"""Contract: the gate denies every call outside a grant of the domain's own manifest.

The suite walks the manifest: every agent (and one the manifest does not name) against every
tool it holds no grant for; every grant that needs approval, without a receipt and with one for
other arguments or another thread; every limit just above its ceiling; every scope with the
out-of-scope call the domain declares for it in ``contract.yaml``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from graph.domain import Showcase, gated_registry
from graph.state import Receipt, approval_digest
from keel.settings import Settings
from tests.contract.spec import Contract
from tools.permissions import PermissionGate
from tools.spec import CallRequest, ThreadFacts, ToolRegistry

THREAD = "contract-thread"


def _gated(domain: Showcase, settings: Settings) -> tuple[ToolRegistry, PermissionGate]:
    tools = gated_registry(domain, settings)
    assert isinstance(tools.gate, PermissionGate)
    return tools, tools.gate


def _receipt(gate: PermissionGate, tool: str, args: dict[str, Any], **over: Any) -> Receipt:
    now = gate.clock()
    fields: dict[str, Any] = {
        "tool": tool, "digest": approval_digest(tool, args), "thread_id": THREAD,
        "approved_by": "contract-suite", "approved_at": now.isoformat(),
        "expires_at": (now + timedelta(hours=1)).isoformat(), "manifest_version": gate.version,
    }  # fmt: skip
    fields.update(over)
    return gate.signer.sign(Receipt(**fields))


def _check(
    gate: PermissionGate, tools: ToolRegistry, agent: str, tool: str, args: dict[str, Any],
    approval: Receipt | None = None, subjects: dict[str, str] | None = None,
) -> tuple[str, str] | None:  # fmt: skip
    facts = ThreadFacts(thread_id=THREAD, subjects=subjects or {})
    request = CallRequest(agent, tools[tool], args, approval_digest(tool, args), facts, approval)
    return gate.check(request, tools)


def test_every_agent_is_denied_every_tool_it_holds_no_grant_for(
    domain: Showcase, settings: Settings
) -> None:
    tools, gate = _gated(domain, settings)
    agents = {**gate.manifest.agents}
    denied = 0
    for agent in [*agents, "intruder"]:
        granted = agents[agent].tools if agent in agents else {}
        for name in tools.names():
            if name in granted:
                continue
            decision = _check(gate, tools, agent, name, {})
            assert decision is not None and decision[0] == "no-grant", (agent, name, decision)
            denied += 1
    # "intruder" alone is denied every tool, so the walk cannot be empty.
    assert denied >= len(tools.names())


def test_a_grant_that_needs_approval_is_denied_without_a_receipt_bound_to_its_call(
    domain: Showcase, settings: Settings
) -> None:
    tools, gate = _gated(domain, settings)
    needing = [
        (agent, tool)
        for agent, policy in gate.manifest.agents.items()
        for tool, grant in policy.tools.items()
        if grant.approval == "required"
    ]
    irreversible = [n for n in tools.names() if tools[n].effect == "irreversible"]
    assert irreversible, "a domain for Keel has at least one irreversible tool"
    assert needing, "an irreversible tool is granted to nobody"
    for agent, tool in needing:
        args, other = {"probe": 1}, {"probe": 2}
        cases = {
            "no receipt": None,
            "a receipt for other arguments": _receipt(gate, tool, other, approved_for=agent),
            "a receipt of another thread": _receipt(
                gate, tool, args, approved_for=agent, thread_id="elsewhere"
            ),
            "a receipt for another agent": _receipt(gate, tool, args, approved_for="someone"),
            "an unsigned receipt": _receipt(gate, tool, args, approved_for=agent).model_copy(
                update={"signature": "0" * 64}
            ),
        }
        for case, receipt in cases.items():
            decision = _check(gate, tools, agent, tool, args, receipt)
            assert decision is not None and decision[0] == "approval", (agent, tool, case)


def test_every_limit_denies_a_value_just_above_it(domain: Showcase, settings: Settings) -> None:
    tools, gate = _gated(domain, settings)
    for agent, policy in gate.manifest.agents.items():
        for tool, grant in policy.tools.items():
            for arg, ceiling in grant.limits.items():
                args = {arg: ceiling + 1}
                receipt = _receipt(gate, tool, args, approved_for=agent)
                decision = _check(gate, tools, agent, tool, args, receipt)
                assert decision is not None and decision[0] == "limit", (agent, tool, arg)


def test_every_scope_of_the_manifest_refuses_the_call_the_domain_declares_for_it(
    domain: Showcase, settings: Settings, contract: Contract
) -> None:
    tools, gate = _gated(domain, settings)
    used = {
        scope: (agent, tool)
        for agent, policy in gate.manifest.agents.items()
        for tool, grant in policy.tools.items()
        for scope in grant.scopes
    }
    missing = sorted(set(used) - set(contract.scopes))
    assert not missing, f"contract.yaml declares no out-of-scope call for scope(s) {missing}"
    for scope, case in contract.scopes.items():
        grant = gate.manifest.agents[case.agent].tools[case.tool]
        assert scope in grant.scopes, f"{case.agent} holds {case.tool} without scope {scope}"
        receipt = _receipt(gate, case.tool, case.args, approved_for=case.agent)
        decision = _check(gate, tools, case.agent, case.tool, case.args, receipt, case.subjects)
        assert decision is not None and decision[0] == f"scope:{scope}", (scope, decision)
