"""The domain seam as a domain author meets it (``graph.domain``): one module to import Keel
from, tools declared (never wrapped by the domain), scopes in one line, and the runtime apart from
the showcase. ``tests/contract/test_new_domain.py`` holds ``keel new-domain``'s output to the
same."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from domains.support_desk import SupportDesk
from graph.domain import (
    AgentTools,
    DomainDefaults,
    Scope,
    Settings,
    ThreadFacts,
    ToolRegistry,
    as_showcase,
    gated_registry,
    load_domain,
    read_record,
    tool_registry,
)
from keel.errors import ConfigError, Permanent, PermissionDenied, Retryable
from keel.newdomain import new_domain

REPO = Path(__file__).resolve().parents[2]
KEEL_PACKAGES = {
    "keel", "graph", "agents", "retrieval", "tools", "observability", "evals", "stores",
}  # fmt: skip
"""The template's own packages (pyproject's ``root_packages``; ``stores`` once it exists)."""
SEAM = "graph.domain"
EXAMPLES = ("support_desk", "incident_desk", "agentdojo")
KEEL_MACHINERY = ("FaultInjector", "RetryPolicy", "Breaker", "faults.wrap")


def keel_imports(files: list[Path], own: str | None = None) -> dict[str, list[str]]:
    """Every module of Keel the files import (absolute imports; a package's relative imports
    and ``own``, the domain's own package, are its own), with the files that import it."""
    found: dict[str, list[str]] = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if own is not None and (name == own or name.startswith(own + ".")):
                    continue
                if top in KEEL_PACKAGES or top == "domains":
                    found.setdefault(name, []).append(file.name)
    return found


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_domain_imports_keel_from_the_seam_alone(name: str) -> None:
    files = sorted((REPO / "domains" / name).rglob("*.py"))
    assert files
    assert set(keel_imports(files, own=f"domains.{name}")) == {SEAM}


def test_a_generated_domain_imports_keel_from_the_seam_alone(tmp_path: Path) -> None:
    folder, _ = new_domain("author_desk", tmp_path)
    assert set(keel_imports(sorted(folder.rglob("*.py")))) == {SEAM}


@pytest.mark.parametrize("folder", [*(f"domains/{n}" for n in EXAMPLES), "keel/templates/domain"])
def test_no_domain_assembles_keels_resilience_itself(folder: str) -> None:
    """The fault layer, retries and breakers are Keel's: a domain declares tools and stops."""
    for file in sorted((REPO / folder).rglob("*")):
        if file.suffix not in (".py", ".tmpl"):
            continue
        text = file.read_text(encoding="utf-8")
        named = [word for word in KEEL_MACHINERY if word in text]
        assert not named, f"{file.relative_to(REPO)} mentions {named}"


def test_the_seam_exports_every_name_the_domains_import_from_it(tmp_path: Path) -> None:
    import graph.domain

    folder, _ = new_domain("author_desk", tmp_path)
    for file in [*(REPO / "domains").rglob("*.py"), *folder.rglob("*.py")]:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == SEAM:
                for alias in node.names:
                    assert alias.name in graph.domain.__all__, (file.name, alias.name)


def test_keel_wraps_declared_tools_with_the_fault_profile_and_shared_breakers(
    tmp_path: Path,
) -> None:
    """``tool_registry`` is where the domain's own profile (``outage`` of billing) is applied and
    the breakers come from the home's store: a second registry sees the first one's open breaker.
    """
    settings = Settings(home=tmp_path, faults="outage", tool_retry_attempts=1, _env_file=None)  # type: ignore[call-arg]
    desk = SupportDesk()
    desk.prepare(settings, reset=True)
    declared = desk.tools(settings)
    assert all(not isinstance(spec, ToolRegistry) for spec in declared)
    tools = gated_registry(desk, settings)
    with pytest.raises(Retryable, match="billing: connection refused"):
        tools.call("get_invoice", {"invoice_id": "INV-2001"}, agent="validator", fallback=False)
    # crm is not in the outage profile: its calls go through.
    assert tools.call("get_customer", {"customer_id": "C-1001"}, agent="validator")
    failures = tools.breakers["billing"].failures
    assert failures >= 1 and tools.breakers["crm"].failures == 0
    # A registry built anew (another process, a later command) shares the billing breaker.
    assert tool_registry(desk, settings).breakers["billing"].failures == failures
    calm = gated_registry(desk, settings.model_copy(update={"faults": "none"}))
    invoice = calm.call("get_invoice", {"invoice_id": "INV-2001"}, agent="validator")
    assert invoice["invoice_id"] == "INV-2001"


def test_the_registry_takes_the_breakers_of_the_stores_it_is_given(tmp_path: Path) -> None:
    """A context built on opened stores uses their breakers, not a second set opened again."""
    from dataclasses import replace

    from graph.context import KeelContext
    from stores.backends import open_stores
    from stores.breakers import SqliteBreakers

    settings = Settings(home=tmp_path, faults="outage", tool_retry_attempts=1, _env_file=None)  # type: ignore[call-arg]
    desk = SupportDesk()
    desk.prepare(settings, reset=True)
    own = SqliteBreakers(tmp_path / "other-breakers.sqlite")
    stores = replace(open_stores(settings), breakers=own)
    ctx = KeelContext.from_settings(settings, domain=desk, stores=stores)
    with pytest.raises(Retryable):
        ctx.tools.call("get_invoice", {"invoice_id": "INV-2001"}, agent="validator", fallback=False)
    assert own.breaker("billing").failures >= 1
    assert open_stores(settings).breakers.breaker("billing").failures == 0


def test_a_domain_written_for_the_old_seam_gets_one_clear_line(tmp_path: Path) -> None:
    """``tools`` returning a registry (what the seam asked for before Keel wrapped the tools)."""

    class OldSeam(SupportDesk):
        def tools(self, settings: Settings) -> Any:
            return ToolRegistry(list(super().tools(settings)))

    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"OldSeam\.tools returned a ToolRegistry: it declares"):
        tool_registry(OldSeam(), settings)


