"""The budgets eval: a model that misbehaves in the ways that cost money, Keel against
``create_agent`` with LangChain's ``ModelCallLimitMiddleware``, one thread at a time and many
threads of one team at once, for every kind of budget (tokens, calls, money).

The model (:class:`CostlyModel`) bills what it reports in ``usage_metadata`` at the prices of
:data:`PRICES`; its own ledger is the ground truth of what each thread spent, whatever the agent
believed. Behaviours:

- ``loop``: it never hands in a valid plan (Keel repairs and replans; the baseline calls a read
  tool over and over, its history growing);
- ``long``: the same loop with very long answers (8,000 tokens wanted; a provider stops at
  ``max_tokens`` when one is sent, as Keel's meter does, and not otherwise);
- ``fallback``: Keel's primary model times out on every call and its fallback loops; the
  baseline (no fallback model of its own) loops as in ``loop``.

A prompt bloated by outside text is not among them: Keel cuts each planner prompt to
``KEEL_PLANNER_BUDGET_TOKENS`` and refuses a request over ``KEEL_MAX_REQUEST_CHARS``.

Figures per budget kind and agent: ``overspend`` (spend above each budget, in the budget's unit,
summed over budgets: each thread's, and in the concurrent part the team's too), and beside it
``escalated_over_budget`` (threads stopped by a budget, ended escalated with an account),
``answered_by_runbook`` (threads a budget stopped that the free runbook planner answered),
``completed_within_budget`` (threads that ended with an answer or a plan awaiting approval within
their budget) and ``metering_overhead_ms`` (the meter's own time per call). Keel's meter sends
``max_tokens`` and reserves the prompt's estimate (high on purpose) plus it, so a call's billed
spend is bounded by its own reservation, and what was reserved fits in every budget.

The concurrent part runs ``threads`` threads of one team on ``workers`` worker processes that
share the SQLite budget store of one home; with ``engine=True`` also on the engine (Aegra worker
processes over PostgreSQL, the model over HTTP: :mod:`evals.budgets_engine`). The baseline's call
limits are per thread: it has no team budget to keep, and its team figure says what that costs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field, PrivateAttr

from agents.models import MeterEvent
from agents.planner import BUDGET_PLANNER
from agents.usage import MICROS, BudgetRule, Price, PriceTable
from evals.baselines import baseline_tools
from evals.bench_meter import bench_meter
from graph.context import KeelContext
from graph.domain import load_domain, tool_registry
from keel.app import KeelApp
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore

Behaviour = Literal["loop", "long", "fallback"]
BEHAVIOURS: tuple[Behaviour, ...] = ("loop", "long", "fallback")
Kind = Literal["tokens", "calls", "money"]
KINDS: tuple[Kind, ...] = ("tokens", "calls", "money")
REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
MODEL = "costly-model"
PRICES = PriceTable(prices={MODEL: Price(input=2.5, output=10.0)})
"""What the costly model charges, in dollars per million tokens (Keel's price table says the
same: ``KEEL_MODEL_PRICES``)."""
BASELINE = "create_agent+ModelCallLimitMiddleware"


@dataclass(frozen=True)
class BudgetLimits:
    """One kind's budgets, in its unit (tokens, calls, micro-dollars): a thread's, the team's for
    the concurrent part, and a well-behaved call's spend, from which the baseline's call limit
    is derived (the thread's budget over it)."""

    thread: int
    team: int
    typical_call: int

    @property
    def call_limit(self) -> int:
        return max(1, self.thread // self.typical_call)


BUDGETS: dict[Kind, BudgetLimits] = {
    "tokens": BudgetLimits(thread=12_000, team=60_000, typical_call=3_000),
    "calls": BudgetLimits(thread=4, team=20, typical_call=1),
    "money": BudgetLimits(thread=60_000, team=300_000, typical_call=15_000),  # $0.06 and $0.30
}


def rules(kind: Kind, *, team: bool) -> list[BudgetRule]:
    """Keel's budgets of one kind: each thread's, and (``team``) the team's for the day."""
    b = BUDGETS[kind]

    def rule(scope: Literal["thread", "team"], limit: int) -> BudgetRule:
        period: Literal["lifetime", "day"] = "lifetime" if scope == "thread" else "day"
        if kind == "money":
            return BudgetRule(scope=scope, period=period, cost_usd=limit / MICROS)
        if kind == "calls":
            return BudgetRule(scope=scope, period=period, calls=limit)
        return BudgetRule(scope=scope, period=period, tokens=limit)

    return [rule("thread", b.thread)] + ([rule("team", b.team)] if team else [])


class CostlyModel(BaseChatModel):
    """A chat model that bills what it reports, misbehaving as ``behaviour`` says.

    ``bills`` is its own ledger (tokens and micro-dollars per call); ``tool`` is a read tool the
    baseline's loop calls again and again.
    """

    behaviour: Behaviour
    failing: bool = False
    baseline: bool = Field(default=False, description="answer with tool calls (create_agent)")
    model_name: str = MODEL
    tool: str = "get_customer"
    long_tokens: int = 8_000
    loop_tokens: int = 600
    _bills: list[tuple[int, int]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "costly"

    def spent(self) -> dict[Kind, int]:
        """What it billed: tokens, calls, micro-dollars."""
        with self._lock:
            return {
                "tokens": sum(t for t, _ in self._bills),
                "calls": len(self._bills),
                "money": sum(c for _, c in self._bills),
            }

    def bind_tools(self, tools: Any, **kwargs: Any) -> Runnable[Any, AIMessage]:  # type: ignore[override]
        return self  # type: ignore[return-value]

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if self.failing:
            raise TimeoutError("the primary model timed out")
        prompt = int(count_tokens_approximately(messages))
        cap = kwargs.get("max_tokens")
        wanted = self.long_tokens if self.behaviour == "long" else self.loop_tokens
        output = min(wanted, cap) if cap else wanted
        if self.baseline:
            message = AIMessage(
                "more words " * min(output, 200),
                tool_calls=[{"name": self.tool, "args": {"customer_id": "C-1001"},
                             "id": f"c{len(self._bills)}"}],
            )  # fmt: skip
        else:
            message = AIMessage("I think the plan is " + "more words " * min(output, 200))
        message.usage_metadata = {
            "input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
        }  # fmt: skip
        cost = PRICES.cost_micros(MODEL, input_tokens=prompt, output_tokens=output) or 0
        with self._lock:
            self._bills.append((prompt + output, cost))
        return ChatResult(generations=[ChatGeneration(message=message)])


def _home(settings: Settings, scratch: Path, name: str) -> Settings:
    """A home of its own: the indexed corpus copied, the domain's backend seeded fresh."""
    home = scratch / name
    shutil.copytree(settings.chroma_dir, home / "chroma")
    fresh = settings.model_copy(update={"home": home})
    load_domain(fresh.domain).prepare(fresh, reset=True)
    return fresh


def _keel_settings(settings: Settings, kind: Kind, *, team: bool) -> Settings:
    return settings.model_copy(
        update={"budgets": rules(kind, team=team), "model_prices": PRICES.prices,
                "plan_repair_attempts": 3, "max_replans": 3, "record": False}
    )  # fmt: skip


def _add(a: dict[Kind, int], b: dict[Kind, int]) -> dict[Kind, int]:
    return {k: a[k] + b[k] for k in KINDS}


def keel_thread(app: KeelApp, behaviour: Behaviour) -> dict[str, Any]:
    """One thread of Keel with a costly planner model (and a looping fallback)."""
    primary = CostlyModel(behaviour=behaviour, failing=behaviour == "fallback")
    fallback = CostlyModel(behaviour="loop") if behaviour == "fallback" else None
    app.context.planner_model = primary
    app.context.fallback_model = fallback
    out = app.run(REQUEST)
    spent = _add(primary.spent(), fallback.spent()) if fallback else primary.spent()
    return {
        "agent": "keel",
        "behaviour": behaviour,
        "spent": spent,
        "status": out.status,
        "stopped_by_budget": out.budget_stop is not None,
        "escalated_with_account": out.status == "escalated"
        and out.escalation is not None
        and out.escalation.budget is not None,
        "completed": out.status in ("done", "awaiting_approval"),
        # The planner's label names the budget stop whether the runbook planned or not.
        "runbook_stood_in": out.planner == BUDGET_PLANNER and out.plan is not None,
    }


def baseline_thread(settings: Settings, behaviour: Behaviour, kind: Kind) -> dict[str, Any]:
    """One thread of ``create_agent`` with ``ModelCallLimitMiddleware`` (a per-thread call limit
    derived from the same budget), and no fallback of its own but the middleware's."""
    model = CostlyModel(behaviour=behaviour, baseline=True)
    tools = baseline_tools(tool_registry(load_domain(settings.domain), settings))
    limit = BUDGETS[kind].call_limit
    agent = create_agent(
        model, tools,
        middleware=[ModelCallLimitMiddleware(thread_limit=limit, run_limit=limit,
                                             exit_behavior="end")],
    )  # fmt: skip
    state = agent.invoke({"messages": [HumanMessage(REQUEST)]}, {"recursion_limit": 200})
    last = state["messages"][-1]
    stopped = "limit" in str(last.content).lower()
    return {
        "agent": BASELINE,
        "behaviour": behaviour,
        "spent": model.spent(),
        "status": "stopped" if stopped else "done",
        "stopped_by_budget": stopped,
        "escalated_with_account": False,  # the middleware ends the thread with a message only
        "completed": not stopped,
        "runbook_stood_in": False,
    }


def summary(
    rows: list[dict[str, Any]], kind: Kind, overhead: list[float] | None, *, team: bool = False
) -> dict[str, Any]:
    """One agent's figures over ``rows`` for a budget of ``kind``: overspend per thread budget
    (and the team's, with ``team``), summed; outcomes; the meter's overhead."""
    b = BUDGETS[kind]
    spent = [r["spent"][kind] for r in rows]
    over = [max(0, s - b.thread) for s in spent]
    team_spent = sum(spent)
    team_over = max(0, team_spent - b.team) if team else 0
    out: dict[str, Any] = {
        "threads": len(rows),
        "overspend": sum(over) + team_over,
        "threads_over_budget": sum(o > 0 for o in over),
        "escalated_over_budget": sum(r["escalated_with_account"] for r in rows),
        "answered_by_runbook": sum(r["runbook_stood_in"] for r in rows),
        "stopped_by_budget": sum(r["stopped_by_budget"] for r in rows),
        "completed_within_budget": sum(
            r["completed"] and s <= b.thread for r, s in zip(rows, spent, strict=True)
        ),
        "spent": team_spent,
        "billed_tokens": sum(r["spent"]["tokens"] for r in rows),
        "metering_overhead_ms": round(statistics.mean(overhead), 3) if overhead else None,
        "by_behaviour": {
            beh: {"overspend": sum(o for o, r in zip(over, rows, strict=True)
                                   if r["behaviour"] == beh),
                  "statuses": sorted(r["status"] for r in rows if r["behaviour"] == beh)}
            for beh in BEHAVIOURS
        },
    }  # fmt: skip
    if team:
        out |= {"team_spent": team_spent, "team_overspend": team_over}
    return out


def _settled(event: MeterEvent, *, into: list[float]) -> None:
    if event.action == "settled":
        into.append(event.overhead_ms)


def _worker(home: str, count: int, offset: int) -> None:
    """One worker process of the concurrent part: ``count`` threads of the team, in turn; prints
    its rows and the meter's own time per settled call."""
    settings = Settings(home=Path(home))
    rows = []
    overhead: list[float] = []
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        # The embedded Chroma index is one process's by design: the workers open it in turn (a
        # client starting beside another one's first read can see no collection), then share it.
        with open(Path(home) / ".workers-open.lock", "w") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            app.preflight()
        assert app.context.meter is not None
        app.context.meter.listeners.append(partial(_settled, into=overhead))
        for n in range(count):
            rows.append(keel_thread(app, BEHAVIOURS[(offset + n) % len(BEHAVIOURS)]))
    print(json.dumps({"rows": rows, "overhead_ms": overhead}), flush=True)


def run_budgets_eval(
    settings: Settings,
    *,
    per_behaviour: int = 2,
    threads: int = 24,
    workers: int = 2,
    kinds: tuple[Kind, ...] = KINDS,
    progress: bool = False,
) -> dict[str, Any]:
    """For each budget kind: single-threaded (``per_behaviour`` threads of each behaviour per
    agent), then ``threads`` threads of one team on ``workers`` processes sharing one budget
    store (the part on the engine is :func:`evals.budgets_engine.run_on_engine`)."""
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    out: dict[str, Any] = {
        "model": MODEL,
        "prices": {m: p.model_dump() for m, p in PRICES.prices.items()},
        "budgets": {
            kind: {"thread": b.thread, "team": b.team, "baseline_call_limit": b.call_limit,
                   "unit": "micro-dollars" if kind == "money" else kind}
            for kind, b in BUDGETS.items() if kind in kinds
        },
        "kinds": {},
        "meter_bench": bench_meter(settings),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="keel-budgets-") as scratch:
        for kind in kinds:
            single = _keel_settings(
                _home(settings, Path(scratch), f"single-{kind}"), kind, team=False
            )
            keel_rows, base_rows = [], []
            overhead: list[float] = []
            with KeelApp.open(single, KeelContext.from_settings(single)) as app:
                assert app.context.meter is not None
                app.context.meter.listeners.append(partial(_settled, into=overhead))
                for behaviour in BEHAVIOURS:
                    for _ in range(per_behaviour):
                        keel_rows.append(keel_thread(app, behaviour))
                        base_rows.append(baseline_thread(single, behaviour, kind))
            # Told to escalate instead of letting the runbook planner stand in: every thread a
            # budget stops ends escalated with its account.
            escalating = single.model_copy(
                update={
                    "budget_exhausted": "escalate",
                    "home": single.home.with_name(f"esc-{kind}"),
                }
            )
            shutil.copytree(single.home, escalating.home)
            escalated_rows: list[dict[str, Any]] = []
            esc_overhead: list[float] = []
            with KeelApp.open(escalating, KeelContext.from_settings(escalating)) as app:
                assert app.context.meter is not None
                app.context.meter.listeners.append(partial(_settled, into=esc_overhead))
                for behaviour in BEHAVIOURS:
                    for _ in range(per_behaviour):
                        escalated_rows.append(keel_thread(app, behaviour))
            if progress:
                print(f"budgets eval: {kind}, one thread at a time", file=sys.stderr)
            shared = _keel_settings(_home(settings, Path(scratch), f"team-{kind}"), kind, team=True)
            out["kinds"][kind] = {
                "single": {"keel": summary(keel_rows, kind, overhead),
                           BASELINE: summary(base_rows, kind, None)},
                "single_escalate": {"keel": summary(escalated_rows, kind, esc_overhead)},
                "concurrent": _concurrent(shared, kind, threads, workers),
            }  # fmt: skip
            if progress:
                print(f"budgets eval: {kind}, {threads} threads at once", file=sys.stderr)
    return out


def _concurrent(settings: Settings, kind: Kind, threads: int, workers: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(
        KEEL_HOME=str(settings.home), KEEL_RECORD="false",
        KEEL_BUDGETS=json.dumps([b.model_dump(exclude_none=True) for b in settings.budgets]),
        KEEL_MODEL_PRICES=json.dumps({m: p.model_dump() for m, p in PRICES.prices.items()}),
        KEEL_PLAN_REPAIR_ATTEMPTS=str(settings.plan_repair_attempts),
        KEEL_MAX_REPLANS=str(settings.max_replans), LANGSMITH_TRACING="false",
    )  # fmt: skip
    share = [threads // workers + (w < threads % workers) for w in range(workers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "evals.budgets_eval", str(settings.home), str(n), str(w)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=settings.home,
        )
        for w, n in enumerate(share)
    ]
    keel_rows: list[dict[str, Any]] = []
    overhead: list[float] = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"a budgets eval worker failed (exit {proc.returncode})")
        answer = json.loads(stdout.strip().splitlines()[-1])
        keel_rows += answer["rows"]
        overhead += answer["overhead_ms"]
    base_rows = [
        baseline_thread(settings, BEHAVIOURS[n % len(BEHAVIOURS)], kind) for n in range(threads)
    ]
    return {
        "threads": threads,
        "workers": workers,
        "shared_store": "SQLite (one home, worker processes)",
        "keel": summary(keel_rows, kind, overhead, team=True),
        BASELINE: summary(base_rows, kind, None, team=True),
    }


def _amount(kind: Kind, value: int) -> str:
    if kind == "money":
        return f"${value / MICROS:,.4f}"
    return f"{value:,}"


def markdown(result: dict[str, Any]) -> str:
    """The page ``docs/budgets-eval.md``: one table per budget kind, Keel beside the baseline."""
    lines = [
        "# Budgets: the eval's figures",
        "",
        "<!-- Written by `keel eval --suite budgets --out docs` (evals/budgets_eval.py); do not "
        "edit by hand. -->",
        "",
        "Written by `keel eval --suite budgets --out docs` (add `--engine` for the part on the "
        "engine). A model that misbehaves in the ways that cost money (it loops on an invalid "
        "plan, answers at 8,000 tokens, or times out so the fallback loops) drives Keel and "
        f"`create_agent` with `ModelCallLimitMiddleware`. The model, `{result['model']}`, bills "
        "what it reports at "
        + ", ".join(f"${p['input']:g} in and ${p['output']:g} out per million tokens"
                    for p in result["prices"].values())
        + "; its own ledger is the ground truth. `overspend` is spend above each budget in its "
        "unit, summed over budgets (each thread's; in the concurrent rows the team's too). The "
        "baseline's call limit is the thread's budget over a well-behaved call's spend. "
        "[How budgets work](budgets.md).",
        "",
    ]  # fmt: skip
    header = (
        "| budget | run | agent | threads | overspend | threads over budget | "
        "escalated_over_budget | answered_by_runbook | completed_within_budget | spent | "
        "metering_overhead_ms |"
    )
    for kind, parts in result["kinds"].items():
        b = result["budgets"][kind]
        thread, team = _amount(kind, b["thread"]), _amount(kind, b["team"])
        lines += [
            f"## {kind}",
            "",
            f"Each thread's budget {thread}{'' if kind == 'money' else ' ' + kind}; the team's "
            f"{team} a day in the concurrent part; the baseline's call limit "
            f"{b['baseline_call_limit']}.",
            "",
            header,
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs = [("single", "one at a time", parts["single"])]
        if "single_escalate" in parts:
            runs.append(
                ("single_escalate", "one at a time, told to escalate", parts["single_escalate"])
            )
        conc = parts["concurrent"]
        runs.append(("concurrent", f"{conc['threads']} threads, {conc['workers']} processes", conc))
        for _, label, figures in runs:
            for agent in ("keel", BASELINE):
                if agent not in figures:
                    continue
                f = figures[agent]
                overhead = f["metering_overhead_ms"]
                lines.append(
                    f"| {kind} | {label} | {agent} | {f['threads']} | "
                    f"{_amount(kind, f['overspend'])} | {f['threads_over_budget']} | "
                    f"{f['escalated_over_budget']} | {f['answered_by_runbook']} | "
                    f"{f['completed_within_budget']} | {_amount(kind, f['spent'])} | "
                    f"{'-' if overhead is None else overhead} |"
                )
        lines.append("")
    bench = result.get("meter_bench")
    if bench is not None:
        lines += [
            "## The meter's own cost",
            "",
            f"The same instant fake model called {bench['calls']} times bare and through the "
            f"meter ({bench['store']}, three budgets applying; `keel bench --only meter`): "
            f"the meter adds {bench['meter_overhead_ms']} ms a call (median, metered minus "
            f"bare); its own time is {bench['meter_own_median_ms']} ms median, "
            f"{bench['meter_own_p95_ms']} ms p95. The `metering_overhead_ms` above is the "
            "meter's own time per call under the graph (mean), on this machine while the eval "
            "ran.",
            "",
        ]
    if result.get("engine") is not None:
        lines += engine_markdown(result["engine"])
    return "\n".join(lines).rstrip() + "\n"


def engine_markdown(engine: dict[str, Any]) -> list[str]:
    """The page's section on the engine part (:mod:`evals.budgets_engine`)."""
    o, store = engine["outcomes"], engine["store"]
    lines = [
        "## On the engine",
        "",
        f"{engine['threads']} threads of one team (four users) started at once on "
        f"{engine['workers']} Aegra worker processes ({engine['worker_loops']} worker loops "
        "each) over one PostgreSQL, the costly model served over HTTP to each worker's "
        "`ChatOpenAI`; every thread carries every kind of budget at once (each thread's and the "
        "team's for the day, as above), so the first to run out stops it. The baseline is not "
        "served by the engine: its concurrent figures are above.",
        "",
        "| budget | overspend | threads over budget | team spent | team budget | "
        "completed_within_budget |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        f = engine["kinds"][kind]
        lines.append(
            f"| {kind} | {_amount(kind, f['overspend'])} | {f['threads_over_budget']} | "
            f"{_amount(kind, f['team_spent'])} | {_amount(kind, f['team_budget'])} | "
            f"{f['completed_within_budget']} |"
        )
    lines += [
        "",
        f"Stopped by a budget: {o['stopped_by_budget']}; answered_by_runbook: "
        f"{o['answered_by_runbook']}; escalated_over_budget: {o['escalated_over_budget']}; runs "
        f"that failed: {o['run_errors']}; client errors: {len(engine['errors'])}. Keel's store "
        f"after the runs: {store['calls']} model calls, {store['held']} reservations still "
        f"held ({', '.join(f'{n} {s}' for s, n in store['by_status'].items())}).",
        "",
    ]
    return lines


def write_budgets_eval(result: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write ``budgets-eval.json`` and ``budgets-eval.md`` into ``folder``."""
    from evals.artifacts import write_artifacts

    return write_artifacts(folder, "budgets-eval", result, markdown(result))


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
