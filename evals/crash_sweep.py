"""The crash sweep (``keel eval --suite crashes``): kill a real worker at every durable boundary.

For each request that acts and each backend (SQLite; PostgreSQL on a throwaway cluster, one
database per point), a counting run finds the request's N boundaries (``evals.crash_worker``);
then for n in 1..N (or every k-th), a fresh home is copied from a seeded, indexed template, a
worker is killed at boundary n, and the operator's commands finish the thread. Each point is one
process (``python -m evals.crash_worker point``) holding the forked worker and the checks.

Per backend and request it reports ``kill_points``, ``recovered`` (the points that ended exactly
as the run without a crash), ``duplicated``, ``missing``, ``stalled_after_recover`` and
``wrong_status_shown``, the boundaries found by kind, and every failing point with its index
and kind.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from evals.crash_worker import REQUESTS, Expected, PointResult, RequestName
from keel.errors import BadRequest
from keel.settings import Settings

Backend = Literal["sqlite", "postgres"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")


def make_template(root: Path, indexed: Path | None = None) -> Path:
    """A home with the demo backend seeded and the corpus indexed: each point copies it.

    ``indexed``: a home whose corpus is already indexed, copied instead of indexing again."""
    from domains.support_desk import SupportDesk
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    home = root / "template"
    if indexed is not None:
        shutil.copytree(indexed, home)
    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    SupportDesk().prepare(settings, reset=True)
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    return home


class PointPool:
    """Warm point processes (``python -m evals.crash_worker serve``): each imports Keel and loads
    the embedding model once, then forks a fresh process per point (which forks the worker)."""

    def __init__(self, root: Path, jobs: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        repo = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        self._log = (root / "points.log").open("a")
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "evals.crash_worker", "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                text=True,
                env=env,
                cwd=root,
            )
            for _ in range(max(1, jobs))
        ]
        self._free: queue.Queue[subprocess.Popen[str]] = queue.Queue()
        for proc in self._procs:
            assert proc.stdout is not None
            if not proc.stdout.readline():
                raise RuntimeError(
                    f"a crash-sweep point process did not start; see {self._log.name}"
                )
            self._free.put(proc)

    def run(self, job: dict[str, Any]) -> PointResult:
        proc = self._free.get()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        finally:
            self._free.put(proc)
        if not line:
            return PointResult(kill_at=job["kill_at"], kind="", died=False,
                               error="the point process ended")  # fmt: skip
        return PointResult.model_validate_json(line)

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._log.close()


def sweep_point(
    pool: PointPool,
    template: Path,
    root: Path,
    request: RequestName,
    kill_at: int,
    database: Callable[[], str] | None,
    expected: Expected | None,
) -> PointResult:
    """One point on a fresh copy of the template (and a fresh database)."""
    home = root / f"{request}-{kill_at}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(template, home)
    job = {
        "home": str(home), "request": request, "kill_at": kill_at,
        "postgres_url": database() if database is not None else None,
        "expected": expected.model_dump() if expected is not None else None,
    }  # fmt: skip
    try:
        return pool.run(job)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _failed(point: PointResult) -> bool:
    return bool(
        point.error or point.duplicated or point.missing or point.unsettled
        or point.stalled_after_recover or point.wrong_status or not point.died
    )  # fmt: skip


def sweep_request(
    pool: PointPool,
    template: Path,
    root: Path,
    backend: Backend,
    request: RequestName,
    *,
    database: Callable[[], str] | None,
    every: int,
    jobs: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Count the request's boundaries, then kill at each n (every k-th) and judge."""
    started = time.perf_counter()
    counting = sweep_point(pool, template, root, request, 0, database, None)
    if counting.error or counting.expected is None:
        raise RuntimeError(f"{backend} {request}: the counting run failed: {counting.error}")
    kinds = counting.boundaries
    expected = counting.expected
    say(f"{backend} {request}: {len(kinds)} boundaries found; ends {counting.expected.status}")
    chosen = list(range(1, len(kinds) + 1, every))
    points: list[PointResult] = []

    def one(n: int) -> PointResult:
        point = sweep_point(pool, template, root, request, n, database, expected)
        if point.kind and point.kind != kinds[n - 1]:
            point.error = point.error or f"died at {point.kind}, counted {kinds[n - 1]}"
        mark = "ok"
        if _failed(point):
            why = point.error or "; ".join(
                point.wrong_status[:1] + point.duplicated + point.missing + point.unsettled
            )
            mark = f"FAIL [{why or 'stalled after recover'}]"
        say(f"  {backend} {request} {n}/{len(kinds)} {kinds[n - 1]}: {mark} "
            f"({point.final_status}, {point.seconds:.1f} s)")  # fmt: skip
        return point

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as threads:
        points = list(threads.map(one, chosen))
    failing = [
        {
            "index": p.kill_at,
            "kind": kinds[p.kill_at - 1],
            "duplicated": p.duplicated,
            "missing": p.missing,
            "unsettled": p.unsettled,
            "stalled_after_recover": p.stalled_after_recover,
            "wrong_status": p.wrong_status,
            "error": p.error,
            "commands": [" ".join(c.argv[:1]) + f" -> {c.shown}" for c in p.commands],
        }
        for p in points
        if _failed(p)
    ]
    return {
        "boundaries": len(kinds),
        "boundary_kinds": dict(Counter(k.split(":")[0] for k in kinds)),
        "expected_status": counting.expected.status,
        "kill_points": len(points),
        "recovered": sum(not _failed(p) for p in points),
        "duplicated": sum(bool(p.duplicated) for p in points),
        "missing": sum(bool(p.missing) for p in points),
        "stalled_after_recover": sum(p.stalled_after_recover for p in points),
        "wrong_status_shown": sum(bool(p.wrong_status) for p in points),
        "unsettled_intents": sum(bool(p.unsettled) for p in points),
        "errors": sum(bool(p.error) for p in points),
        "failing": failing,
        "seconds": round(time.perf_counter() - started, 1),
    }