def test_an_entity_scope_is_one_line_and_reads_only_its_argument() -> None:
    scope = Scope.entity_in_request("owner_id", subject="customer_id")
    facts = ThreadFacts(subjects={"customer_id": "C-1"})
    tools: Any = None  # the check reads no tool
    assert scope.reads == frozenset({"owner_id"})
    assert scope.check({"owner_id": "C-1"}, facts, tools) is None
    assert scope.check({"owner_id": "C-2"}, facts, tools) == (
        "owner C-2 is not the one the request names (C-1)"
    )
    assert scope.check({"owner_id": "C-1"}, ThreadFacts(), tools) == (
        "owner C-1 is not the one the request names (None)"
    )


class _RuntimeOnly(DomainDefaults):
    """A domain with what the runtime needs and nothing for the demo or the evals."""

    name = "runtime_only"
    planner_role = "a test"
    subject_keys = frozenset[str]()

    def prepare(self, settings: Settings, *, reset: bool = False) -> None: ...
    def is_prepared(self, settings: Settings) -> bool:
        return True

    def tools(self, settings: Settings) -> list[Any]:
        return []

    def extract_entities(self, request: str) -> dict[str, str]:
        return {}

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        return {}

    def runbook_plan(self, *args: Any) -> Any: ...
    def plan_rules(self, *args: Any) -> list[str]:
        return []

    def postconditions(self, *args: Any) -> list[str]:
        return []

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {}


RUNTIME_ONLY = _RuntimeOnly


def test_the_runtime_needs_no_showcase_and_the_demo_says_what_is_missing() -> None:
    domain = load_domain(f"{__name__}:RUNTIME_ONLY")
    assert domain.name == "runtime_only"
    with pytest.raises(ConfigError, match="demo_requests, demo_summary, snapshot"):
        as_showcase(domain)
    assert as_showcase(SupportDesk()).snapshot  # the example domains are showcases too
    with pytest.raises(PermissionDenied):  # a domain's tools still go through the gate only
        tool_registry(SupportDesk(), Settings(_env_file=None)).call(  # type: ignore[call-arg]
            "get_customer", {"customer_id": "C-1001"}, agent="validator"
        )


class _Systems:
    """A caller's tools whose answers are scripted by tool name."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers

    def call(self, tool: str, args: dict[str, Any]) -> Any:
        answer = self.answers[tool]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_record_read_is_filed_as_read_unavailable_or_missing() -> None:
    tools: Any = _Systems(
        get_order={"order_id": "O-1"},
        get_parcel=Retryable("carrier: 503"),
        get_invoice=PermissionDenied("no grant", rule="no-grant"),
        get_customer=Permanent("no customer C-9"),
    )
    records: dict[str, Any] = {}
    assert read_record(records, "order", tools, "get_order", {"order_id": "O-1"}) == "read"
    assert read_record(records, "parcel", tools, "get_parcel", {"parcel_id": "P-1"}) == (
        "unavailable"
    )
    assert read_record(records, "invoice", tools, "get_invoice", {"invoice_id": "I-1"}) == (
        "unavailable"
    )
    assert read_record(records, "customer", tools, "get_customer", {"customer_id": "C-9"}) == (
        "missing"
    )
    assert records == {
        "order": {"order_id": "O-1"},
        "unavailable": ["P-1: carrier: 503", "I-1: no grant"],
        "missing": ["C-9: no customer C-9"],
    }
