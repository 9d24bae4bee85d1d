"""The budgets eval on the engine: threads of one team on Aegra worker processes over one
PostgreSQL, against one team budget, with the costly model served over HTTP
(:mod:`evals.costly_server`) so each worker's ``ChatOpenAI`` and meter run as in production.

``keel eval --suite budgets --engine`` runs it (``KEEL_EVAL_BUDGETS_ENGINE``); the integration
test ``tests/integration/test_budgets_engine.py`` drives the same helpers with a few threads and
kills a worker in the middle of a model call. Every thread carries every kind of budget at once
(tokens, calls and money, each thread's and the team's for the day: :data:`BUDGETS`), so the
first to run out stops it; the figures say, per kind, what the model billed above each budget.
The baseline is not served by the engine; its concurrent figures are the SQLite part's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agents.planner import BUDGET_PLANNER
from agents.usage import BudgetRule
from evals.budgets_eval import BUDGETS, KINDS, MODEL, PRICES, REQUEST, rules
from evals.costly_server import CostlyServer, costly_server

USERS = ("ann:requester", "bob:requester", "cat:requester", "dan:requester")
"""The team's members: each starts a share of the threads (one team: ``KEEL_API_TEAM``)."""


def engine_budgets() -> list[BudgetRule]:
    """Every kind at once: each thread's budget and the team's for the day."""
    return [rule for kind in KINDS for rule in rules(kind, team=True)]


def budget_env(url: str, *, ttl_s: float = 600.0, model_timeout_s: float = 30.0) -> dict[str, str]:
    """What the workers need for the costly model and the budgets (``engine(extra_env=...)``)."""
    return {
        "KEEL_PLANNER_MODEL": MODEL,
        "KEEL_OPENAI_BASE_URL": url,
        "KEEL_OPENAI_API_KEY": "not-a-key",
        "KEEL_MODEL_PRICES": json.dumps({m: p.model_dump() for m, p in PRICES.prices.items()}),
        "KEEL_BUDGETS": json.dumps([b.model_dump(exclude_none=True) for b in engine_budgets()]),
        "KEEL_PLAN_REPAIR_ATTEMPTS": "3",
        "KEEL_MAX_REPLANS": "3",
        "KEEL_MODEL_MAX_RETRIES": "0",
        "KEEL_MODEL_TIMEOUT_S": str(model_timeout_s),
        "KEEL_BUDGET_RESERVATION_TTL_S": str(ttl_s),
    }


@contextmanager
def budgets_engine(
    *,
    workers: int = 2,
    worker_count: int = 2,
    lease_s: int | None = None,
    ttl_s: float = 600.0,
    model_timeout_s: float = 30.0,
    say: Any = None,
) -> Iterator[tuple[Any, CostlyServer]]:
    """The costly model's server and an engine whose workers call it, both stopped on exit."""
    from keel.serve import engine

    with (
        costly_server(PRICES, MODEL) as model,
        engine(
            workers=workers, worker_count=worker_count, users=USERS, lease_s=lease_s,
            durable=False, extra_env=budget_env(model.url, ttl_s=ttl_s,
                                                model_timeout_s=model_timeout_s),
            say=say,
        ) as running,
    ):  # fmt: skip
        yield running, model


@dataclass
class EngineThread:
    ref: str
    thread_id: str = ""
    run_status: str = ""
    values: dict[str, Any] | None = None
    error: str | None = None


def start_thread(running: Any, user: str, ref: str) -> tuple[str, str]:
    """Start one thread of ``user`` whose request names ``ref``; its thread and run ids."""
    client = running.client(user)
    thread_id = client.threads.create()["thread_id"]
    run = client.runs.create(
        thread_id, "keel", input={"request": f"{REQUEST} (ref {ref})"}, multitask_strategy="reject"
    )
    return thread_id, str(run["run_id"])


