"""The flight record's schema, redaction and store: typed, versioned, append-only, durable."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from keel.errors import BadRequest, StoreUnavailable
from keel.settings import Settings
from observability.logs import JsonFormatter
from observability.record_events import (
    SCHEMA_VERSION,
    ApprovalRequested,
    ClockRead,
    NodeLeft,
    RecordEvent,
    RunEnded,
    RunStarted,
    ToolCallMade,
    VerdictGiven,
)
from observability.recorder import Recorder
from observability.redaction import REDACTED, Redactor
from stores.flight_record import BatchedRecord, RunNotFound, SqliteFlightRecord
from tests.conftest import BILLING_ADDRESS as ADDRESS
from tests.conftest import EMAIL_PATTERN as EMAIL
from tools.spec import ToolEvent

SENSITIVE = ["api_key", "password", "token"]


def _tool_event(**overrides: Any) -> ToolEvent:
    fields: dict[str, Any] = {
        "agent": "executor", "tool": "refund_charge", "effect": "irreversible",
        "args": {"charge_id": "CH-3002", "amount": 49.0}, "digest": "sha256:abc",
        "thread_id": "t-1", "decision": "allowed", "ok": True, "output": {"status": "settled"},
    }  # fmt: skip
    fields.update(overrides)
    return ToolEvent(**fields)


def _event(**overrides: Any) -> RecordEvent:
    fields: dict[str, Any] = {
        "run_id": "run-1", "thread_id": "t-1", "segment": 0, "at": "2026-01-01T00:00:00+00:00",
        "payload": ClockRead(value="2026-01-01T00:00:00+00:00"),
    }  # fmt: skip
    fields.update(overrides)
    return RecordEvent(**fields)


def test_an_event_round_trips_through_the_store_with_its_type(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    store.append(_event(payload=ToolCallMade(call=_tool_event()), node="execute", step=6))
    [back] = store.events("run-1")
    assert back.seq == 1 and back.schema_version == SCHEMA_VERSION
    assert isinstance(back.payload, ToolCallMade)
    assert back.payload.call == _tool_event()
    assert (back.node, back.step, back.kind) == ("execute", 6, "tool_call")


def test_the_schema_refuses_smuggled_fields_and_unknown_kinds() -> None:
    with pytest.raises(ValidationError):
        RecordEvent.model_validate({**_event().model_dump(), "extra": 1})
    with pytest.raises(ValidationError):
        RecordEvent.model_validate({**_event().model_dump(), "payload": {"kind": "gossip"}})
    with pytest.raises(ValidationError):
        RunEnded.model_validate({"status": "done", "duration_ms": 1, "smuggled": True})


def test_an_event_of_another_schema_version_is_refused_on_read(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    store.append(_event())
    raw = sqlite3.connect(tmp_path / "r.sqlite")
    raw.execute(
        "INSERT INTO events (schema_version, run_id, thread_id, segment, kind, at, payload)"
        " VALUES (99, 'run-1', 't-1', 0, 'clock', 'x', '{}')"
    )
    raw.commit()
    with pytest.raises(BadRequest, match="schema 99"):
        store.events("run-1")


def test_the_store_is_append_only(tmp_path: Path) -> None:
    SqliteFlightRecord(tmp_path / "r.sqlite").append(_event())
    raw = sqlite3.connect(tmp_path / "r.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE events SET kind = 'run_ended'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("DELETE FROM events")
    assert raw.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_an_appended_event_is_committed_before_append_returns(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    store.append(_event())
    # Another connection (another process, after a crash) sees it without any close or flush.
    other = sqlite3.connect(tmp_path / "r.sqlite")
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_run_is_found_by_id_thread_or_prefix_and_an_unknown_one_is_refused(
    tmp_path: Path,
) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    store.append(_event(run_id="abcd-1234"))
    store.append(_event(run_id="abce-9999", thread_id="t-2"))
    assert store.resolve("abcd-1234") == "abcd-1234"
    assert store.resolve("t-2") == "abce-9999"
    assert store.resolve("abcd") == "abcd-1234"
    with pytest.raises(RunNotFound, match="more than one"):
        store.resolve("abc")
    with pytest.raises(RunNotFound, match="no recorded run"):
        store.resolve("zzzz")


def test_redaction_keeps_keys_and_hides_values_at_any_depth() -> None:
    redact = Redactor(SENSITIVE)
    data = {"openai_api_key": "sk-1", "x": [{"Password": "p", "input_tokens": 12}], "n": 1}
    assert redact(data) == {
        "openai_api_key": REDACTED,
        "x": [{"Password": REDACTED, "input_tokens": 12}],
        "n": 1,
    }


_keys = st.sampled_from(["token", "api_key", "Password", "name", "amount", "input_tokens", "x"])
_json = st.recursive(
    st.none() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=20,
)


def _leaks(value: Any, redact: Redactor) -> bool:
    if isinstance(value, dict):
        return any(
            (redact.sensitive(k) and v != REDACTED) or _leaks(v, redact) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_leaks(v, redact) for v in value)
    return False


@given(_json)
def test_no_sensitive_value_survives_redaction(value: Any) -> None:
    redact = Redactor(SENSITIVE)
    out = redact(value)
    assert not _leaks(out, redact)
    assert redact(out) == out  # idempotent


def test_the_recorder_redacts_before_storing_and_logs_the_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    recorder = Recorder(store, Redactor(SENSITIVE))
    recorder.start(run_id="run-1", thread_id="t-1", trace_id="trace-1")
    secret = _tool_event(args={"customer_id": "C-1", "api_token": "s3cret"}, output={"token": "x"})
    with caplog.at_level(logging.INFO, logger="keel.record"):
        recorder.on_tool_event(secret)
    raw = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT payload FROM events").fetchone()
    assert "s3cret" not in raw[0] and '"x"' not in raw[0]
    [event] = store.events("run-1")
    assert isinstance(event.payload, ToolCallMade)
    assert event.payload.call.args == {"customer_id": "C-1", "api_token": REDACTED}
    [log] = caplog.records
    line = json.loads(JsonFormatter().format(log))
    assert (line["run_id"], line["thread_id"], line["trace_id"], line["event"]) == (
        "run-1", "t-1", "trace-1", "tool_call",
    )  # fmt: skip


def test_outside_a_run_the_recorder_writes_nothing(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    Recorder(store, Redactor(SENSITIVE)).on_tool_event(_tool_event())
    assert store.count() == 0


def test_segments_number_on_within_a_run(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    recorder = Recorder(store, Redactor([]))
    for mode in ("run", "resume"):
        recording = recorder.start(run_id="run-1", thread_id="t-1", trace_id=mode)
        recording.emit(RunStarted(mode=mode, trace_id=mode))  # type: ignore[arg-type]
        recording.emit(NodeLeft(outputs={}))
    assert [e.segment for e in store.events("run-1")] == [0, 0, 1, 1]


def test_a_pattern_is_redacted_in_every_string_and_the_event_keeps_its_schema() -> None:
    redact = Redactor(SENSITIVE, [EMAIL])
    call = _tool_event(
        args={"customer_id": "C-1002", "email": ADDRESS},
        output={"billing_email": ADDRESS, f"notified {ADDRESS}": True},
        reason=f"the customer asked for {ADDRESS}",
        digest="sha256:" + "a" * 64,
    )
    payloads = [
        ToolCallMade(call=call),
        RunStarted(mode="run", request=f"update the billing e-mail to {ADDRESS}", trace_id="t-1"),
        RunEnded(status="done", answer=f"now {ADDRESS}", duration_ms=1.0),
        VerdictGiven(stage="result", ok=False, reasons=[f"billing e-mail is still {ADDRESS}"]),
        ApprovalRequested(
            interrupt_id="i-1",
            request={
                "action_requests": [
                    {"name": "update_billing_email", "args": {}, "description": f"set {ADDRESS}"}
                ],
                "review_configs": [
                    {"action_name": "update_billing_email", "allowed_decisions": ["approve"]}
                ],
                "digests": ["sha256:" + "b" * 64],
                "steps": [0],
                "manifest_version": "1",
                "tainted_evidence": [],
            },
        ),
    ]
    for payload in payloads:
        clean = redact.model(payload)
        event = _event(payload=clean)
        dumped = event.model_dump_json()
        assert ADDRESS not in dumped and REDACTED in dumped
        assert RecordEvent.model_validate_json(dumped) == event  # still fits its schema
        assert redact.model(clean) == clean  # idempotent
    tool = redact.model(payloads[0])
    assert isinstance(tool, ToolCallMade)
    # Literal fields and identifiers are the schema's, never rewritten.
    assert (tool.call.effect, tool.call.decision, tool.call.digest) == (
        "irreversible", "allowed", "sha256:" + "a" * 64,
    )  # fmt: skip
    assert tool.call.args == {"customer_id": "C-1002", "email": REDACTED}


def test_a_value_seen_under_a_sensitive_key_is_scrubbed_from_the_free_text_of_its_run() -> None:
    redact = Redactor(["email", "to"])
    redact.begin("run-1")
    # Within one value, even where the free text comes before the key.
    assert redact({"purpose": f"set {ADDRESS}", "args": {"email": ADDRESS}}) == {
        "purpose": f"set {REDACTED}",
        "args": {"email": REDACTED},
    }
    # And later in the run, anywhere: a declared string field of a typed event too.
    answer = redact.model(RunEnded(status="done", answer=f"Updated to {ADDRESS}.", duration_ms=1))
    assert answer.answer == f"Updated to {REDACTED}."
    # Short values are redacted where they stand but not hunted in text ("no" is everywhere).
    assert redact({"to": "no", "note": "no news"}) == {"to": REDACTED, "note": "no news"}
    # Another run starts with nothing learned.
    redact.begin("run-2")
    assert redact({"note": ADDRESS}) == {"note": ADDRESS}


def test_values_are_learned_from_state_without_emitting_anything() -> None:
    redact = Redactor(["email"])
    redact.begin("run-1")
    redact.learn({"plan": {"steps": [{"args": {"email": {"new": ADDRESS}}}]}})
    assert redact.text(f"mail {ADDRESS} today") == f"mail {REDACTED} today"


def test_the_recorder_scrubs_free_text_before_storing(tmp_path: Path) -> None:
    store = SqliteFlightRecord(tmp_path / "r.sqlite")
    recorder = Recorder(store, Redactor(["email"]))
    recorder.start(run_id="run-1", thread_id="t-1", trace_id="trace-1")
    recorder.on_tool_event(_tool_event(args={"email": ADDRESS}))
    recorder.emit(RunEnded(status="done", answer=f"Updated to {ADDRESS}", duration_ms=1))
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT payload FROM events").fetchall()
    assert len(rows) == 2 and not any(ADDRESS in row[0] for row in rows)
    assert [e.kind for e in store.events("run-1")] == ["tool_call", "run_ended"]


_word = st.sampled_from(["update", "C-1002", "to", "e-mail", "@", "a.b", "x@y", ADDRESS, "ö@ü.de"])


@given(st.lists(_word, max_size=12).map(" ".join), st.dictionaries(_keys, st.text(max_size=8)))
def test_no_pattern_match_survives_redaction(text: str, extra: dict[str, str]) -> None:
    redact = Redactor(SENSITIVE, [EMAIL])
    out = redact({"text": text, "nested": [text, {**extra, "t": text}]})
    assert not re.search(EMAIL, json.dumps(out, ensure_ascii=False))
    assert redact(out) == out


def test_a_pattern_that_matches_nothing_visible_inserts_nothing() -> None:
    # A pattern with empty matches (a word boundary) must not put a placeholder between words.
    assert Redactor([], [r"\b|secret"]).text("a secret word") == f"a {REDACTED} word"


def test_sensitive_patterns_are_read_as_json_and_checked_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_SENSITIVE_PATTERNS", json.dumps([EMAIL]))
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.sensitive_patterns == [EMAIL]
    assert Redactor.from_settings(settings).text(ADDRESS) == REDACTED
    assert Settings(home=tmp_path, _env_file=None, sensitive_patterns=[]).sensitive_patterns == []  # type: ignore[call-arg]
    for bad, why in (("[unclosed", "not a regular expression"), ("a*", "matches the empty")):
        monkeypatch.setenv("KEEL_SENSITIVE_PATTERNS", json.dumps([bad]))
        with pytest.raises(ValidationError, match=f"KEEL_SENSITIVE_PATTERNS.*{why}"):
            Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]


def test_by_default_no_pattern_is_set() -> None:
    assert Settings.model_fields["sensitive_patterns"].default_factory() == []  # type: ignore[call-arg, misc]


@pytest.mark.parametrize(("mode", "pragma"), [("NORMAL", 1), ("FULL", 2)])
def test_the_app_records_with_the_synchronous_mode_the_settings_name(
    tmp_path: Path, mode: str, pragma: int
) -> None:
    from keel.app import KeelApp

    settings = Settings(home=tmp_path, record_sync=mode, _env_file=None)  # type: ignore[call-arg]
    with KeelApp.open(settings) as app:
        assert app.recorder is not None
        conn = app.recorder.flight_record._db()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_runs_record_with_normal_sync_by_default() -> None:
    # What a SIGKILL leaves of a NORMAL record is checked end to end by
    # tests/integration/test_record_crash.py, which runs on this default.
    assert Settings(_env_file=None).record_sync == "NORMAL"  # type: ignore[call-arg]


class _Counting(SqliteFlightRecord):
    """The SQLite record, counting its transactions; ``refuse`` makes it an outage."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.refuse = False

    def append_many(self, events: list[RecordEvent]) -> None:
        if self.refuse:
            raise StoreUnavailable(self.where, "flight recorder: disk I/O error")
        self.batches.append(len(events))
        super().append_many(events)


