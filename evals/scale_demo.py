"""`make scale-demo`: many threads across two worker processes, on PostgreSQL and a Chroma server.

The coordinator starts a throwaway PostgreSQL cluster and ``chroma run`` on loopback, ingests the
corpus into the server, seeds one duplicate-charge case per thread, and starts two long-lived
worker processes configured only by ``KEEL_*`` settings. Each thread is started by one worker, stops
at its approval, and is resumed and finished by the other. Then it checks, from the backend and
from the checkpoints, that every thread did its own refund and e-mail exactly once and nothing
leaked between threads. Everything is stopped and removed at the end.

Run: ``python -m evals.scale_demo [--threads N] [--json]`` (``make scale-demo [JSON=1]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from keel.errors import KeelError
from keel.settings import Settings

FIRST_CASE = 5001  # customers C-5001..., invoices INV-6001..., charges CH-7001... / CH-8001...


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
        return f"scale-{self.index:04d}"


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


# -- the worker ---------------------------------------------------------------------------------


def worker_main() -> int:
    """A worker: one KeelApp from the environment's settings, answering JSON lines on stdin."""
    from keel.app import Decision, KeelApp

    settings = Settings()
    with KeelApp.open(settings) as app:
        app.preflight()
        app.context.store.query("warm-up: load the embedding model", 1)  # not in the timings
        _reply({"ready": os.getpid(), "checkpointer": type(app.graph.checkpointer).__name__})
        for line in sys.stdin:
            order = json.loads(line)
            started = time.perf_counter()
            try:
                if order["op"] == "run":
                    outcome = app.run(order["request"], order["thread_id"])
                else:
                    decision = Decision(kind="approve", reviewer=f"scale-demo-{os.getpid()}")
                    outcome = app.resume(order["thread_id"], decision)
                reply: dict[str, Any] = {"status": outcome.status}
            except KeelError as err:
                reply = {"error": f"{type(err).__name__}: {err}"}
            reply.update(pid=os.getpid(), seconds=time.perf_counter() - started)
            _reply(reply)
    return 0


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


