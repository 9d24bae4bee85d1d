"""The faults suite runs Keel and both baselines under every profile and judges the backend,
for whichever domain is configured (the support desk by default, the incident desk here too)."""

from __future__ import annotations

from pathlib import Path

from evals.faults_eval import run_faults_eval
from keel.settings import Settings


def test_keel_never_does_a_wrong_or_duplicated_irreversible_action(settings: Settings) -> None:
    scores = run_faults_eval(settings, runs=3)
    assert scores["requests"] == ["refund-duplicate", "billing-email", "close-ticket"]
    for agent in ("keel", "plain", "middleware"):
        assert set(scores[agent]) == {"transient", "outage", "drift", "expired"}
    for profile in scores["keel"].values():
        assert profile["wrong_irreversible"] == profile["duplicate_irreversible"] == 0
        assert profile["crashed"] == 0
    assert scores["keel"]["outage"]["success_rate"] == 1.0  # through the legacy endpoint
    # Runs rotate over the refund, the billing e-mail change and the ticket; drift hits billing,
    # which only the refund reads.
    drift = scores["keel"]["drift"]
    assert drift["by_request"]["refund-duplicate"] == {"runs": 1, "succeeded": 0}
    assert drift["shape_changes_detected"] == drift["escalated"] == 1
    assert (
        drift["by_request"]["billing-email"]
        == drift["by_request"]["close-ticket"]
        == {"runs": 1, "succeeded": 1}
    )
    assert drift["shape_changes_consumed"] == 0
    assert scores["plain"]["drift"]["shape_changes_consumed"] > 0
    # Expired mail credentials: the refund happens, its e-mail cannot go, the run escalates.
    assert scores["keel"]["expired"]["by_request"]["refund-duplicate"]["succeeded"] == 0
    expired = scores["keel"]["expired"]
    (refund,) = [f for f in expired["failed"] if f.startswith("refund-duplicate:")]
    assert "'refund CH-3002 49.00': 1}" in refund and "status escalated" in refund
    # The refund and the ticket, which e-mail the customer, escalate; the billing change is done.
    assert expired["escalated"] == 2
    assert expired["by_request"]["billing-email"] == {"runs": 1, "succeeded": 1}


def test_the_incident_desk_runs_under_its_own_profiles(tmp_path: Path) -> None:
    desk = Settings(home=tmp_path / "desk", domain="domains.incident_desk:IncidentDesk",
                    _env_file=None)  # type: ignore[call-arg]  # fmt: skip
    scores = run_faults_eval(desk, runs=3)
    assert scores["requests"] == ["restart-leaking-service", "rollback-bad-deploy", "page-oncall"]
    assert set(scores["keel"]) == {"transient", "deploys_outage", "pager_expired",
                                   "metrics_drift", "flaky_alerts"}  # fmt: skip
    for name, profile in scores["keel"].items():
        assert profile["wrong_irreversible"] == profile["duplicate_irreversible"] == 0, name
        assert profile["crashed"] == 0, name
    # Healthy apart from the metrics answering in a changed shape: no runbook reads the metrics,
    # so no run stops on them.
    drift = scores["keel"]["metrics_drift"]
    assert drift["success_rate"] == 1.0 and drift["escalated"] == 0
    # The deploy system down: the rollback reads the deploys and the restart goes through the
    # deploy system, so both escalate; the page needs neither and is done.
    outage = scores["keel"]["deploys_outage"]
    assert outage["escalated"] == 2
    assert {n: r["succeeded"] for n, r in outage["by_request"].items()} == {
        "restart-leaking-service": 0, "rollback-bad-deploy": 0, "page-oncall": 1
    }  # fmt: skip
    # The pager refusing its credentials stops every request: each pages the on-call engineer.
    expired = scores["keel"]["pager_expired"]
    assert expired["escalated"] == 3 and expired["wrong_irreversible"] == 0
