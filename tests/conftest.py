"""Shared fixtures: settings on a temporary home, a prepared corpus index, a fresh demo backend.

No test reaches a real model: the settings used here name no planner model, and the tests that
drive the LLM path pass a langchain-core fake chat model in explicitly (said so where it is).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from domains.support_desk import SupportDesk
from domains.support_desk.backend import DemoBackend
from graph.context import KeelContext
from keel.app import KeelApp
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore

APPROVAL_KEY = {"KEEL_APPROVAL_KEY": "5e" * 32}
"""The receipts' key every worker of a Postgres test shares (Postgres refuses to run without)."""
REFUND_REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
BILLING_ADDRESS = "finance@hopper.example"
BILLING_REQUEST = f"Please update the billing e-mail of C-1002 to {BILLING_ADDRESS}"
EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s]+"
"""The e-mail preset docs/observability.md documents for KEEL_SENSITIVE_PATTERNS."""


def run_keel(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """``keel ARGV`` in this process on ``home``: its exit code, stdout and stderr. The working
    directory is the home, so no stray ``.env`` from the developer's checkout is read."""
    from keel.cli import main

    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.chdir(home)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pytest_sessionstart(session: pytest.Session) -> None:
    """A CI timeout stops a test run with SIGTERM: make it an orderly stop, as Ctrl-C is, so the
    fixtures' servers are stopped and their folders removed (keel.servers)."""
    import signal

    from keel.servers import Terminated

    def terminated(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signal.Signals(signum).name}")

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, terminated)


@pytest.fixture(autouse=True)
def _no_model_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own OPENAI_API_KEY or KEEL_* variables must not leak into the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("KEEL_") or name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")


@pytest.fixture(scope="session")
def indexed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose Chroma index holds the demo corpus (built once per session)."""
    home = tmp_path_factory.mktemp("keel-index")
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    return home


@pytest.fixture
def home(indexed_home: Path, tmp_path: Path) -> Path:
    """A fresh home per test: a copy of the session's index and a newly seeded demo backend."""
    target = tmp_path / "home"
    shutil.copytree(indexed_home, target)
    SupportDesk().prepare(Settings(home=target, _env_file=None), reset=True)  # type: ignore[call-arg]
    return target


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def backend(settings: Settings) -> DemoBackend:
    return DemoBackend(settings.domain_db)


@pytest.fixture
def app(settings: Settings) -> Iterator[KeelApp]:
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as opened:
        yield opened


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--keel-domain``: the domain(s) the contract suite (tests/contract) runs against."""
    parser.addoption(
        "--keel-domain", action="append", metavar="PACKAGE.MODULE:ATTRIBUTE",
        help="run the contract suite (tests/contract) against this domain (repeatable; default: "
        "KEEL_DOMAIN, else every bundled domain)",
    )  # fmt: skip