@dataclass
class Worker:
    """The coordinator's handle on one worker process: one order at a time."""

    process: subprocess.Popen[str]
    pid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, env: dict[str, str], log: IO[str]) -> Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "evals.scale_demo", "worker"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        return cls(process)

    def wait_ready(self) -> None:
        hello = self._read()
        if "ready" not in hello:
            raise KeelError(f"a worker did not start: {hello}")
        self.pid = int(hello["ready"])

    def order(self, **payload: Any) -> dict[str, Any]:
        with self.lock:
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(payload) + "\n")
            self.process.stdin.flush()
            return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise KeelError(f"worker {self.pid or '?'} exited (code {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self, *, interrupted: bool = False) -> None:
        """Close its input (it finishes its order and exits); interrupted: SIGTERM it now."""
        if interrupted:
            self.process.terminate()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the coordinator ----------------------------------------------------------------------------


@dataclass
class ThreadRun:
    case: Case
    started_by: int = 0
    resumed_by: int = 0
    run_status: str = ""
    final_status: str = ""
    error: str = ""
    run_s: float = 0.0
    resume_s: float = 0.0


def _drive(case: Case, first: Worker, second: Worker) -> ThreadRun:
    run = ThreadRun(case)
    started = first.order(op="run", thread_id=case.thread_id, request=case.request)
    run.started_by, run.run_s = started["pid"], started["seconds"]
    run.run_status = started.get("status", "")
    if "error" in started or run.run_status != "awaiting_approval":
        run.error = started.get("error", f"run ended {run.run_status}")
        return run
    resumed = second.order(op="resume", thread_id=case.thread_id)
    run.resumed_by, run.resume_s = resumed["pid"], resumed["seconds"]
    run.final_status = resumed.get("status", "")
    run.error = resumed.get("error", "")
    return run


def scale_demo(threads: int = 50, *, progress: bool = False) -> dict[str, Any]:
    """Start the servers, run ``threads`` threads across two workers, check, stop everything."""
    from domains.support_desk import SupportDesk
    from evals.servers import chroma_server, postgres_server
    from retrieval.embeddings import embedder_for
    from retrieval.store import CorpusStore

    chosen = cases(threads)

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="keel-scale-") as tmp,
        postgres_server() as pg,
        chroma_server() as chroma,
    ):
        home = Path(tmp) / "home"
        say(f"PostgreSQL on 127.0.0.1:{pg.port}, Chroma server on {chroma.url}")
        # The receipts' key of this deployment: the workers and the checks share it.
        approval_key = secrets.token_hex(32)
        settings = Settings(
            home=home,
            postgres_url=pg.url(),  # type: ignore[arg-type]
            chroma_url=chroma.url,
            approval_key=approval_key,  # type: ignore[arg-type]
            _env_file=None,  # type: ignore[call-arg]
        )
        ingest = CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
        say(f"ingested {ingest.added} chunks into the Chroma server")
        SupportDesk().prepare(settings, reset=True)
        seed_cases(settings.domain_db, chosen)
        setup_s = time.perf_counter() - t0

        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(
            KEEL_HOME=str(home),
            KEEL_POSTGRES_URL=pg.url(),
            KEEL_APPROVAL_KEY=approval_key,  # one key for every worker (Postgres requires it)
            KEEL_CHROMA_URL=chroma.url,
            LANGSMITH_TRACING="false",
        )
        log_path = Path(tmp) / "workers.log"
        with log_path.open("w") as log:
            workers = [Worker.start(env, log), Worker.start(env, log)]
            try:
                for w in workers:
                    try:
                        w.wait_ready()
                    except KeelError as err:
                        log.flush()
                        last = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                        raise KeelError(f"{err}: {' '.join(last)}") from err
                say(f"workers {workers[0].pid} and {workers[1].pid} ready; {threads} threads")
                t1 = time.perf_counter()
                with ThreadPoolExecutor(max_workers=2) as pool:
                    runs = list(
                        pool.map(
                            lambda c: _drive(c, workers[c.index % 2], workers[1 - c.index % 2]),
                            chosen,
                        )
                    )
                wall_s = time.perf_counter() - t1
            finally:
                interrupted = sys.exc_info()[0] is not None
                for w in workers:
                    w.stop(interrupted=interrupted)
        checks = _check(settings, pg.url(), chosen, runs)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    resumes = [r for r in runs if r.final_status]
    report: dict[str, Any] = {
        "threads": threads,
        "workers": [w.pid for w in workers],
        "completed": sum(r.final_status == "done" for r in runs),
        "cross_process_resumes": sum(
            r.final_status == "done" and r.resumed_by != r.started_by != 0 for r in runs
        ),
        **checks,
        "errors": [f"{r.case.thread_id}: {r.error}" for r in runs if r.error][:5],
        "wall_s": round(wall_s, 2),
        "threads_per_min": round(60 * threads / wall_s, 1) if wall_s else 0.0,
        "run_p50_ms": _ms(statistics.median(r.run_s for r in runs)),
        "run_p95_ms": _ms(_p95([r.run_s for r in runs])),
        "resume_p50_ms": _ms(statistics.median(r.resume_s for r in resumes)) if resumes else None,
        "resume_p95_ms": _ms(_p95([r.resume_s for r in resumes])) if resumes else None,
        "setup_s": round(setup_s, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }
    if report["errors"] and tail:
        report["worker_log_tail"] = tail
    return report


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
    from tools.ledger_postgres import PostgresIntentLedger

    backend = DemoBackend(settings.domain_db)
    owner = PostgresIntentLedger(postgres_url).owners()
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
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
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
        f"scale demo: {r['threads']} threads across 2 worker processes (pids {r['workers']}), "
        "checkpoints in PostgreSQL, retrieval from a Chroma server",
        f"  completed                {r['completed']}/{r['threads']}",
        f"  resumed by the other worker  {r['cross_process_resumes']}",
        f"  crossed state            {r['crossed_state']}",
        f"  duplicate irreversible   {r['duplicate_irreversible']}",
        f"  refunds / e-mails        {r['refunds']} / {r['emails']}"
        f" (missing: {r['missing_side_effects']}, unattributed: "
        f"{r['unattributed_side_effects']})",
        f"  threads in Postgres      {r['threads_in_postgres']} (SQLite checkpoints or intents"
        f" written: {'yes' if sqlite_used else 'no'})",
        f"  wall time                {r['wall_s']} s ({r['threads_per_min']} threads/min); "
        f"run p50 {r['run_p50_ms']} ms, p95 {r['run_p95_ms']} ms; "
        f"resume p50 {r['resume_p50_ms']} ms, p95 {r['resume_p95_ms']} ms",
        f"  set-up (servers, ingest, seed) {r['setup_s']} s; total {r['total_s']} s",
    ]
    lines += [f"  error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def healthy(report: dict[str, Any]) -> bool:
    """Every thread finished by the other worker, each side effect once, nothing crossed."""
    n = report["threads"]
    return bool(
        report["completed"] == n
        and report["cross_process_resumes"] == n
        and report["crossed_state"] == 0
        and report["duplicate_irreversible"] == 0
        and report["missing_side_effects"] == 0
        and report["unattributed_side_effects"] == 0
        and report["threads_in_postgres"] == n
        and not report["sqlite_checkpoints_written"]
        and not report["sqlite_intents_written"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.scale_demo", description=__doc__)
    parser.add_argument("role", nargs="?", choices=["coordinator", "worker"], default="coordinator")
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.role == "worker":
        return worker_main()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        report = scale_demo(args.threads, progress=not args.json)
    except KeelError as err:
        print(f"scale-demo: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (evals.servers.Terminated)
        print("scale-demo: interrupted; its servers are stopped and removed", file=sys.stderr)
        return 130
    print(json.dumps(report) if args.json else summary(report))
    return 0 if healthy(report) else 1


if __name__ == "__main__":
    sys.exit(main())
