"""The faults suite runs Keel and both baselines under every profile and judges the backend."""

from __future__ import annotations

from pathlib import Path

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


def test_the_faults_eval_indexes_a_home_it_is_given_without_an_index(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "fresh", _env_file=None)  # type: ignore[call-arg]
    result = run_faults_eval(settings, runs=1)
    for profile in ("transient", "outage", "drift"):
        assert result["keel"][profile]["crashed"] == 0, result["keel"][profile]
    assert result["keel"]["outage"]["success_rate"] == 1.0
