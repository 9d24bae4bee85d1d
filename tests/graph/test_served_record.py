"""A run a server executes is in the flight record, as a `keel run` is: the served graph driven
in-process the way ``langgraph dev`` and Aegra drive it (their checkpointer injected by a copy of
the graph, the server's run id and the thread in the config's metadata, ``astream``), then read
back with ``keel runs``, ``trace``, ``explain`` and ``replay``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command

from domains.support_desk import SupportDesk
from graph import context as context_module
from graph import served as served_module
from graph.served import ServedRuns, served_graph
from graph.state import Evidence, Plan, ToolOutcome
from keel.settings import Settings
from stores.flight_record import BatchedRecord, SqliteFlightRecord
from tests.conftest import REFUND_REQUEST, run_keel


@pytest.fixture
def served(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedRuns]:
    """A served graph's recorder over a process context built from KEEL_HOME=home."""
    monkeypatch.setenv("KEEL_HOME", str(home))
    context_module._process_context.cache_clear()
    runs = ServedRuns()
    yield runs
    process = runs.process()
    if process is not None:
        process.record.close()
    context_module._process_context.cache_clear()


def _serve(graph: Any, payload: Any, thread_id: str, server_run: str) -> None:
    """One run as a server makes it: its own config, ``astream`` with stream modes."""
    config = {
        "configurable": {"thread_id": thread_id},
        "metadata": {"run_id": server_run, "graph_id": "keel"},
    }

    async def drive() -> None:
        async for _ in graph.astream(payload, config, stream_mode=["values", "updates"]):
            pass

    asyncio.run(drive())


def test_a_served_run_and_its_resume_are_one_run_in_the_record(
    served: ServedRuns,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server copies the graph to give it its checkpointer: the recorder goes along.
    graph = served_graph(served).copy(update={"checkpointer": InMemorySaver()})
    thread_id = str(uuid.uuid4())
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    _serve(graph, {"messages": [{"type": "human", "content": REFUND_REQUEST}]}, thread_id, first)
    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}], "reviewer": "rita"}
    _serve(graph, Command(resume=answer), thread_id, second)

    # Everything is written when the run has ended: a reader in another process sees it.
    records = SqliteFlightRecord(home / "records.sqlite")
    events = records.events(first)
    assert events, "the served run is not in the record"
    assert {e.thread_id for e in events} == {thread_id}
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds.count("run_started") == 2
    assert kinds.count("run_ended") == 2
    started = [e.payload for e in events if e.kind == "run_started"]
    assert [s.mode for s in started] == ["run", "resume"]  # type: ignore[union-attr]
    assert started[0].request == REFUND_REQUEST  # type: ignore[union-attr]
    assert "approval_requested" in kinds and "approval_answered" in kinds
    ended = [e.payload for e in events if e.kind == "run_ended"]
    assert [p.status for p in ended] == ["awaiting_approval", "done"]  # type: ignore[union-attr]
    tools = [e.payload.call.tool for e in events if e.kind == "tool_call"]  # type: ignore[union-attr]
    assert "refund_charge" in tools and "send_email" in tools
    # The taps of the process's context went to this run: retrievals, clock readings.
    assert "retrieval" in kinds and "clock" in kinds

    code, listed, _ = run_keel(home, monkeypatch, capsys, "runs", "--json")
    assert code == 0

    [row] = json.loads(listed)["runs"]
    assert row["run_id"] == first and row["status"] == "done" and row["segments"] == 2
    assert row["approvals"] == 1 and row["tool_calls"] >= 2

    code, text, _ = run_keel(home, monkeypatch, capsys, "trace", thread_id)
    assert code == 0
    assert text.splitlines()[0].startswith(f"run {first}")
    assert any(line.startswith("├─ segment 0: run") for line in text.splitlines()), text
    assert "tool refund_charge" in text and "approval requested for refund_charge" in text

    code, why, _ = run_keel(home, monkeypatch, capsys, "explain", first, "--json")
    assert code == 0 and json.loads(why)["status"] == "done"

    code, replayed, _ = run_keel(home, monkeypatch, capsys, "replay", first, "--json")
    assert code == 0
    report = json.loads(replayed)
    assert report["same"] is True, report["first_divergence"]


def test_a_run_the_engine_starts_again_is_a_recover_segment_of_the_same_run(
    served: ServedRuns, home: Path
) -> None:
    """A worker died mid-run: the engine runs the same server run again on another worker."""
    graph = served_graph(served).copy(update={"checkpointer": InMemorySaver()})
    thread_id, server_run = str(uuid.uuid4()), str(uuid.uuid4())
    message = {"messages": [{"type": "human", "content": REFUND_REQUEST}]}
    _serve(graph, message, thread_id, server_run)
    _serve(graph, message, thread_id, server_run)
    started = [
        e.payload for e in SqliteFlightRecord(home / "records.sqlite").events(server_run)
        if e.kind == "run_started"
    ]  # fmt: skip
    assert [s.mode for s in started] == ["run", "recover"]  # type: ignore[union-attr]


