"""What a command costs from a cold start, against the floor of importing LangGraph at all.

Each command is started as its own process, the way a user types it (the ``keel`` console
script), several times, interleaved with the floor (``python -c "import langgraph.graph,
langchain_core.messages, pydantic"``) in the same run, so that a busy machine slows both alike;
each ratio is the command's median wall time over the floor's. On a home with the demo corpus
indexed and the demo backend seeded, offline defaults (no model, embedded stores):

- ``help``: ``keel --help``;
- ``show``: ``keel show NO-SUCH-THREAD --json`` (builds the app, reads the checkpointer);
- ``resume``: ``keel resume THREAD --approve --json`` on a refund thread waiting for approval (a
  new one for each start), which runs the executor and sends the e-mail;
- ``run``: ``keel run "What is our refund window?" --json`` (retrieves: Chroma and the
  embedding model load).

Keel's own packages are byte-compiled once before the timings, as an install does (see
``byte_compile``): the floor's modules, installed by pip, start from bytecode, and so should the
commands it is compared with.

Beside them, in this process: the warm refund (``run`` of the duplicate-charge refund, then its
approval's ``resume``), the demo backend reseeded between pairs outside the timings; and the
size of this virtual environment.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel.settings import Settings

FLOOR = "import langgraph.graph, langchain_core.messages, pydantic"
QUESTION = "What is our refund window?"
REFUND = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
TARGETS = {"help": 1.5, "show": 1.5, "resume": 1.5, "run": 2.5}
"""The most each command may take, as a multiple of the floor (issue 14)."""
PACKAGES = (
    "keel",
    "graph",
    "agents",
    "retrieval",
    "tools",
    "observability",
    "stores",
    "evals",
    "domains",
)
"""Keel's import packages (pyproject.toml's ``packages.find``)."""


def byte_compile() -> bool:
    """Byte-compile Keel's own packages once, before any timing; whether every file compiled.

    pip compiles what it installs, so the floor's modules (LangGraph's, pydantic's) load from
    bytecode. Keel's own modules, in the editable install of ``make install``, are compiled by
    their first import and then load from bytecode too, unless ``PYTHONDONTWRITEBYTECODE`` is
    set (as on this project's machines): then every ``keel`` start would compile them from
    source again (about 0.16 s for the 55 modules ``keel show`` loads), a cost an installed
    Keel does not pay. ``compileall`` writes the bytecode whatever that variable says.
    """
    import compileall
    import importlib.util

    compiled = True
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compiled = bool(compileall.compile_dir(folder, quiet=1)) and compiled
    return compiled


def _keel() -> list[str]:
    """The console script beside this interpreter, as a user runs it (``-m`` where missing)."""
    script = Path(sys.executable).parent / "keel"
    return [str(script)] if script.exists() else [sys.executable, "-m", "keel.cli"]


def _wall(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - started
    if done.returncode not in (0, 2):  # `show NO-SUCH-THREAD` answers with exit 2 by design
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return took


def _waiting_threads(settings: Settings, n: int) -> list[str]:
    """``n`` refund threads waiting for approval, each on its own seeded invoice state."""
    from keel.app import KeelApp

    threads = []
    with KeelApp.open(settings) as app:
        for _ in range(n):
            outcome = app.run(REFUND)
            if outcome.status != "awaiting_approval":
                raise RuntimeError(f"the refund did not wait for approval: {outcome.status}")
            threads.append(outcome.thread_id)
    return threads


def venv_mb() -> float:
    """The size of this interpreter's environment (``sys.prefix``) on disk, in MB."""
    total = 0
    for root, _, files in os.walk(sys.prefix):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return round(total / 1e6, 1)


def runtime_distributions(distribution: str = "keel") -> list[str]:
    """What ``make demo`` installs: ``distribution`` and its requirements without Keel's own
    extras, followed recursively with the extras each requirement asks for (``psycopg[binary]``
    brings ``psycopg-binary``), markers evaluated for this interpreter (canonical names, sorted)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonicalize_name(distribution), frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        for requirement in map(Requirement, metadata.distribution(name).requires or []):
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras}
            )
            if wanted:
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return sorted(seen)


def runtime_mb(distribution: str = "keel") -> dict[str, Any]:
    """The size on disk of :func:`runtime_distributions`, measured from whatever environment
    this runs in: each distribution's files as its RECORD lists them, plus their bytecode, in MB.

    The development environment holds more (the test tools, the engine, the eval corpora):
    ``venv_mb`` is that whole environment.
    """
    import importlib.util
    from importlib import metadata

    names = runtime_distributions(distribution)
    counted: set[str] = set()
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or []:
            path = str(file.locate())
            candidates = [path]
            if path.endswith(".py"):
                candidates.append(importlib.util.cache_from_source(path))
            for candidate in candidates:
                if candidate not in counted and os.path.isfile(candidate):
                    counted.add(candidate)
                    total += os.path.getsize(candidate)
    return {"mb": round(total / 1e6, 1), "distributions": len(names)}


def warm_refund(settings: Settings, runs: int) -> dict[str, Any]:
    """The refund run plus its approval's resume in one warm process, p50 and p95 in ms."""
    from domains.support_desk import SupportDesk
    from keel.app import Decision, KeelApp

    pairs: list[float] = []
    run_ms: list[float] = []
    resume_ms: list[float] = []
    with KeelApp.open(settings) as app:
        for i in range(runs + 3):  # three warm-up pairs, not counted
            SupportDesk().prepare(settings, reset=True)
            started = time.perf_counter()
            outcome = app.run(REFUND)
            ran = time.perf_counter()
            done = app.resume(outcome.thread_id, Decision(kind="approve"))
            ended = time.perf_counter()
            if done.status != "done":
                raise RuntimeError(f"the warm refund ended {done.status}")
            if i >= 3:
                pairs.append((ended - started) * 1000)
                run_ms.append((ran - started) * 1000)
                resume_ms.append((ended - ran) * 1000)
    pairs.sort()
    return {
        "runs": runs,
        "refund_p50_ms": round(statistics.median(pairs), 1),
        "refund_p95_ms": round(pairs[min(len(pairs) - 1, int(0.95 * len(pairs)))], 1),
        "run_p50_ms": round(statistics.median(run_ms), 1),
        "resume_p50_ms": round(statistics.median(resume_ms), 1),
    }


def bench_startup(settings: Settings, *, reps: int = 5, warm_runs: int = 20) -> dict[str, Any]:
    """Cold starts of each command against the floor, the warm refund, the venv's size."""
    from domains.support_desk import SupportDesk
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    with tempfile.TemporaryDirectory(prefix="keel-bench-startup-") as tmp:
        home = Path(tmp)
        # Offline defaults on a home of its own: whatever the caller configured (a model, a
        # Postgres URL) would measure that, not start-up.
        local = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
        SupportDesk().prepare(local, reset=True)
        CorpusStore(local, embedder_for(local)).ingest(progress=False)
        threads = _waiting_threads(local, reps)
        compiled = byte_compile()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
        env.update(KEEL_HOME=str(home), LANGSMITH_TRACING="false")
        keel = _keel()
        commands: dict[str, list[str]] = {
            "floor": [sys.executable, "-c", FLOOR],
            "help": [*keel, "--help"],
            "show": [*keel, "show", "NO-SUCH-THREAD", "--json"],
            "resume": [*keel, "resume", "THREAD", "--approve", "--json"],
            "run": [*keel, "run", QUESTION, "--json"],
        }
        walls: dict[str, list[float]] = {name: [] for name in commands}
        _wall(commands["floor"], env, home)  # the page cache warmed once, not counted
        for rep in range(reps):
            for name, argv in commands.items():
                if name == "resume":
                    argv = [threads[rep] if a == "THREAD" else a for a in argv]
                walls[name].append(_wall(argv, env, home))
        warm = warm_refund(local, warm_runs)
    floor = statistics.median(walls["floor"])
    result: dict[str, Any] = {
        "reps": reps,
        "floor_s": round(floor, 3),
        "floor_command": f'python -c "{FLOOR}"',
        "keel_byte_compiled": compiled,
        "pythondontwritebytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
    }
    for name, target in TARGETS.items():
        median = statistics.median(walls[name])
        result[name] = {
            "median_s": round(median, 3),
            "min_s": round(min(walls[name]), 3),
            "max_s": round(max(walls[name]), 3),
            "ratio": round(median / floor, 2),
            "target_ratio": target,
        }
    result["warm"] = warm
    result["runtime_mb"] = runtime_mb()
    result["venv_mb"] = venv_mb()
    return result
