"""`make scale-demo`: threads on the engine, each approved by a second client, a worker killed.

It starts the engine (``keel/serve.py``: PostgreSQL, Redis, a Chroma server, an Aegra API
process and two Aegra worker processes, a 6 s lease), seeds one duplicate-charge case per thread
and drives the threads through the LangGraph SDK, as any client would: an "agent" client starts
each thread, which stops at its approval; a "reviewer" client, with its own token, reads the
approval through the API and answers it with its digests. Meanwhile one worker process is
SIGKILLed while it holds resumed runs; a supervisor's restart brings it back, and the engine's
lease reaper re-queues its runs for the workers. Then it checks, from the backend, the intent
ledger and the checkpoints (all in PostgreSQL beside the engine's own tables), that every thread
did its own refund and e-mail exactly once and nothing leaked between threads, and, from the
workers' logs, which process ran what. Everything is stopped and removed at the end.

Run: ``python -m evals.scale_demo [--threads N] [--json]`` (``make scale-demo [JSON=1]``).
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import KeelError
from keel.settings import Settings

FIRST_CASE = 5001  # customers C-5001..., invoices INV-6001..., charges CH-7001... / CH-8001...
CLIENTS = 8  # client threads submitting and approving at once
LEASE_S = 6  # Aegra's lease in the demo (production: 30 s): how soon a killed worker's runs move


@dataclass(frozen=True)
class Case:
    """One thread's world: a customer charged twice for one invoice."""

    index: int
    customer_id: str
    email: str
    invoice_id: str
    first_charge: str
    duplicate_charge: str
    amount: float

    @property
    def request(self) -> str:
        return (
            f"Customer {self.customer_id} was charged twice for invoice {self.invoice_id}, "
            "please refund the duplicate charge"
        )

    @property
    def thread_id(self) -> str:
        """A UUID (the engine's thread ids are), the same for the same case every run."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"keel-scale-demo/{self.index}"))


def cases(n: int) -> list[Case]:
    out = []
    for i in range(n):
        number = FIRST_CASE + i
        out.append(
            Case(
                index=i,
                customer_id=f"C-{number}",
                email=f"customer{number}@example.com",
                invoice_id=f"INV-{number + 1000}",
                first_charge=f"CH-{number + 2000}",
                duplicate_charge=f"CH-{number + 3000}",
                amount=10.0 + i,  # each thread's refund differs, so a mix-up shows
            )
        )
    return out


def seed_cases(domain_db: Path, chosen: Sequence[Case]) -> None:
    """Add the cases to the (already seeded) demo backend, in one transaction."""
    conn = sqlite3.connect(domain_db)
    try:
        with conn:
            for c in chosen:
                cents = round(c.amount * 100)
                conn.execute(
                    "INSERT INTO customers VALUES (?,?,?,?)",
                    (c.customer_id, f"Customer {c.customer_id}", c.email, c.email),
                )
                conn.execute(
                    "INSERT INTO invoices VALUES (?,?,?,?,?)",
                    (c.invoice_id, c.customer_id, cents, "EUR", "paid"),
                )
                for charge, at in ((c.first_charge, "09:00:00"), (c.duplicate_charge, "09:00:40")):
                    conn.execute(
                        "INSERT INTO charges VALUES (?,?,?,?,?)",
                        (charge, c.invoice_id, cents, f"2026-11-10T{at}+00:00", "card"),
                    )
    finally:
        conn.close()


# -- the clients ---------------------------------------------------------------------------------


@dataclass
class ThreadRun:
    case: Case
    run_id: str = ""
    resume_id: str = ""
    run_status: str = ""
    final_status: str = ""
    error: str = ""
    run_s: float = 0.0
    resume_s: float = 0.0


class Clients:
    """One SDK client per user per client thread (their HTTP connections are not shared)."""

    def __init__(self, running: Any) -> None:
        self._running = running
        self._local = threading.local()

    def __call__(self, user: str) -> Any:
        made: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        if user not in made:
            made[user] = self._running.client(user)
        return made[user]


def _drive(case: Case, clients: Clients, resumed: list[str], lock: threading.Lock) -> ThreadRun:
    """One thread: the agent starts it, the reviewer answers its approval, both through the SDK."""
    from keel.engine import answer_approval, pending_approval, wait_for_run

    run = ThreadRun(case)
    agent, reviewer = clients("agent"), clients("reviewer")
    try:
        started = time.perf_counter()
        agent.threads.create(thread_id=case.thread_id, if_exists="do_nothing")
        first = agent.runs.create(
            case.thread_id, "keel", input={"request": case.request}, multitask_strategy="reject"
        )
        run.run_id = first["run_id"]
        wait_for_run(agent, case.thread_id, run.run_id)
        run.run_s = time.perf_counter() - started
        request = pending_approval(reviewer, case.thread_id)
        values = reviewer.threads.get_state(case.thread_id)["values"]
        run.run_status = str(values.get("status", ""))
        if request is None:
            run.error = f"no approval pending (status {run.run_status!r})"
            return run
        started = time.perf_counter()
        answer = answer_approval(reviewer, case.thread_id, request, "approve")
        run.resume_id = answer["run_id"]
        with lock:
            resumed.append(run.resume_id)
        done = wait_for_run(reviewer, case.thread_id, run.resume_id)
        run.resume_s = time.perf_counter() - started
        run.final_status = f"run {done['status']}"
        state = reviewer.threads.get_state(case.thread_id)
        run.final_status = str(state["values"].get("status", run.final_status))
    except Exception as err:  # an SDK or HTTP error: reported per thread, the demo goes on
        run.error = f"{type(err).__name__}: {str(err)[:200]}"
    return run


@dataclass
class Kill:
    """The worker killed mid-run, and the runs it held at that moment."""

    pid: int = 0
    held: tuple[str, ...] = ()
    at_s: float = 0.0
    restarted_pid: int = 0


def _holders(postgres_url: str) -> dict[str, int]:
    """Running runs and the worker process (pid) holding each one's lease (Aegra's runs table)."""
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT run_id::text, claimed_by FROM runs WHERE status = 'running'"
        ).fetchall()
    return {run_id: _pid_of(worker) for run_id, worker in rows if worker}


def _pid_of(worker: str) -> int:
    """Aegra names a worker loop HOSTNAME-PID-worker-N."""
    return int(str(worker).rsplit("-worker-", 1)[0].rsplit("-", 1)[1])


def _killer(
    running: Any,
    resumed: list[str],
    lock: threading.Lock,
    after: int,
    kill: Kill,
    stop: threading.Event,
) -> None:
    """Once ``after`` approvals were answered, SIGKILL the first worker seen holding a resumed
    run; then start a new process in its place, as a supervisor would."""
    t0 = time.perf_counter()
    while not stop.is_set():
        with lock:
            answered = set(resumed)
        if len(answered) >= after:
            holding = {r: pid for r, pid in _holders(running.keel_postgres_url).items()}
            victims = [pid for run_id, pid in holding.items() if run_id in answered]
            index = next((i for i, w in enumerate(running.workers) if w.pid in victims), None)
            if index is not None:
                worker = running.workers[index]
                worker.kill()
                kill.pid, kill.at_s = worker.pid, time.perf_counter() - t0
                kill.held = tuple(
                    r for r, pid in _holders(running.keel_postgres_url).items() if pid == kill.pid
                )
                kill.restarted_pid = running.restart(index).pid
                return
        stop.wait(0.05)


def _who_ran(running: Any, killed_logs: Sequence[Path]) -> dict[str, list[int]]:
    """run id -> the worker pids that logged finishing it (Aegra's JSON logs)."""
    from keel.serve import AegraServer

    finished: dict[str, list[int]] = {}
    logs = [w.log_path for w in running.workers] + list(killed_logs)
    for path in dict.fromkeys(logs):
        for record in AegraServer("log", 0, path).log_records():
            if record.get("event") == "Worker finished run" and record.get("run_id"):
                finished.setdefault(record["run_id"], []).append(_pid_of(record["worker"]))
    return finished


def scale_demo(threads: int = 50, *, progress: bool = False) -> dict[str, Any]:
    """Start the engine, run ``threads`` threads through it, kill a worker, check, stop all."""
    import importlib.metadata

    from keel.serve import engine

    chosen = cases(threads)

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with engine(workers=2, worker_count=2, lease_s=LEASE_S, say=say) as running:
        seed_cases(running.settings.domain_db, chosen)
        worker_logs = [w.log_path for w in running.workers]
        first_pids = [w.pid for w in running.workers]
        setup_s = time.perf_counter() - t0
        say(f"{threads} threads, {CLIENTS} client threads; a worker is killed after "
            f"{max(1, threads // 4)} approvals")  # fmt: skip
        clients = Clients(running)
        resumed: list[str] = []
        lock = threading.Lock()
        kill, stop = Kill(), threading.Event()
        killer = threading.Thread(
            target=_killer,
            args=(running, resumed, lock, max(1, threads // 4), kill, stop),
            daemon=True,
        )
        t1 = time.perf_counter()
        killer.start()
        try:
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                runs = list(pool.map(lambda c: _drive(c, clients, resumed, lock), chosen))
        finally:
            stop.set()
            killer.join(timeout=120)
        wall_s = time.perf_counter() - t1
        if kill.pid:
            say(f"killed worker pid {kill.pid} at {kill.at_s:.1f} s holding {len(kill.held)} "
                f"run(s); restarted as pid {kill.restarted_pid}")  # fmt: skip
        finished = _who_ran(running, worker_logs)
        checks = _check(running.settings, running.keel_postgres_url, chosen, runs)
        statuses = _run_statuses(running.keel_postgres_url)
    held = held_runs(kill, runs, statuses, finished)
    resumes = [r for r in runs if r.final_status]
    cross = [
        r
        for r in runs
        if r.final_status == "done"
        and finished.get(r.run_id)
        and finished.get(r.resume_id)
        and finished[r.resume_id][-1] != finished[r.run_id][-1]
    ]
    report: dict[str, Any] = {
        "engine": f"aegra-api {importlib.metadata.version('aegra-api')}: an API process and 2 "
        "worker processes (2 worker loops each) on PostgreSQL and Redis",
        "threads": threads,
        "workers": first_pids,
        "completed": sum(r.final_status == "done" for r in runs),
        **checks,
        "resumes_on_another_worker": len(cross),
        "killed_worker": kill.pid,
        "runs_held_by_killed_worker": len(kill.held),
        "held_by_kind": dict(Counter(h["kind"] for h in held)),
        "recovered_after_worker_kill": sum(h["recovered"] for h in held),
        "errors": [f"{r.case.thread_id}: {r.error}" for r in runs if r.error][:5],
        "wall_s": round(wall_s, 2),
        "throughput_threads_per_min": round(60 * threads / wall_s, 1) if wall_s else 0.0,
        "run_p50_ms": _ms(statistics.median(r.run_s for r in runs)),
        "run_p95_ms": _ms(_p95([r.run_s for r in runs])),
        "resume_p50_ms": _ms(statistics.median(r.resume_s for r in resumes)) if resumes else None,
        "resume_p95_ms": _ms(_p95([r.resume_s for r in resumes])) if resumes else None,
        "setup_s": round(setup_s, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }
    return report


ENDED = {"run": ("interrupted", "success"), "resume": ("success",)}
"""How a run of each kind ends well: a first run stops at its approval (or answers at once)."""


def held_runs(
    kill: Kill,
    runs: Sequence[ThreadRun],
    statuses: dict[str, str],
    finished: dict[str, list[int]],
) -> list[dict[str, Any]]:
    """Every run the killed worker held, first runs and resumes alike, each with its kind and
    whether it was recovered: it ended well (``ENDED``), a worker other than the killed one
    finished it, and its thread ended done.

    Example:
        >>> t = ThreadRun(cases(1)[0], run_id="r1", resume_id="s1", final_status="done")
        >>> held_runs(Kill(pid=7, held=("r1",)), [t], {"r1": "interrupted"}, {"r1": [7, 8]})
        [{'run_id': 'r1', 'kind': 'run', 'status': 'interrupted', 'recovered': True}]
    """
    kinds: dict[str, tuple[str, ThreadRun]] = {}
    for r in runs:
        if r.run_id:
            kinds[r.run_id] = ("run", r)
        if r.resume_id:
            kinds[r.resume_id] = ("resume", r)
    out = []
    for run_id in kill.held:
        kind, thread = kinds.get(run_id, ("unknown", None))
        status = statuses.get(run_id, "")
        recovered = bool(
            thread is not None
            and status in ENDED.get(kind, ())
            and any(pid != kill.pid for pid in finished.get(run_id, []))
            and thread.final_status == "done"
        )
        out.append({"run_id": run_id, "kind": kind, "status": status, "recovered": recovered})
    return out


def _run_statuses(postgres_url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT run_id::text, status FROM runs").fetchall()
    return {run_id: status for run_id, status in rows}


def _check(
    settings: Settings, postgres_url: str, chosen: Sequence[Case], runs: Sequence[ThreadRun]
) -> dict[str, Any]:
    """What the backend, the intent ledger and the checkpoints (in Postgres) say happened.

    A thread's state or side effects crossed into another's when a refund or e-mail made under
    its idempotency keys touched another case's charge, amount or customer, or when its final
    state names another case's customer, invoice or charge.
    """
    import psycopg

    from domains.support_desk.backend import DemoBackend
    from graph.context import KeelContext
    from keel.app import KeelApp
    from stores.ledger_postgres import PostgresLedger

    backend = DemoBackend(settings.domain_db)
    owner = PostgresLedger(postgres_url).owners()
    by_thread = {c.thread_id: c for c in chosen}
    ids = re.compile(r"\b(?:C-\d{4}|INV-\d{4}|CH-\d{4})\b")
    crossed: set[str] = set()
    refunds: Counter[str] = Counter()
    emails: Counter[str] = Counter()
    unattributed = 0
    for refund in backend.refunds():
        case = by_thread.get(owner.get(refund["idempotency_key"], ""))
        if case is None:
            unattributed += 1
            continue
        refunds[case.duplicate_charge] += 1
        if refund["charge_id"] != case.duplicate_charge or refund["amount"] != case.amount:
            crossed.add(case.thread_id)
    with sqlite3.connect(settings.domain_db) as conn:
        outbox = conn.execute("SELECT recipient, body, idempotency_key FROM outbox").fetchall()
    for recipient, body, key in outbox:
        case = by_thread.get(owner.get(key, ""))
        if case is None:
            unattributed += 1
            continue
        emails[case.thread_id] += 1
        named = set(ids.findall(body)) - {case.customer_id, case.invoice_id}
        if recipient != case.email or named:
            crossed.add(case.thread_id)
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:  # the engine's DB
        for case in chosen:
            shown = app.show(case.thread_id).model_dump_json(include={"answer", "results"})
            own = {case.customer_id, case.invoice_id, case.first_charge, case.duplicate_charge}
            if set(ids.findall(shown)) - own:
                crossed.add(case.thread_id)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(DISTINCT thread_id) FROM checkpoints").fetchone()
    postgres_threads = int(row[0]) if row else 0
    done = [r for r in runs if r.final_status == "done"]
    return {
        "crossed_state": len(crossed),
        "duplicate_irreversible": sum(n - 1 for n in refunds.values() if n > 1)
        + sum(n - 1 for n in emails.values() if n > 1),
        "refunds": sum(refunds.values()),
        "emails": sum(emails.values()),
        "missing_side_effects": sum(
            refunds[r.case.duplicate_charge] == 0 or emails[r.case.thread_id] == 0 for r in done
        ),
        "unattributed_side_effects": unattributed,
        "threads_in_postgres": postgres_threads,
        "sqlite_checkpoints_written": settings.checkpoint_db.exists(),
        "sqlite_intents_written": settings.intent_db.exists(),
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(report: dict[str, Any]) -> str:
    r = report
    sqlite_used = r["sqlite_checkpoints_written"] or r["sqlite_intents_written"]
    lines = [
        f"scale demo: {r['threads']} threads on {r['engine']} (worker pids {r['workers']})",
        f"  completed                {r['completed']}/{r['threads']}",
        f"  resumed on another worker {r['resumes_on_another_worker']}",
        f"  killed worker            pid {r['killed_worker']}, holding "
        f"{r['runs_held_by_killed_worker']} run(s) {r['held_by_kind']}; recovered on another "
        f"worker: {r['recovered_after_worker_kill']}",
        f"  crossed state            {r['crossed_state']}",
        f"  duplicate irreversible   {r['duplicate_irreversible']}",
        f"  refunds / e-mails        {r['refunds']} / {r['emails']}"
        f" (missing: {r['missing_side_effects']}, unattributed: "
        f"{r['unattributed_side_effects']})",
        f"  threads in Postgres      {r['threads_in_postgres']} (SQLite checkpoints or intents"
        f" written: {'yes' if sqlite_used else 'no'})",
        f"  wall time                {r['wall_s']} s ({r['throughput_threads_per_min']} "
        f"threads/min); run p50 {r['run_p50_ms']} ms, p95 {r['run_p95_ms']} ms; "
        f"resume p50 {r['resume_p50_ms']} ms, p95 {r['resume_p95_ms']} ms",
        f"  set-up (servers, ingest, seed) {r['setup_s']} s; total {r['total_s']} s",
    ]
    lines += [f"  error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def healthy(report: dict[str, Any]) -> bool:
    """Every thread done, each side effect once, nothing crossed, the killed worker's runs
    finished elsewhere, and some run finished by another worker than its thread's start."""
    n = report["threads"]
    return bool(
        report["completed"] == n
        and report["crossed_state"] == 0
        and report["duplicate_irreversible"] == 0
        and report["missing_side_effects"] == 0
        and report["unattributed_side_effects"] == 0
        and report["threads_in_postgres"] == n
        and report["runs_held_by_killed_worker"] >= 1
        and report["recovered_after_worker_kill"] == report["runs_held_by_killed_worker"]
        # Some run finished on another worker than its thread's start: a resume that moved, or
        # the killed worker's runs recovered elsewhere (with six threads no resume may move).
        and (report["resumes_on_another_worker"] >= 1 or report["recovered_after_worker_kill"] >= 1)
        and not report["sqlite_checkpoints_written"]
        and not report["sqlite_intents_written"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.scale_demo", description=__doc__)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out", type=Path, metavar="DIR",
        help="also write the figures as scale-demo.json and scale-demo.md into DIR (`--out docs`: "
        "the committed page; `make scale-demo OUT=docs`)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        report = scale_demo(args.threads, progress=not args.json)
    except KeelError as err:
        print(f"scale-demo: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (keel.servers.Terminated)
        print("scale-demo: interrupted; its servers are stopped and removed", file=sys.stderr)
        return 130
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale-demo.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "scale-demo.md").write_text(page(report, held=healthy(report)))
    print(json.dumps(report) if args.json else summary(report))
    return 0 if healthy(report) else 1


def page(report: dict[str, Any], *, held: bool) -> str:
    """The scale demo's page: every figure of one run, under the command that wrote it (written
    here, not by ``evals.artifacts``: ``make scale-demo`` loads no other module of the evals).

    Example:
        >>> print(page({"threads": 2, "errors": []}, held=True).splitlines()[-2])
        | `threads` | 2 |
    """
    command = "make scale-demo OUT=docs"
    verdict = "yes" if held else "NO"
    lines = [
        "# Persistence and scale: the scale demo's figures",
        "",
        f"<!-- Written by `{command}` (evals/scale_demo.py); do not edit by hand. -->",
        "",
        f"Written by `{command}` (evals/scale_demo.py); do not edit by hand. One run of "
        f"{report.get('threads')} threads on the engine with a worker killed; every check held: "
        f"{verdict}. What each figure means: "
        "[Persistence and scale](persistence-and-scale.md#make-scale-demo).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, value in report.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        lines.append(f"| `{key}` | {shown.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