@contextmanager
def _databases(backend: Backend) -> Iterator[Callable[[], str] | None]:
    """For PostgreSQL, one throwaway cluster and a new database per call; else None."""
    if backend == "sqlite":
        yield None
        return
    from keel.servers import postgres_server

    with postgres_server(durable=False) as server:
        yield lambda: server.create_database(f"crash_{uuid.uuid4().hex[:12]}")


def run_crash_sweep(
    *,
    backends: list[str] | None = None,
    requests: list[str] | None = None,
    every: int = 1,
    jobs: int = 1,
    progress: bool = False,
    indexed: Path | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """The sweep: ``{backend: {request: figures}}`` plus its totals and time.

    Args:
        backends: ``sqlite``, ``postgres`` (default: both).
        requests: names from ``evals.crash_worker.REQUESTS`` (default: all four).
        every: kill at boundaries 1, 1+k, 1+2k, ... (1: at every one).
        jobs: points run at once.
        progress: a line per point on stderr.
        indexed: a home with the corpus already indexed, to copy instead of indexing anew.
        log: a file that gets the progress lines too (a long sweep can be followed there).
    """
    chosen_backends = backends or list(BACKENDS)
    chosen_requests = requests or list(REQUESTS)
    unknown = [b for b in chosen_backends if b not in BACKENDS] + [
        r for r in chosen_requests if r not in REQUESTS
    ]
    if unknown:
        raise BadRequest(
            f"unknown backend(s) or request(s) {unknown}; backends: {list(BACKENDS)}, "
            f"requests: {sorted(REQUESTS)}"
        )
    if every < 1:
        raise BadRequest("--every must be at least 1")

    def say(line: str) -> None:
        if progress:
            print(line, file=sys.stderr, flush=True)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as out:
                out.write(line + "\n")

    started = time.perf_counter()
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-crash-")))
        template = make_template(root, indexed)
        pool = PointPool(root, jobs)
        stack.callback(pool.close)
        for backend in (b for b in BACKENDS if b in chosen_backends):
            database = stack.enter_context(_databases(backend))
            results[backend] = {
                request: sweep_request(
                    pool,
                    template,
                    root,
                    backend,
                    request,
                    database=database,
                    every=every,
                    jobs=jobs,
                    say=say,
                )
                for request in (r for r in REQUESTS if r in chosen_requests)
            }
    figures = [r for by_request in results.values() for r in by_request.values()]
    keys = ("kill_points", "recovered", "duplicated", "missing", "stalled_after_recover",
            "wrong_status_shown")  # fmt: skip
    return {
        **results,
        "total": {k: sum(f[k] for f in figures) for k in keys},
        "every": every,
        "seconds": round(time.perf_counter() - started, 1),
    }


__all__ = ["BACKENDS", "Expected", "PointPool", "make_template", "run_crash_sweep", "sweep_point"]
