"""The faults suite runs Keel and both baselines under every profile and judges the backend."""

from __future__ import annotations

from evals.faults_eval import run_faults_eval
from keel.settings import Settings


def test_keel_never_does_a_wrong_or_duplicated_irreversible_action(settings: Settings) -> None:
    scores = run_faults_eval(settings, runs=3)
    assert set(scores) == {"keel", "plain", "middleware"}
    for agent in scores.values():
        assert set(agent) == {"transient", "outage", "drift"}
    for profile in scores["keel"].values():
        assert profile["wrong_irreversible"] == profile["duplicate_irreversible"] == 0
        assert profile["crashed"] == 0
    assert scores["keel"]["outage"]["success_rate"] == 1.0  # through the legacy endpoint
    # Runs rotate over the refund, the billing e-mail change and the ticket; drift hits billing,
    # which only the refund reads.
    drift = scores["keel"]["drift"]
    assert drift["by_request"]["refund"] == {"runs": 1, "succeeded": 0}
    assert drift["shape_changes_detected"] == drift["escalated"] == 1
    assert (
        drift["by_request"]["billing_email"]
        == drift["by_request"]["close_ticket"]
        == {"runs": 1, "succeeded": 1}
    )
    assert drift["shape_changes_consumed"] == 0
    assert scores["plain"]["drift"]["shape_changes_consumed"] > 0
