"""The retrieval benchmark builds the index it says and reports sane percentiles (no timing
thresholds: the numbers are for the README, not for a test)."""

from __future__ import annotations

from evals.bench_retrieval import bench_retrieval
from keel.settings import Settings


def test_bench_retrieval_reports_what_it_measured(settings: Settings) -> None:
    result = bench_retrieval(settings, chunks=300, queries=5)
    assert result["chunks"] == 300 and result["queries"] == 5
    for name in ("search", "plain"):
        assert 0 < result[f"{name}_p50_ms"] <= result[f"{name}_p95_ms"]
