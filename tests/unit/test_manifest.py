"""The permission manifest: what loads, what is refused (naming the line), and the access review."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domains.support_desk import MANIFEST, SupportDesk
from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from keel.errors import ConfigError
from tools.permissions import (
    access_diff,
    effective_access,
    load_manifest,
    lock_path,
    manifest_digest,
    parse_manifest,
)
from tools.spec import ToolRegistry

SCOPES = SupportDesk().scopes()


@pytest.fixture(scope="module")
def tools() -> ToolRegistry:
    # A registry is only read here (names, effects, fallbacks); no call reaches the backend.
    return ToolRegistry(demo_tools(DemoBackend(Path("/nonexistent/demo.sqlite"))))


def _parse(text: str, tools: ToolRegistry) -> None:
    parse_manifest(text, "m.yaml", tools, SCOPES)


GOOD = """\
version: "1"
agents:
  executor:
    effects: [read, irreversible]
    tools:
      get_customer: {}
      send_email:
        approval: required
        scopes: [recipient_is_the_customer]
"""


def test_the_shipped_manifest_loads(tools: ToolRegistry) -> None:
    manifest = load_manifest(MANIFEST, tools, SCOPES)
    assert set(manifest.agents) == {"retriever", "planner", "validator", "executor", "health"}
    assert manifest.agents["validator"].effects == ["read"]


def test_a_small_manifest_loads(tools: ToolRegistry) -> None:
    _parse(GOOD, tools)


def test_no_manifest_means_no_gate(tools: ToolRegistry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="denies every tool call"):
        load_manifest(tmp_path / "missing.yaml", tools, SCOPES)


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("      get_customer: {}", "      wire_money: {}"), 6, "no tool named 'wire_money'"),
        (("        approval: required\n", ""), 7, "needs `approval: required`"),
        (("effects: [read, irreversible]", "effects: [read]"), 7, "agent's effects"),
        (("recipient_is_the_customer", "anyone"), 7, "unknown scope"),
        (("      get_customer: {}", "      get_customer: {bcc: x}"), 6, "Extra inputs"),
        (("effects: [read, irreversible]", "effects: [read, delete]"), 4, "Input should be"),
        (('version: "1"\n', ""), 1, "Field required"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_line(
    tools: ToolRegistry, change: tuple[str, str], line: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _parse(GOOD.replace(*change), tools)
    assert str(caught.value).startswith(f"m.yaml:{line}:")


def test_a_limit_on_an_argument_the_tool_lacks_is_refused(tools: ToolRegistry) -> None:
    text = GOOD.replace("scopes: [recipient_is_the_customer]", "limits: {amount: 10}")
    with pytest.raises(ConfigError, match="limits name argument"):
        _parse(text, tools)


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        # A second block for the same agent, granting more: the last one must not win quietly.
        (GOOD + "  executor:\n    effects: [read]\n    tools: {}\n", 10, "executor"),
        (GOOD.replace("approval: required", "approval: required\n        approval: none"), 9,
         "approval"),
        (GOOD.replace('version: "1"', 'version: "1"\nversion: "2"'), 2, "version"),
    ],
)  # fmt: skip
def test_a_duplicate_key_anywhere_is_refused_naming_its_line(
    tools: ToolRegistry, text: str, line: int, key: str
) -> None:
    with pytest.raises(ConfigError, match=f"duplicate key '{key}'") as caught:
        _parse(text, tools)
    assert str(caught.value).startswith(f"m.yaml:{line}:")


def test_a_limit_on_an_argument_that_is_not_a_number_is_refused(tools: ToolRegistry) -> None:
    # Otherwise it loads and is never enforced: the gate compares numbers only.
    text = GOOD.replace("scopes: [recipient_is_the_customer]", "limits: {to: 3}")
    with pytest.raises(ConfigError, match="numeric") as caught:
        _parse(text, tools)
    assert str(caught.value).startswith("m.yaml:7:")


def test_a_scope_that_does_not_fit_its_tool_is_refused(tools: ToolRegistry) -> None:
    # customer_in_request reads customer_id, which send_email does not take.
    text = GOOD.replace("recipient_is_the_customer", "customer_in_request")
    with pytest.raises(ConfigError, match=r"customer_in_request.*customer_id") as caught:
        _parse(text, tools)
    assert str(caught.value).startswith("m.yaml:7:")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_is_refused_cleanly(text: str) -> None:
    registry = ToolRegistry(demo_tools(DemoBackend(Path("/nonexistent/demo.sqlite"))))
    with contextlib.suppress(ConfigError):  # refused with a message: the only other outcome
        _parse(text, registry)


def test_effective_access_matches_the_reviewed_lock(tools: ToolRegistry) -> None:
    """Access never changes quietly: a new tool, fallback or grant shows here first.

    After a reviewed change: `keel access --diff HEAD`, then `keel access --lock`.
    """
    lock = json.loads(lock_path(MANIFEST).read_text())
    current = effective_access(load_manifest(MANIFEST, tools, SCOPES), tools)
    assert lock["manifest"] == manifest_digest(MANIFEST), "manifest changed: re-lock"
    assert current == lock["access"], access_diff(lock["access"], current)


def test_a_fallback_added_to_a_granted_tool_grows_access_without_a_manifest_change(
    tools: ToolRegistry,
) -> None:
    # What the lock test above catches: the same manifest, one more way to act.
    manifest = load_manifest(MANIFEST, tools, SCOPES)
    before = effective_access(manifest, tools)
    grown = ToolRegistry(
        [replace(tools[n], fallback="refund_charge_legacy") if n == "send_email" else tools[n]
         for n in tools.names()]
    )  # fmt: skip
    diff = access_diff(before, effective_access(manifest, grown))
    assert any(
        "send_email" in line and "via refund_charge_legacy" in line for line in diff["added"]
    )


def test_processes_starting_together_share_one_whole_approval_key(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tools.permissions import ReceiptSigner

    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: ReceiptSigner.for_home(tmp_path).key, range(32)))
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["approval.key"]