def test_a_batched_record_writes_behind_and_a_read_sees_everything_appended(
    tmp_path: Path,
) -> None:
    inner = _Counting(tmp_path / "records.sqlite")
    record = BatchedRecord(inner)
    events = [_event(segment=i) for i in range(200)]
    for event in events:
        assert record.append(event) == 0  # queued: the caller does not wait for the disk
    assert [e.segment for e in record.events("run-1")] == list(range(200))
    assert sum(inner.batches) == 200 and len(inner.batches) < 200  # batches, not one by one
    # Another reader (another process) sees them once flushed.
    assert SqliteFlightRecord(tmp_path / "records.sqlite").count() == 200
    record.close()


def test_a_batched_record_gathers_events_that_arrive_one_by_one(tmp_path: Path) -> None:
    """A served run emits its events one at a time, a few ms apart: the writer waits a moment
    for the next ones (``linger_s``) instead of one transaction per event (issue 26), and a
    flush (a run's end, a read) does not wait for that moment."""
    inner = _Counting(tmp_path / "records.sqlite")
    record = BatchedRecord(inner, linger_s=0.2)
    for i in range(10):
        record.append(_event(segment=i))
        time.sleep(0.005)
    assert record.flush(timeout_s=10)
    assert sum(inner.batches) == 10 and len(inner.batches) <= 2
    patient = BatchedRecord(_Counting(tmp_path / "other.sqlite"), linger_s=60)
    started = time.perf_counter()
    patient.append(_event())
    assert patient.flush(timeout_s=10) and time.perf_counter() - started < 5
    patient.close()
    record.close()


