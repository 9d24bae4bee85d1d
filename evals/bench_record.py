"""Recording overhead per event: what the flight recorder adds to each thing it records.

Each event is redacted, validated, inserted and committed (WAL, ``synchronous`` as
``KEEL_RECORD_SYNC`` sets it, ``NORMAL`` by default) before ``emit`` returns; the benchmark times
``emit`` for a realistic mix of events (tool calls, node ends with outputs, retrievals, clock
readings), with and without a JSON log line per event, and, for comparison, with the other
``synchronous`` mode (``FULL`` costs one disk sync per event).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from keel.settings import Settings
from observability.logs import JsonFormatter
from observability.record_events import AnyPayload, ClockRead, NodeLeft, RetrievalDone, ToolCallMade
from observability.recorder import Recorder
from observability.redaction import Redactor
from stores.flight_record import SqliteFlightRecord
from tools.spec import ToolEvent


def sample_events() -> list[AnyPayload]:
    """Four events of the sizes a demo run writes."""
    call = ToolEvent(
        agent="executor", tool="refund_charge", effect="irreversible",
        args={"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate charge on INV-2001"},
        digest="sha256:" + "0" * 64, thread_id="bench", decision="allowed", ok=True,
        output={"refund_id": "RF-5001", "charge_id": "CH-3002", "amount": 49.0,
                "status": "settled"},
        attempts=1, latency_ms=3.2, idempotency_key="keel-" + "0" * 32,
    )  # fmt: skip
    chunk = {
        "chunk_id": "refund-policy-v2:af99a7985bc71da9", "source": "refund-policy-v2",
        "title": "Refund policy", "kind": "policy", "trust_tier": "official", "owner": "finance",
        "effective_date": "2026-01-01", "score": 0.74, "text": "Refund window: 30 days. " * 8,
    }  # fmt: skip
    return [
        ToolCallMade(call=call),
        NodeLeft(outputs={"results": [call.model_dump(mode="json")], "cursor": 1}, latency_ms=9),
        RetrievalDone(query="refund the duplicate charge", k=6, evidence=[chunk] * 6,
                      filtered=[{"chunk_id": "x", "reason": "superseded"}] * 4, conflicts=[]),
        ClockRead(value="2026-11-25T10:00:00+00:00"),
    ]  # fmt: skip


def _time(recorder: Recorder, events: list[AnyPayload], n: int) -> list[float]:
    recorder.start(run_id="bench", thread_id="bench", trace_id="bench")
    timings = []
    for i in range(n):
        payload = events[i % len(events)]
        started = time.perf_counter()
        recorder.emit(payload)
        timings.append((time.perf_counter() - started) * 1000)
    recorder.stop()
    return timings


def _figures(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "median_ms": round(statistics.median(ordered), 4),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 4),
        "max_ms": round(ordered[-1], 4),
    }


def bench_record(settings: Settings, *, events: int = 2000) -> dict[str, Any]:
    """Median and p95 of ``emit`` per event, on a fresh record file in a temporary folder."""
    sample = sample_events()
    mode = settings.record_sync
    other = "FULL" if mode == "NORMAL" else "NORMAL"
    out: dict[str, Any] = {"events": events, "synchronous": mode, "journal_mode": "WAL"}
    with tempfile.TemporaryDirectory(prefix="keel-bench-record-") as tmp:
        store = SqliteFlightRecord(Path(tmp) / "records.sqlite", synchronous=mode)
        quiet = logging.getLogger("keel.bench.quiet")
        quiet.propagate = False
        recorder = Recorder(store, Redactor.from_settings(settings), log=quiet)
        out["per_event"] = _figures(_time(recorder, sample, events))
        logged = logging.getLogger("keel.bench.logged")
        logged.propagate = False
        logged.setLevel(logging.INFO)
        handler = logging.FileHandler(Path(tmp) / "keel.log.jsonl")
        handler.setFormatter(JsonFormatter())
        logged.addHandler(handler)
        recorder.log = logged
        out["per_event_with_json_log"] = _figures(_time(recorder, sample, events))
        logged.removeHandler(handler)
        handler.close()
        out["stored"] = store.count()
        out["log_lines"] = len((Path(tmp) / "keel.log.jsonl").read_text().splitlines())
        store.close()
        # FULL syncs the disk per event; NORMAL (in WAL) survives a killed process, not a power cut.
        compared = SqliteFlightRecord(Path(tmp) / "compared.sqlite", synchronous=other)
        recorder = Recorder(compared, Redactor.from_settings(settings), log=quiet)
        out[f"per_event_synchronous_{other.lower()}"] = _figures(_time(recorder, sample, events))
        compared.close()
    return out