def drive(running: Any, refs: Sequence[str], timeout_s: float = 600.0) -> list[EngineThread]:
    """Start every thread at once (users in turn), then wait for each run and read its state."""
    from keel.engine import wait_for_run

    users = [u.split(":")[0] for u in USERS]
    threads = [EngineThread(ref) for ref in refs]
    runs: dict[str, str] = {}

    def start(n: int, thread: EngineThread) -> None:
        try:
            thread.thread_id, runs[thread.ref] = start_thread(
                running, users[n % len(users)], thread.ref
            )
        except Exception as err:  # an SDK or HTTP error: reported per thread
            thread.error = f"{type(err).__name__}: {str(err)[:200]}"

    starters = [threading.Thread(target=start, args=(n, t)) for n, t in enumerate(threads)]
    for s in starters:
        s.start()
    for s in starters:
        s.join()
    for n, thread in enumerate(threads):
        if thread.error is not None:
            continue
        client = running.client(users[n % len(users)])
        try:
            thread.run_status = str(
                wait_for_run(client, thread.thread_id, runs[thread.ref], timeout_s)["status"]
            )
            thread.values = client.threads.get_state(thread.thread_id)["values"]
        except Exception as err:
            thread.error = f"{type(err).__name__}: {str(err)[:200]}"
    return threads


def figures(threads: Sequence[EngineThread], model: CostlyServer, store: Any) -> dict[str, Any]:
    """Per kind: overspend (each thread's budget and the team's, from what the model billed);
    outcomes; and what Keel's store holds (reservations still held, spend counted)."""
    out: dict[str, Any] = {"threads": len(threads), "errors": [t.error for t in threads if t.error]}
    statuses = [str((t.values or {}).get("status", t.run_status)) for t in threads]
    planners = [str((t.values or {}).get("planner", "")) for t in threads]
    stops = [(t.values or {}).get("budget_stop") is not None for t in threads]
    escalated = [
        s == "escalated" and bool(((t.values or {}).get("escalation") or {}).get("budget"))
        for s, t in zip(statuses, threads, strict=True)
    ]
    spends = store.spends(team=None)
    thread_ids = {t.thread_id for t in threads}
    mine = [s for s in spends if s.thread_id in thread_ids]
    out["outcomes"] = {
        "statuses": sorted(statuses),
        "stopped_by_budget": sum(stops),
        "escalated_over_budget": sum(escalated),
        "answered_by_runbook": sum(
            p == BUDGET_PLANNER and (t.values or {}).get("plan") is not None
            for p, t in zip(planners, threads, strict=True)
        ),
        "run_errors": sum(t.run_status == "error" for t in threads),
    }
    out["store"] = {
        "calls": len(mine),
        "held": sum(s.status == "held" for s in mine),
        "by_status": {
            st: sum(s.status == st for s in mine) for st in sorted({s.status for s in mine})
        },
    }
    out["kinds"] = {}
    for kind in KINDS:
        b = BUDGETS[kind]
        spent = [model.spent(t.ref)[kind] for t in threads]
        over = [max(0, s - b.thread) for s in spent]
        team = sum(spent)
        team_over = max(0, team - b.team)
        completed = [
            st in ("done", "awaiting_approval") and s <= b.thread
            for st, s in zip(statuses, spent, strict=True)
        ]
        out["kinds"][kind] = {
            "thread_budget": b.thread, "team_budget": b.team,
            "overspend": sum(over) + team_over, "threads_over_budget": sum(o > 0 for o in over),
            "team_spent": team, "team_overspend": team_over,
            "completed_within_budget": sum(completed),
        }  # fmt: skip
    return out


def run_on_engine(
    threads: int = 20, workers: int = 2, worker_count: int = 2, progress: bool = False
) -> dict[str, Any]:
    """``threads`` threads of one team (``loop`` and ``long`` in turn) on ``workers`` Aegra
    worker processes against one team budget; the figures of :func:`figures`."""
    from stores.backends import open_stores

    say = (lambda text: print(text, flush=True)) if progress else None
    refs = [f"{('loop', 'long')[n % 2]}-{n}" for n in range(threads)]
    with budgets_engine(workers=workers, worker_count=worker_count, say=say) as (running, model):
        ran = drive(running, refs)
        store = open_stores(running.settings).budgets  # the engine's: in its PostgreSQL
        try:
            result = figures(ran, model, store)
        finally:
            store.close()
    return {"workers": workers, "worker_loops": worker_count, **result}
