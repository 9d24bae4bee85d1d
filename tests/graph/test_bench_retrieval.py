"""The benchmarks measure what they say (no timing thresholds: the numbers are for the README,
not for a test)."""

from __future__ import annotations

from evals.bench_retrieval import bench_retrieval
from keel.settings import Settings


def test_bench_retrieval_reports_what_it_measured(settings: Settings) -> None:
    result = bench_retrieval(settings, chunks=300, queries=5)
    assert result["chunks"] == 300 and result["queries"] == 5
    for name in ("search", "plain"):
        assert 0 < result[f"{name}_p50_ms"] <= result[f"{name}_p95_ms"]


def test_bench_tools_compares_the_same_call_bare_and_layered(settings: Settings) -> None:
    from evals.bench_tools import bench_tools

    result = bench_tools(settings, calls=20)
    assert result["calls"] == 20
    assert result["bare_median_ms"] > 0 and result["layered_median_ms"] > 0
    difference = result["layered_median_ms"] - result["bare_median_ms"]
    assert abs(result["tool_overhead_ms"] - difference) < 1e-3
