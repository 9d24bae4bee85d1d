"""`keel bench`: the benchmarks that print numbers (never timed tests). One registry."""

from __future__ import annotations

from typing import Any

from evals.runner import Suite, run_named
from keel.settings import Settings

Bench = Suite


def _context(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_context import REQUEST, bench_context
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore
    from tools.demo import DemoDomain

    store = CorpusStore(settings, embedder_for(settings))
    store.ingest(progress=progress)
    domain = DemoDomain()
    if not domain.is_prepared(settings):
        domain.prepare(settings)
    evidence = store.query(REQUEST, settings.retrieval_k)
    return bench_context(settings, domain.tools(settings), evidence)


def _retrieval(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_retrieval import bench_retrieval

    return dict(bench_retrieval(settings, progress=progress))


def _tools(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_tools import bench_tools

    return bench_tools(settings)


def _graph(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_graph import bench_graph

    return bench_graph(settings)


def _threads(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_graph import bench_threads

    return bench_threads(settings)


def _record(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_record import bench_record

    return bench_record(settings)


def _checkpoint(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_checkpoint import bench_checkpoint

    return bench_checkpoint(settings)


BENCHES: dict[str, Bench] = {
    "context": _context,
    "retrieval": _retrieval,
    "tools": _tools,
    "graph": _graph,
    "threads": _threads,
    "record": _record,
    "checkpoint": _checkpoint,
}


def run_benches(only: list[str] | None, settings: Settings, *, progress: bool) -> dict[str, Any]:
    """Run the named benchmarks (all when None)."""
    return run_named(BENCHES, only, settings, progress=progress, kind="benchmark")