def test_a_node_s_effects_are_in_the_record_before_its_writes_are_saved(
    served: ServedRuns, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed after the engine saved ``execute``'s writes would leave the refund and the
    e-mail made and, on the re-run (which applies saved writes without running the node), none
    of their calls or verdicts in the record. So a node that made a write or an irreversible
    call ends with its events written, whatever the batching (here it would wait a minute)."""

    class Lingering(BatchedRecord):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "linger_s": 60.0})

    monkeypatch.setattr(served_module, "BatchedRecord", Lingering)
    record = SqliteFlightRecord(home / "records.sqlite")
    seen_at_save: list[list[str]] = []

    class Saver(InMemorySaver):
        def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            if any(channel == "results" for channel, _ in writes):  # the executor's outcomes
                seen_at_save.append([
                    e.payload.call.tool if e.kind == "tool_call" else e.kind  # type: ignore[union-attr]
                    for e in record.events(server_run)
                    if e.kind in ("tool_call", "verdict")
                ])  # fmt: skip
            super().put_writes(config, writes, task_id, task_path)

    graph = served_graph(served).copy(update={"checkpointer": Saver()})
    thread_id, server_run = str(uuid.uuid4()), str(uuid.uuid4())
    _serve(
        graph, {"messages": [{"type": "human", "content": REFUND_REQUEST}]}, thread_id, server_run
    )
    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}], "reviewer": "rita"}
    _serve(graph, Command(resume=answer), thread_id, str(uuid.uuid4()))
    assert seen_at_save, "the executor's writes were never saved"
    [written] = seen_at_save
    assert "refund_charge" in written and "send_email" in written
    assert written.count("verdict") >= 3  # the plan's, and each step's result check


def test_a_node_s_flush_that_times_out_is_logged_and_the_run_goes_on(
    served: ServedRuns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A record store that hangs holds a node for the flush's bound, then says so; the thread
    still ends (the record is never the run's failure)."""
    monkeypatch.setattr(BatchedRecord, "flush", lambda self, timeout_s=30.0, *, run_id=None: False)
    graph = served_graph(served).copy(update={"checkpointer": InMemorySaver()})
    thread_id = str(uuid.uuid4())
    _serve(graph, {"messages": [{"type": "human", "content": REFUND_REQUEST}]}, thread_id, "r-1")
    answer = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
    _serve(graph, Command(resume=answer), thread_id, "r-2")
    assert graph.get_state({"configurable": {"thread_id": thread_id}}).values["status"] == "done"
    timed_out = [r for r in caplog.records if r.getMessage() == "record_flush_timed_out"]
    assert len(timed_out) == 1  # the executor's node, the one that made the refund and e-mail


def test_the_served_graph_reads_the_server_s_checkpoints_strictly_and_knows_keel_s_types(
    served: ServedRuns, home: Path
) -> None:
    """A server's checkpointer comes with a serializer of its own, permissive by default (every
    type loads, with a "Deserializing unregistered type" warning) or strict
    (LANGGRAPH_STRICT_MSGPACK: unknown types come back as dicts). The served graph gives it Keel's
    allow-list either way: Keel's types load as themselves, nothing unknown loads, no warning."""
    seen: list[dict[str, Any]] = []
    stop = register_serde_event_listener(lambda event: seen.append(dict(event)))
    try:
        for serde in (JsonPlusSerializer(), JsonPlusSerializer(allowed_msgpack_modules=None)):
            SupportDesk().prepare(Settings(home=home, _env_file=None), reset=True)  # type: ignore[call-arg]
            saver = InMemorySaver(serde=serde)
            graph = served_graph(served).copy(update={"checkpointer": saver})
            thread_id = str(uuid.uuid4())
            message = {"messages": [{"type": "human", "content": REFUND_REQUEST}]}
            _serve(graph, message, thread_id, str(uuid.uuid4()))
            answer = {"decisions": [{"type": "approve"}, {"type": "approve"}]}
            _serve(graph, Command(resume=answer), thread_id, str(uuid.uuid4()))
            values = graph.get_state({"configurable": {"thread_id": thread_id}}).values
            assert values["status"] == "done"
            assert isinstance(values["plan"], Plan) and isinstance(values["evidence"][0], Evidence)
            assert all(isinstance(r, ToolOutcome) for r in values["results"])
    finally:
        stop()
    assert seen == [], seen
