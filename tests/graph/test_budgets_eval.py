"""The budgets eval, small: every budget kind, Keel and the baseline, one at a time and a few
threads of one team on two worker processes; its page is written from its figures."""

from __future__ import annotations

from pathlib import Path

from evals.budgets_eval import BASELINE, KINDS, run_budgets_eval, write_budgets_eval
from keel.settings import Settings


def test_every_budget_kind_holds_for_keel_and_is_overspent_by_the_baseline(
    settings: Settings, tmp_path: Path
) -> None:
    result = run_budgets_eval(settings, per_behaviour=1, threads=6, workers=2)

    assert set(result["kinds"]) == set(KINDS)
    for kind, parts in result["kinds"].items():
        for run in ("single", "concurrent"):
            keel, baseline = parts[run]["keel"], parts[run][BASELINE]
            assert keel["overspend"] == 0, (kind, run, keel)
            assert keel["threads"] == baseline["threads"] > 0
            assert (
                keel["completed_within_budget"] + keel["escalated_over_budget"] == keel["threads"]
            )
            assert keel["metering_overhead_ms"] is not None
            assert baseline["metering_overhead_ms"] is None
        assert parts["concurrent"]["keel"]["team_spent"] <= result["budgets"][kind]["team"]
        # Told to escalate, every thread a budget stopped ends escalated with its account.
        escalated = parts["single_escalate"]["keel"]
        assert escalated["overspend"] == 0
        assert escalated["escalated_over_budget"] == escalated["stopped_by_budget"] > 0, escalated
        assert escalated["answered_by_runbook"] == 0
    # The baseline's call limit keeps no team budget, nor (but in calls) a thread's.
    assert result["kinds"]["calls"]["concurrent"][BASELINE]["team_overspend"] > 0
    assert result["kinds"]["tokens"]["single"][BASELINE]["overspend"] > 0
    assert result["kinds"]["money"]["single"][BASELINE]["overspend"] > 0

    written = write_budgets_eval(result, tmp_path)
    page = Path(written["markdown"]).read_text()
    assert "keel eval --suite budgets" in page
    for kind in KINDS:
        assert f"## {kind}" in page
    assert result["meter_bench"]["meter_overhead_ms"] < 5  # the bench's own figure, with slack
    assert "The meter's own cost" in page
