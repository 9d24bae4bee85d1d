"""The engine bench's config and arithmetic, without an engine (the engine run: integration)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from evals.bench_engine import (
    CONFIG,
    Round,
    ThreadTiming,
    cpu_seconds,
    markdown,
    ratios,
    summarize,
    tally_events,
)

ROOT = Path(__file__).resolve().parents[2]


def _resolve(config: Path, entry: str) -> tuple[Path, str]:
    path, _, export = entry.partition(":")
    return (config.parent / path).resolve(), export


def test_the_bench_serves_keel_as_make_serve_does_beside_the_bare_graph() -> None:
    aegra = json.loads((ROOT / "aegra.json").read_text())
    bench = json.loads(CONFIG.read_text())
    assert bench["checkpointer"] == aegra["checkpointer"]  # durability sync, the allow-list
    assert _resolve(CONFIG, bench["graphs"]["keel"]) == _resolve(
        ROOT / "aegra.json", aegra["graphs"]["keel"]
    )
    assert _resolve(CONFIG, bench["auth"]["path"]) == _resolve(
        ROOT / "aegra.json", aegra["auth"]["path"]
    )
    bare, export = _resolve(CONFIG, bench["graphs"]["bare"])
    assert bare == ROOT / "evals" / "bare_graph.py" and export == "graph"
    unrecorded, export = _resolve(CONFIG, bench["graphs"]["keel_unrecorded"])
    assert unrecorded == ROOT / "evals" / "unrecorded_graph.py" and export == "unrecorded_graph"
    assert sorted(bench["graphs"]) == ["bare", "keel", "keel_unrecorded"]


def test_the_bare_graph_has_the_same_shape_with_one_interrupt() -> None:
    from evals.bare_graph import graph

    nodes = set(graph.get_graph().nodes) - {"__start__", "__end__"}
    assert nodes == {"intake", "plan", "approve", "execute", "respond"}


def test_cpu_counts_children_that_have_exited() -> None:
    before = cpu_seconds([os.getpid()])
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # waited for: in our cutime
    assert cpu_seconds([os.getpid()]) - before >= 0.25


def _round(graph: str, wall: float, run_s: float, cpu: float, commits: int) -> Round:
    timings = [
        ThreadTiming(graph, f"t{i}", f"{graph}-r{i}", f"{graph}-s{i}", run_s, run_s, ok=True)
        for i in range(4)
    ]
    return Round(
        graph, 1, False, timings, wall, {"workers": cpu, "postgres": cpu / 2, "clients": 9.0},
        commits, commits // 2, 4096 * 4,
    )  # fmt: skip


def test_keel_is_set_beside_bare_per_thread_and_as_ratios() -> None:
    rounds = [
        _round("keel", 2.0, 0.4, 2.0, 200),
        _round("bare", 1.0, 0.2, 1.0, 120),
        Round("keel", 1, True, [], 9.0, {}, 999, 0, 0),  # a warm-up: not counted
    ]
    server = {f"keel-r{i}": 0.3 for i in range(4)} | {f"keel-s{i}": 0.25 for i in range(4)}
    server |= {f"bare-r{i}": 0.1 for i in range(4)} | {f"bare-s{i}": 0.1 for i in range(4)}
    sizes = {(1, "keel"): {"checkpoints": 12.0}, (1, "bare"): {"checkpoints": 7.0}}
    figures = summarize(rounds, server, sizes)["workers_1"]
    keel, bare = figures["keel"], figures["bare"]
    assert (keel["throughput_per_min"], bare["throughput_per_min"]) == (120.0, 240.0)
    assert keel["cpu_ms_per_thread"]["workers"] == 500.0
    assert keel["cpu_ms_per_thread_total"] == 750.0  # workers + postgres: not the clients
    assert (keel["commits_per_thread"], keel["wal_kb_per_thread"]) == (50.0, 4.0)
    assert (keel["server_run_p50_ms"], keel["server_resume_p50_ms"]) == (300.0, 250.0)
    assert keel["checkpoint_per_thread"] == {"checkpoints": 12.0}
    assert figures["ratio"] == {
        "throughput": 0.5,
        "server_run_p50": 3.0,
        "server_resume_p50": 2.5,
        "cpu_per_thread": 2.0,
        "met": False,
        "throughput_by_round": [0.5],
    }
    page = markdown(
        {"engine": "e", "shape": "s", "machine": "m", "rounds": 1, "threads": 4, "warmup": 0,
         "flight_record": "f", "figures": {"workers_1": figures}}
    )  # fmt: skip
    assert "| 1 | keel | 120 |" in page and "| 1 | 0.5 | 0.5 | 3 | 2.5 | 2 | NOT MET |" in page


def test_the_record_s_cost_is_keel_with_it_minus_keel_without_it() -> None:
    rounds = [
        _round("keel", 2.0, 0.4, 2.0, 200),
        _round("bare", 1.0, 0.2, 1.0, 120),
        _round("keel_unrecorded", 1.6, 0.3, 1.6, 160),
    ]
    figures = summarize(rounds, {}, {})["workers_1"]
    record = figures["record"]
    assert record["throughput"] == 0.8  # 120 threads/min with it, 150 without
    assert (record["worker_cpu_ms_per_thread"], record["commits_per_thread"]) == (100.0, 10.0)
    assert record["cpu_ms_per_thread"] == 150.0  # workers and postgres
    page = markdown(
        {"engine": "e", "shape": "s", "machine": "m", "rounds": 1, "threads": 4, "warmup": 0,
         "flight_record": "f", "figures": {"workers_1": figures}}
    )  # fmt: skip
    assert "| 1 | 0.8 | - | - | 150 | 100 | 10 |" in page
    assert "## Where the rest goes" in page


def test_the_unrecorded_graph_is_keel_s_without_the_record_handler() -> None:
    from evals.unrecorded_graph import graph as unrecorded
    from graph.studio import graph as served

    assert set(unrecorded.get_graph().nodes) == set(served.get_graph().nodes)
    assert served.config is not None and served.config.get("callbacks")
    assert not (unrecorded.config or {}).get("callbacks")


def test_the_targets_are_issue_26s() -> None:
    bare = {"throughput_per_min": 100.0, "server_run_p50_ms": 100.0,
            "server_resume_p50_ms": 100.0, "cpu_ms_per_thread_total": 100.0}  # fmt: skip
    just = {**bare, "throughput_per_min": 80.0, "server_run_p50_ms": 200.0,
            "server_resume_p50_ms": 200.0}  # fmt: skip
    assert ratios(just, bare)["met"]
    assert not ratios({**just, "throughput_per_min": 79.0}, bare)["met"]
    assert not ratios({**just, "server_resume_p50_ms": 201.0}, bare)["met"]


def test_the_events_the_engine_published_are_counted_by_kind_and_shown() -> None:
    def event(*payload: object) -> str:
        return json.dumps({"event_id": "1-0", "payload": list(payload)})

    messages = [
        event("values", {"evidence": "x" * 2000}),
        event("debug", {"type": "checkpoint", "payload": {}}),
        event("debug", {"type": "task", "payload": {}}),
        event("values", {}),
        "not json",
    ]
    tally = tally_events(messages)
    assert tally["values"]["events"] == 2 and tally["values"]["kb"] == 2.1
    assert (tally["debug:checkpoint"]["events"], tally["debug:task"]["events"]) == (1, 1)
    assert tally["unknown"]["events"] == 1 and tally["total"]["events"] == 5
    page = markdown(
        {"engine": "e", "shape": "s", "machine": "m", "rounds": 1, "threads": 4, "warmup": 0,
         "flight_record": "f", "figures": {}, "events": {"keel": tally}}
    )  # fmt: skip
    assert "## What the engine publishes per thread" in page
    assert "| keel | 5 / 2.2 kB | 1 / 0.1 kB | 1 / 0.1 kB | 1 / 0 kB | 2 / 2.1 kB |" in page