def test_a_batched_record_loses_a_batch_to_an_outage_and_never_raises_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = _Counting(tmp_path / "records.sqlite")
    record = BatchedRecord(inner)
    inner.refuse = True
    with caplog.at_level(logging.WARNING, logger="keel.record"):
        record.append(_event())
        assert record.flush(timeout_s=10)
    assert record.lost == 1
    assert [r.getMessage() for r in caplog.records] == ["record_event_lost"]
    inner.refuse = False
    record.append(_event(segment=1))
    assert [e.segment for e in record.events("run-1")] == [1]
    assert record.lost == 0  # the store is back
    record.close()


class _Held(SqliteFlightRecord):
    """The SQLite record whose batches wait for ``release`` while they hold ``held``'s events."""

    def __init__(self, path: Path, held: str) -> None:
        super().__init__(path)
        self.held = held
        self.release = threading.Event()
        self.writing = threading.Event()

    def append_many(self, events: list[RecordEvent]) -> None:
        if any(e.thread_id == self.held for e in events):
            self.writing.set()
            self.release.wait(30)
        super().append_many(events)


def test_a_run_start_reads_its_own_threads_record_without_waiting_for_other_threads(
    tmp_path: Path,
) -> None:
    """A served run's start asks the record which segment it opens (issue 26): it waits for its
    own thread's queued events, not for the commit of every other run's, and asks once."""
    inner = _Held(tmp_path / "records.sqlite", held="t-busy")
    record = BatchedRecord(inner, linger_s=0)
    record.append(_event(run_id="run-a", thread_id="t-1", segment=0))
    record.append(_event(run_id="run-a", thread_id="t-1", segment=1))
    assert record.latest_segment("t-1") == ("run-a", 1)  # its own events, written first
    assert record.latest_segment("t-new") is None
    record.append(_event(run_id="run-busy", thread_id="t-busy"))
    assert inner.writing.wait(10)  # another thread's batch is being written, slowly
    record.append(_event(run_id="run-b", thread_id="t-2", segment=0))
    started = time.perf_counter()
    assert record.latest_segment("t-1") == ("run-a", 1)
    assert record.next_segment("run-a") == 2
    assert time.perf_counter() - started < 5  # not held by t-busy's batch
    inner.release.set()
    assert record.latest_segment("t-2") == ("run-b", 0)  # waits for its own queued event
    assert record.latest_run("t-busy") == "run-busy"
    record.close()


def test_redactors_of_the_same_fields_share_their_key_answers_and_no_others() -> None:
    """A served run makes a redactor of its own; which keys are sensitive is known once per
    set of fields (issue 26), never shared with a redactor of other fields."""
    both = {"name": "Ann", "token": "t-1"}
    assert Redactor(["token"])(both) == {"name": "Ann", "token": REDACTED}
    assert Redactor(["name"])(both) == {"name": REDACTED, "token": "t-1"}
    first, second = Redactor(["token", "secret"]), Redactor(["secret", "token"])
    assert first.sensitive("api_token") and second._keys is first._keys
    assert Redactor(["name"])._keys is not first._keys
