"""The headline figures of `keel bench`: each read from the right bench field, beside its target."""

from __future__ import annotations

from evals.bench import FIGURES, summarize, summary_table
from tests.builders import bench_results

HEADLINE = {
    "step_overhead_ratio", "tool_overhead_ms", "checkpoint_write_ms", "retrieval_p95_ms",
    "threads", "threads_p95_ms", "peak_rss_mb", "run_vs_floor", "show_vs_floor",
    "resume_vs_floor", "help_vs_floor", "warm_refund_p50_ms",
    "runtime_install_mb",
}  # fmt: skip


def _values(summary: dict[str, dict[str, object]]) -> dict[str, object]:
    return {key: figure["value"] for key, figure in summary.items()}


def test_each_figure_is_read_from_its_bench() -> None:
    summary = summarize(bench_results(), peak_rss=812.5)
    assert set(summary) == HEADLINE
    assert _values(summary) == {
        "step_overhead_ratio": 1.5,
        "tool_overhead_ms": 0.3,
        "checkpoint_write_ms": 0.6,  # SQLite's put p50, not Postgres's, not a read
        "retrieval_p95_ms": 55.0,  # the curated search, not plain similarity
        "threads": 200,
        "threads_p95_ms": 7800.0,
        "peak_rss_mb": 812.5,  # the whole run's peak, not the threads bench's 600
        "run_vs_floor": 2.67,  # ratios over the floor import, not seconds
        "show_vs_floor": 1.33,
        "resume_vs_floor": 1.5,
        "help_vs_floor": 0.33,
        "warm_refund_p50_ms": 90.0,  # run plus resume, not the run alone
        "runtime_install_mb": 640.0,  # what make demo installs, not the dev environment's 1100
    }
    assert summary["checkpoint_write_ms"]["source"] == "checkpoint.sqlite.put_p50_ms"


def test_targets_are_met_or_not_and_figures_without_one_say_so() -> None:
    met = summarize(bench_results(), peak_rss=1.0)
    assert {k: f["met"] for k, f in met.items() if f["target"]} == {
        "step_overhead_ratio": True,  # at most 1.5: the bound itself meets it
        "tool_overhead_ms": True,
        "threads": True,
        "run_vs_floor": False,  # 2.67 over a bound of 2.5
        "show_vs_floor": True,
        "resume_vs_floor": True,  # at most 1.5: the bound itself meets it
        "help_vs_floor": True,
        "warm_refund_p50_ms": True,
        "runtime_install_mb": True,
    }
    assert met["retrieval_p95_ms"]["met"] is None and met["retrieval_p95_ms"]["target"] is None
    slow = bench_results(
        graph={"step_overhead_ratio": 1.51},
        tools={"tool_overhead_ms": 1.0},
        threads={"threads": 200, "completed": 199, "threads_p95_ms": 10.0},
    )
    missed = summarize(slow, peak_rss=1.0)
    assert [missed[k]["met"] for k in ("step_overhead_ratio", "tool_overhead_ms", "threads")] == [
        False, False, False,
    ]  # fmt: skip


def test_a_bench_that_did_not_run_is_an_absence_not_a_crash() -> None:
    results = bench_results(tools={})  # ran but reported nothing
    del results["threads"]
    summary = summarize(results, peak_rss=None)
    for key in ("tool_overhead_ms", "threads", "threads_p95_ms", "peak_rss_mb"):
        assert summary[key]["value"] is None and summary[key]["met"] is None, key
    assert summary["step_overhead_ratio"]["value"] == 1.5
    assert summarize({}, peak_rss=None).keys() == summary.keys()
    table = summary_table(summary)
    assert table.count("not measured") == 4
    assert "Traceback" not in table


def test_the_table_puts_each_figure_beside_its_target() -> None:
    lines = summary_table(summarize(bench_results(tools={"tool_overhead_ms": 2.0}), peak_rss=5.0))
    rows = {line.split()[0]: line for line in lines.splitlines()[1:]}
    assert rows.keys() == HEADLINE
    assert rows["tool_overhead_ms"].endswith("NOT MET") and "< 1 ms" in rows["tool_overhead_ms"]
    assert rows["step_overhead_ratio"].endswith(" met")
    assert rows["peak_rss_mb"].split()[1:] == ["5", "-"]
    assert set(FIGURES) | {"peak_rss_mb"} == HEADLINE
