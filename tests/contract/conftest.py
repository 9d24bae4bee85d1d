"""The contract suite's fixtures: every test runs once per domain.

The domains come from ``pytest tests/contract --keel-domain=package.module:attribute``
(repeatable), else from ``KEEL_DOMAIN``, else the bundled domains. Each gets a home with its
corpus indexed once per session, and each test a fresh copy with the domain's backend re-seeded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from graph.context import KeelContext
from graph.domain import Showcase, load_showcase
from keel.app import KeelApp
from keel.settings import Settings, domain_folder
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tests.contract.spec import Contract, load_contract

BUNDLED = (
    "domains.support_desk:SupportDesk",
    "domains.incident_desk:IncidentDesk",
    # AgentDojo's banking suite through the generic adapter (slack and travel pass too:
    # --keel-domain=domains.agentdojo.slack:Slack, domains.agentdojo.travel:Travel).
    "domains.agentdojo.banking:Banking",
)


def contract_domains(config: pytest.Config) -> list[str]:
    chosen: list[str] = config.getoption("keel_domain") or []
    if not chosen and os.environ.get("KEEL_DOMAIN"):
        chosen = [os.environ["KEEL_DOMAIN"]]
    return chosen or list(BUNDLED)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "domain_spec" in metafunc.fixturenames:
        specs = contract_domains(metafunc.config)
        metafunc.parametrize("domain_spec", specs, ids=[s.split(":")[0] for s in specs],
                             scope="session")  # fmt: skip


def settings_for(spec: str, home: Path, **overrides: object) -> Settings:
    return Settings(home=home, domain=spec, _env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def domain(domain_spec: str) -> Showcase:
    return load_showcase(domain_spec)


@pytest.fixture(scope="session")
def contract(domain_spec: str) -> Contract:
    return load_contract(domain_folder(domain_spec))


@pytest.fixture(scope="session")
def indexed(domain_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose index holds the domain's corpus (built once per domain and session)."""
    home = tmp_path_factory.mktemp("contract-index")
    settings = settings_for(domain_spec, home)
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    return home


@pytest.fixture
def settings(domain_spec: str, domain: Showcase, indexed: Path, tmp_path: Path) -> Settings:
    """A fresh home: a copy of the session's index and the domain's backend seeded anew."""
    home = tmp_path / "home"
    shutil.copytree(indexed, home)
    fresh = settings_for(domain_spec, home)
    domain.prepare(fresh, reset=True)
    return fresh


@pytest.fixture
def app(settings: Settings, domain: Showcase) -> Iterator[KeelApp]:
    with KeelApp.open(settings, KeelContext.from_settings(settings, domain=domain)) as opened:
        yield opened


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that checks a part of ``contract.yaml`` a domain may leave out is deselected for
    that domain (not skipped: there is nothing of it to check)."""
    keep, dropped = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        domain_spec = spec.params.get("domain_spec") if spec else None
        own_poison = item.name.startswith("test_the_domains_own_poisoned_document")
        if (
            domain_spec
            and own_poison
            and load_contract(domain_folder(domain_spec)).poisoned is None
        ):
            dropped.append(item)
            continue
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
