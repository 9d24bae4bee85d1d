"""`keel bench`: the benchmarks that print numbers (never timed tests). One registry.

A full run (no ``--only``) also carries the issue's headline figures, each taken from one bench's
result and set beside its target: see :func:`summarize`.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from evals.artifacts import figure_tables, written_by
from evals.runner import Suite, run_named
from keel.settings import Settings

Bench = Suite


def _context(settings: Settings, progress: bool) -> dict[str, Any]:
    from domains.support_desk import SupportDesk
    from evals.bench_context import REQUEST, bench_context
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    store = CorpusStore(settings, embedder_for(settings))
    store.ingest(progress=progress)
    domain = SupportDesk()
    if not domain.is_prepared(settings):
        domain.prepare(settings)
    evidence = store.query(REQUEST, settings.retrieval_k)
    return bench_context(settings, evidence)


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


def _startup(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_startup import bench_startup

    return bench_startup(settings)


def _embeddings(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_embeddings import bench_embeddings

    return bench_embeddings(settings)


def _engine(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_engine import bench

    return bench(settings, progress)


def _meter(settings: Settings, progress: bool) -> dict[str, Any]:
    from evals.bench_meter import bench_meter

    return bench_meter(settings)


BENCHES: dict[str, Bench] = {
    "context": _context,
    "retrieval": _retrieval,
    "tools": _tools,
    "graph": _graph,
    "threads": _threads,
    "record": _record,
    "checkpoint": _checkpoint,
    "startup": _startup,
    "embeddings": _embeddings,
    "meter": _meter,
    "engine": _engine,
}


class Figure(NamedTuple):
    """Where one headline figure is read in the per-bench results, and its target if it has one."""

    bench: str
    field: tuple[str, ...]
    target: str | None = None
    meets: Callable[[float], bool] | None = None


FIGURES: dict[str, Figure] = {
    "step_overhead_ratio": Figure(
        "graph", ("step_overhead_ratio",), "<= 1.5 x bare StateGraph", lambda v: v <= 1.5
    ),
    "tool_overhead_ms": Figure("tools", ("tool_overhead_ms",), "< 1 ms median", lambda v: v < 1.0),
    "checkpoint_write_ms": Figure("checkpoint", ("sqlite", "put_p50_ms")),
    "retrieval_p95_ms": Figure("retrieval", ("search_p95_ms",)),
    # The threads that completed, all of them in flight at once: a failed thread does not count.
    "threads": Figure("threads", ("completed",), ">= 200 in flight, done", lambda v: v >= 200),
    "threads_p95_ms": Figure("threads", ("threads_p95_ms",)),
    # Cold starts, each a ratio over the floor import measured in the same run (bench_startup).
    "run_vs_floor": Figure(
        "startup", ("run", "ratio"), "<= 2.5 x import langgraph", lambda v: v <= 2.5
    ),
    "show_vs_floor": Figure(
        "startup", ("show", "ratio"), "<= 1.5 x import langgraph", lambda v: v <= 1.5
    ),
    "resume_vs_floor": Figure(
        "startup", ("resume", "ratio"), "<= 1.5 x import langgraph", lambda v: v <= 1.5
    ),
    "help_vs_floor": Figure(
        "startup", ("help", "ratio"), "<= 1.5 x import langgraph", lambda v: v <= 1.5
    ),
    "warm_refund_p50_ms": Figure(
        "startup", ("warm", "refund_p50_ms"), "<= 100 ms run + resume", lambda v: v <= 100
    ),
    # What `make demo` installs (Keel and its runtime dependencies); the development environment
    # around it (test tools, engine, eval corpora) is the startup bench's `venv_mb`.
    "runtime_install_mb": Figure(
        "startup", ("runtime_mb", "mb"), "<= 1000 MB (make demo's install)", lambda v: v <= 1000
    ),
}
PEAK_RSS = "peak_rss_mb"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (``getrusage``; children not counted)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def summarize(results: Mapping[str, Any], *, peak_rss: float | None) -> dict[str, dict[str, Any]]:
    """The headline figures of a bench run, each with its source, target and whether it is met.

    A figure whose bench did not run (or did not report the field) has ``value`` and ``met`` None,
    never a guess. ``checkpoint_write_ms`` is SQLite's put p50 (the Postgres figures stay in the
    checkpoint bench's own object); ``retrieval_p95_ms`` is the curated search at the retrieval
    bench's index size (10,000 chunks). ``peak_rss_mb`` is passed in rather than read from the
    threads bench: the threads bench's figure is the peak up to its own end, while the process's
    peak after every bench has run covers the whole run, whichever bench reached it.

    Args:
        results: each bench's result, keyed by bench name, as :func:`run_benches` collects them.
        peak_rss: the process's peak resident memory over the run, in MB (None: not measured).

    Returns:
        For each figure: ``value``, ``source`` (``bench.field``), ``target`` and ``met``
        (None where there is no target or no value).

    Example:
        >>> summarize({"tools": {"tool_overhead_ms": 0.2}}, peak_rss=None)["tool_overhead_ms"]
        {'value': 0.2, 'source': 'tools.tool_overhead_ms', 'target': '< 1 ms median', 'met': True}
    """
    summary: dict[str, dict[str, Any]] = {}
    for key, figure in FIGURES.items():
        found: Any = results.get(figure.bench)
        for name in figure.field:
            found = found.get(name) if isinstance(found, Mapping) else None
        value = found if isinstance(found, int | float) else None
        met = None if value is None or figure.meets is None else figure.meets(value)
        source = ".".join((figure.bench, *figure.field))
        summary[key] = {"value": value, "source": source, "target": figure.target, "met": met}
    summary[PEAK_RSS] = {
        "value": peak_rss,
        "source": "getrusage(RUSAGE_SELF).ru_maxrss after every bench",
        "target": None,
        "met": None,
    }
    return summary


def summary_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The headline figures as a short table, the targets beside them."""
    lines = [f"{'figure':<20} {'value':>12}  {'target':<26} met"]
    for key, figure in summary.items():
        value = "not measured" if figure["value"] is None else f"{figure['value']:g}"
        verdict = {True: "met", False: "NOT MET", None: ""}[figure["met"]]
        lines.append(f"{key:<20} {value:>12}  {figure['target'] or '-':<26} {verdict}".rstrip())
    return "\n".join(lines)


