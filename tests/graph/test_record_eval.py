"""The record suite and benchmark: counted independently, compared, replayed; numbers printed."""

from __future__ import annotations

from pathlib import Path

from domains.incident_desk import IncidentDesk
from domains.support_desk import SupportDesk
from evals.bench_record import bench_record
from evals.record_eval import acting_case, run_record_eval, scenarios
from keel.settings import Settings


def test_the_record_holds_every_call_and_every_run_replays_the_same(settings: Settings) -> None:
    card = run_record_eval(settings, seeds=1)
    desk = SupportDesk()
    # The seven demo requests, five variants of the refund, one seed of four fault profiles.
    assert card["runs"] == len(scenarios(1, desk, acting_case(settings, desk))) == 16
    assert card["tool_calls"] > 50 and card["tool_calls_recorded"] == card["tool_calls"]
    assert card["denials"] >= 1 and card["denials_recorded"] == card["denials"]
    assert card["model_calls"] >= 3 and card["model_calls_recorded"] == card["model_calls"]
    assert card["approvals_requested"] >= 5
    assert card["approvals_requested_recorded"] == card["approvals_requested"]
    assert card["approvals_answered_recorded"] == card["approvals_answered"]
    assert card["record_complete"] is True
    assert card["divergent"] == [], card["divergent"]
    assert card["replayed"] == card["runs"] and card["replayed_same"] == card["runs"]
    assert card["divergent"] == [], card["divergent"]
    # The scenarios really cover what they claim.
    assert card["statuses"]["acting-rejected"] == "refused"
    assert card["statuses"]["read-denied-by-gate"] == "escalated"
    assert "awaiting_event" not in card["statuses"].values()  # the event woke it, and it replays
    assert card["statuses"]["drift-0"] == "escalated"
    assert card["statuses"]["model-down-fallback"] == "done"


def test_the_record_benchmark_times_stored_events(settings: Settings) -> None:
    figures = bench_record(settings, events=200)
    assert figures["stored"] == 400 and figures["log_lines"] == 200
    for key in ("per_event", "per_event_with_json_log", "per_event_synchronous_full"):
        assert 0 < figures[key]["median_ms"] <= figures[key]["p95_ms"] <= figures[key]["max_ms"]


def test_the_incident_desk_is_recorded_and_replayed_the_same(tmp_path: Path) -> None:
    desk = Settings(home=tmp_path / "desk", domain="domains.incident_desk:IncidentDesk",
                    _env_file=None)  # type: ignore[call-arg]  # fmt: skip
    card = run_record_eval(desk, seeds=0)
    domain = IncidentDesk()
    assert card["runs"] == len(scenarios(0, domain, acting_case(desk, domain))) == 11
    assert card["record_complete"] is True and card["divergent"] == []
    assert card["replayed_same"] == card["runs"]
    assert card["denials"] >= 1 and card["model_calls"] >= 3
    assert card["statuses"]["acting-rejected"] == "refused"
    assert card["statuses"]["acting-edited"] == "done"
    assert card["statuses"]["read-denied-by-gate"] == "escalated"
    assert card["statuses"]["demo-0"] == "done"  # the rollback, woken by rollback.finished
