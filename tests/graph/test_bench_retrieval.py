"""The benchmarks measure what they say (no timing thresholds: the numbers are for the docs,
not for a test)."""

from __future__ import annotations

from pathlib import Path

from evals.bench_retrieval import bench_retrieval
from keel.settings import Settings


def test_bench_retrieval_reports_what_it_measured(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, _env_file=None)  # type: ignore[call-arg]
    result = bench_retrieval(settings, chunks=300, queries=5)
    assert set(result) == {
        "chunks", "queries", "search_p50_ms", "search_p95_ms", "plain_p50_ms", "plain_p95_ms",
        "build_s",
    }  # fmt: skip
    assert result["chunks"] == 300 and result["queries"] == 5
    for name in ("search", "plain"):
        assert 0 < result[f"{name}_p50_ms"] <= result[f"{name}_p95_ms"]
    assert result["build_s"] >= 0
    assert list(tmp_path.iterdir()) == []  # the index lives in its own temporary directory


def test_bench_tools_compares_the_same_call_bare_and_layered(settings: Settings) -> None:
    from evals.bench_tools import bench_tools

    result = bench_tools(settings, calls=20)
    assert result["calls"] == 20
    assert result["bare_median_ms"] > 0 and result["layered_median_ms"] > 0
    difference = result["layered_median_ms"] - result["bare_median_ms"]
    assert abs(result["tool_overhead_ms"] - difference) < 1e-3


def test_bench_graph_runs_the_same_nodes_three_ways(settings: Settings) -> None:
    from evals.bench_graph import bench_graph

    # bench_graph asserts that the three graphs reach the same answer on every run.
    result = bench_graph(settings, runs=2)
    assert (result["runs"], result["steps"]) == (2, 5)
    keel, durable, bare = (result[f"{n}_median_ms"] for n in ("keel", "bare_checkpointed", "bare"))
    assert keel > 0 and durable > 0 and bare > 0
    assert abs(result["step_overhead_ratio"] - keel / durable) < 0.01
    assert abs(result["step_overhead_ratio_no_checkpointer"] - keel / bare) < 0.01


def test_bench_threads_keeps_every_thread_in_flight_to_the_end(settings: Settings) -> None:
    from evals.bench_graph import bench_threads

    result = bench_threads(settings, threads=8)
    assert result["threads"] == result["completed"] == 8
    assert 0 < result["threads_p50_ms"] <= result["threads_p95_ms"]
    assert result["peak_rss_mb"] > 0