def measured_figures(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The headline figures of the benches that ran (``keel bench --only startup`` prints its
    ratios against their targets too); none when no headline bench ran.

    Example:
        >>> list(measured_figures({"tools": {"tool_overhead_ms": 0.2}}))
        ['tool_overhead_ms']
    """
    summary = summarize(results, peak_rss=None)
    return {key: summary[key] for key, figure in FIGURES.items() if figure.bench in results}


def run_benches(only: list[str] | None, settings: Settings, *, progress: bool) -> dict[str, Any]:
    """Run the named benchmarks (all when None), each result keyed by bench name.

    A full run returns the headline figures at the top level, their ``summary`` (see
    :func:`summarize`) and the per-bench results under ``benches``: the threads bench's name is
    also a headline figure's, so the two cannot share the top level.
    """
    results = run_named(BENCHES, only, settings, progress=progress, kind="benchmark")
    if only is not None:
        return results
    summary = summarize(results, peak_rss=peak_rss_mb())
    return {
        **{key: figure["value"] for key, figure in summary.items()},
        "summary": summary,
        "benches": results,
    }


PAGE = "benchmarks-figures"
"""The stem of the page ``keel bench --out DIR`` writes (``.md`` and ``.json``)."""
OWN_PAGE = {"engine": "engine.md"}
"""Benches that write a page of their own (`keel bench --only engine`: `docs/engine.md`)."""


def write_bench_page(
    results: Mapping[str, Any], folder: Path, *, today: datetime.date | None = None
) -> dict[str, str]:
    """Write the benches' figures into ``folder/benchmarks-figures.{json,md}``.

    A bench run this time replaces its section; the sections of benches not run are kept, each
    with the date and machine it was measured on, so ``--only`` runs add up to one page. The
    headline figures (:func:`summarize`) are read from whatever sections the page holds.

    Args:
        results: each bench's result keyed by bench name (a full run's ``benches``).
        folder: where the page is written (``docs`` for the committed one).
        today: the date to record (default: today, UTC).

    Returns:
        The written paths, keyed ``json`` and ``markdown``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored = folder / f"{PAGE}.json"
    kept: dict[str, Any] = json.loads(stored.read_text()) if stored.exists() else {}
    when = (today or datetime.datetime.now(datetime.UTC).date()).isoformat()
    machine = {"date": when, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    for name, result in results.items():
        if name not in OWN_PAGE:
            kept[name] = {"measured": machine, "figures": result}
    kept = dict(sorted(kept.items()))
    stored.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    page = folder / f"{PAGE}.md"
    page.write_text(bench_markdown(kept), encoding="utf-8")
    return {"json": str(stored), "markdown": str(page)}


def bench_markdown(kept: Mapping[str, Any]) -> str:
    """The benchmarks page: the headline figures against their targets, then one section per
    bench with its command, when it ran and every figure it reported."""
    command = "keel bench --only NAME --out docs"
    lines = [
        "# Benchmarks: the measured figures",
        "",
        f"<!-- {written_by(command, 'evals/bench.py')} -->",
        "",
        f"{written_by(command, 'evals/bench.py')} Each section is one "
        "bench's latest run, with the date, the machine's cores and its load average then; a run "
        "replaces its own section and keeps the others. What each bench measures: "
        "[Benchmarks](benchmarks.md). Keel on the engine has its own page: [engine](engine.md).",
        "",
        "## Headline figures",
        "",
        "| figure | value | target | met | from |",
        "|---|---|---|---|---|",
    ]
    summary = summarize({n: s["figures"] for n, s in kept.items()}, peak_rss=None)
    for key, figure in summary.items():
        if key == PEAK_RSS:
            continue
        value = "not measured" if figure["value"] is None else f"{figure['value']:g}"
        met = {True: "met", False: "NOT MET", None: ""}[figure["met"]]
        lines.append(
            f"| `{key}` | {value} | {figure['target'] or ''} | {met} | `{figure['source']}` |"
        )
    for name, section in kept.items():
        measured = section["measured"]
        lines += [
            "",
            f"## {name}",
            "",
            f"`keel bench --only {name} --out docs`, on {measured['date']} ({measured['cpus']} "
            f"cores, load average {measured['load_average']:.1f}).",
            "",
            *figure_tables(section["figures"], depth=1),
        ]
    return "\n".join(lines) + "\n"
