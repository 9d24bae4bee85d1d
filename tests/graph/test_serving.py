"""The graph as a server runs it (``langgraph dev``, an engine worker): no Keel context passed,
the nodes use the process's context built from the environment's settings.

A fresh clone, after ``keel ingest`` and nothing else, must plan its first request: the process's
context prepares the domain's backend as ``keel demo`` and ``KeelApp`` do. Without an index it
refuses, naming the command to run.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graph import context as context_module
from graph.builder import build_graph
from graph.serve_app import app as serve_app
from graph.serve_app import prepared
from keel.errors import CorpusMissing
from keel.settings import Settings
from tests.conftest import REFUND_REQUEST


@pytest.fixture
def fresh_home(indexed_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone's home after ``keel ingest``: the index, no backend; KEEL_HOME points at it."""
    home = tmp_path / "home"
    shutil.copytree(indexed_home, home)
    Settings(home=home, _env_file=None).domain_db.unlink(missing_ok=True)  # type: ignore[call-arg]
    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.chdir(home)
    return home


@pytest.fixture
def process_context() -> Iterator[None]:
    """This process's context starts unbuilt and is forgotten after the test."""
    context_module._process_context.cache_clear()
    yield
    context_module._process_context.cache_clear()


def test_the_server_graph_plans_a_refund_on_a_fresh_home(
    fresh_home: Path, process_context: None
) -> None:
    graph = build_graph(InMemorySaver(), with_context_schema=False)
    config = {"configurable": {"thread_id": str(uuid.uuid4())}}
    message = {"messages": [{"type": "human", "content": REFUND_REQUEST}]}
    out = graph.invoke(message, config, durability="sync")
    assert out["status"] == "awaiting_approval", out.get("answer")
    assert [s.tool for s in out["plan"].steps][-2:] == ["refund_charge", "send_email"]


def test_the_server_graph_repairs_an_empty_backend_left_by_a_failed_run(
    fresh_home: Path, process_context: None
) -> None:
    Settings(home=fresh_home, _env_file=None).domain_db.write_bytes(b"")  # type: ignore[call-arg]
    graph = build_graph(InMemorySaver(), with_context_schema=False)
    config = {"configurable": {"thread_id": str(uuid.uuid4())}}
    out = graph.invoke({"request": REFUND_REQUEST}, config, durability="sync")
    assert out["status"] == "awaiting_approval", out.get("answer")


def test_langgraph_dev_refuses_to_start_without_an_index_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_context: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "empty"))

    async def start() -> None:
        async with prepared(serve_app):
            raise AssertionError("the server started without an index")

    with pytest.raises(CorpusMissing):
        asyncio.run(start())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keel ingest" in err, err
    # The domain was prepared all the same: the next start needs only the index.
    assert Settings(home=tmp_path / "empty", _env_file=None).domain_db.exists()  # type: ignore[call-arg]
