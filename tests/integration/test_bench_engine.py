"""`keel bench --only engine` at a tiny size: both graphs on one engine, measured, written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from keel.servers import run_passing_interrupts
from tests.integration.conftest import require_engine


@pytest.mark.integration
def test_the_engine_bench_measures_keel_beside_the_bare_graph(tmp_path: Path) -> None:
    require_engine()  # skips on a developer's machine without the servers, fails under CI
    tiny = ["--threads", "2", "--rounds", "1", "--warmup", "0", "--workers", "1", "--settle", "0"]
    argv = [sys.executable, "-m", "evals.bench_engine", *tiny, "--out", str(tmp_path), "--json"]
    done = run_passing_interrupts(argv, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(done.stdout)
    figures = result["figures"]["workers_1"]
    for graph in ("keel", "bare"):
        f = figures[graph]
        assert (f["ok"], f["threads"]) == (2, 2), f["errors"]
        assert f["throughput_per_min"] > 0
        assert f["server_run_p50_ms"] and f["server_resume_p50_ms"]  # from the workers' logs
        # CPU is read in clock ticks (10 ms): in this two-thread run PostgreSQL's share can be
        # under one tick (it read 0.0 once after its work per thread shrank); that it did the
        # work is what its write transactions and WAL below say.
        assert f["cpu_ms_per_thread"]["workers"] > 0 and f["cpu_ms_per_thread"]["postgres"] >= 0
        assert f["checkpoint_per_thread"]["checkpoints"] >= 5
        assert f["write_xacts_per_thread"] > 0 and f["wal_kb_per_thread"] > 0
    # Keel's graph does more than the bare one: its checkpoints show it.
    assert (
        figures["keel"]["checkpoint_per_thread"]["checkpoints"]
        > (figures["bare"]["checkpoint_per_thread"]["checkpoints"])
    )
    assert figures["ratio"]["throughput"] is not None
    page = (tmp_path / "engine.md").read_text()
    assert "| 1 | keel |" in page and "| 1 | bare |" in page and "Keel over bare" in page
    assert json.loads((tmp_path / "engine.json").read_text())["figures"] == result["figures"]
