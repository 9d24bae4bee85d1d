"""The budgets eval: a model that misbehaves in the ways that cost money, Keel against
``create_agent`` with LangChain's ``ModelCallLimitMiddleware``, one thread at a time and many
threads of one team at once.

The model (:class:`CostlyModel`) bills what it reports in ``usage_metadata``; its own ledger is
the ground truth of what each thread spent, whatever the agent believed. Behaviours:

- ``loop``: it never hands in a valid plan (Keel repairs and replans; the baseline calls a read
  tool over and over, its history growing);
- ``long``: the same loop with very long answers (8,000 tokens wanted; a provider stops at
  ``max_tokens`` when one is sent, as Keel's meter does, and not otherwise);
- ``fallback``: Keel's primary model times out on every call and its fallback loops; the
  baseline (no fallback model of its own) loops as in ``loop``.

A prompt bloated by outside text is not among them: Keel cuts each planner prompt to
``KEEL_PLANNER_BUDGET_TOKENS`` and refuses a request over ``KEEL_MAX_REQUEST_CHARS``.

Figures per agent: ``overspend`` (tokens billed above each budget, summed over budgets),
``escalated_over_budget`` (threads stopped by a budget, ended with an account),
``completed_within_budget`` (threads that ended with an answer or a plan awaiting approval,
within their budget), ``metering_overhead_ms`` (the meter's own time per call).

The concurrent part runs ``threads`` threads of one team on ``workers`` worker processes that
share the SQLite budget store of one home (not the engine: see docs/budgets.md); the baseline's call
limits are per thread, so it has no team budget to keep.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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

from agents.usage import BudgetRule
from evals.baselines import baseline_tools
from graph.context import KeelContext
from graph.domain import load_domain
from keel.app import KeelApp
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore

Behaviour = Literal["loop", "long", "fallback"]
BEHAVIOURS: tuple[Behaviour, ...] = ("loop", "long", "fallback")
REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
THREAD_TOKENS = 12_000
"""Each thread's budget in tokens (Keel's budget; the baseline's call limit is derived from it)."""
TEAM_TOKENS = 60_000
"""The team's budget in tokens for the concurrent part."""
TYPICAL_CALL = 3_000
"""Tokens of a well-behaved call: the baseline's call limit is the thread's budget over it."""


class CostlyModel(BaseChatModel):
    """A chat model that bills what it reports, misbehaving as ``behaviour`` says.

    ``billed`` is its own ledger (tokens per call); ``tool`` is a read tool the baseline's loop
    calls again and again.
    """

    behaviour: Behaviour
    failing: bool = False
    baseline: bool = Field(default=False, description="answer with tool calls (create_agent)")
    model_name: str = "costly-model"
    tool: str = "get_customer"
    long_tokens: int = 8_000
    loop_tokens: int = 600
    _billed: list[int] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "costly"

    @property
    def billed(self) -> int:
        with self._lock:
            return sum(self._billed)

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
                             "id": f"c{len(self._billed)}"}],
            )  # fmt: skip
        else:
            message = AIMessage("I think the plan is " + "more words " * min(output, 200))
        message.usage_metadata = {
            "input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
        }  # fmt: skip
        with self._lock:
            self._billed.append(prompt + output)
        return ChatResult(generations=[ChatGeneration(message=message)])


def _home(settings: Settings, scratch: Path, name: str) -> Settings:
    """A home of its own: the indexed corpus copied, the domain's backend seeded fresh."""
    home = scratch / name
    shutil.copytree(settings.chroma_dir, home / "chroma")
    fresh = settings.model_copy(update={"home": home})
    load_domain(fresh.domain).prepare(fresh, reset=True)
    return fresh


def _keel_settings(settings: Settings, *, team: bool) -> Settings:
    budgets = [BudgetRule(scope="thread", tokens=THREAD_TOKENS)]
    if team:
        budgets.append(BudgetRule(scope="team", period="day", tokens=TEAM_TOKENS))
    return settings.model_copy(
        update={"budgets": budgets, "plan_repair_attempts": 3, "max_replans": 3, "record": False}
    )


def keel_thread(app: KeelApp, behaviour: Behaviour) -> dict[str, Any]:
    """One thread of Keel with a costly planner model (and a looping fallback)."""
    primary = CostlyModel(behaviour=behaviour, failing=behaviour == "fallback")
    fallback = CostlyModel(behaviour="loop") if behaviour == "fallback" else None
    app.context.planner_model = primary
    app.context.fallback_model = fallback
    out = app.run(REQUEST)
    billed = primary.billed + (fallback.billed if fallback else 0)
    return {
        "agent": "keel",
        "behaviour": behaviour,
        "billed": billed,
        "status": out.status,
        "stopped_by_budget": out.budget_stop is not None,
        "escalated_with_account": out.status == "escalated"
        and out.escalation is not None
        and out.escalation.budget is not None,
        "completed": out.status in ("done", "awaiting_approval"),
        "runbook_stood_in": out.planner == "runbook (budget exhausted)",
    }


def baseline_thread(settings: Settings, behaviour: Behaviour) -> dict[str, Any]:
    """One thread of ``create_agent`` with ``ModelCallLimitMiddleware`` (per-thread call limit
    derived from the same token budget), and no fallback of its own but the middleware's."""
    model = CostlyModel(behaviour=behaviour, baseline=True)
    tools = baseline_tools(load_domain(settings.domain).tools(settings))
    limit = max(1, THREAD_TOKENS // TYPICAL_CALL)
    agent = create_agent(
        model, tools,
        middleware=[ModelCallLimitMiddleware(thread_limit=limit, run_limit=limit,
                                             exit_behavior="end")],
    )  # fmt: skip
    state = agent.invoke({"messages": [HumanMessage(REQUEST)]}, {"recursion_limit": 200})
    last = state["messages"][-1]
    stopped = "limit" in str(last.content).lower()
    return {
        "agent": "create_agent+ModelCallLimitMiddleware",
        "behaviour": behaviour,
        "billed": model.billed,
        "status": "stopped" if stopped else "done",
        "stopped_by_budget": stopped,
        "escalated_with_account": False,  # the middleware ends the thread with a message only
        "completed": not stopped,
        "runbook_stood_in": False,
    }


def _summary(rows: list[dict[str, Any]], overhead: list[float] | None) -> dict[str, Any]:
    over = [max(0, r["billed"] - THREAD_TOKENS) for r in rows]
    return {
        "threads": len(rows),
        "overspend": sum(over),
        "threads_over_budget": sum(o > 0 for o in over),
        "escalated_over_budget": sum(r["escalated_with_account"] for r in rows),
        "stopped_by_budget": sum(r["stopped_by_budget"] for r in rows),
        "completed_within_budget": sum(
            r["completed"] and r["billed"] <= THREAD_TOKENS for r in rows
        ),
        "answered_by_runbook": sum(r["runbook_stood_in"] for r in rows),
        "billed_tokens": sum(r["billed"] for r in rows),
        "metering_overhead_ms": (
            round(statistics.mean(overhead), 3) if overhead else None
        ),
        "by_behaviour": {
            b: {"overspend": sum(o for o, r in zip(over, rows, strict=True)
                                 if r["behaviour"] == b),
                "statuses": sorted(r["status"] for r in rows if r["behaviour"] == b)}
            for b in BEHAVIOURS
        },
    }  # fmt: skip


def _worker(home: str, count: int, offset: int) -> None:
    """One worker process of the concurrent part: ``count`` threads of the team, in turn."""
    settings = Settings(home=Path(home))
    rows = []
    with KeelApp.open(settings, KeelContext.from_settings(settings)) as app:
        for n in range(count):
            rows.append(keel_thread(app, BEHAVIOURS[(offset + n) % len(BEHAVIOURS)]))
    print(json.dumps(rows), flush=True)


def run_budgets_eval(
    settings: Settings,
    *,
    per_behaviour: int = 2,
    threads: int = 24,
    workers: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """Single-threaded (``per_behaviour`` threads of each behaviour per agent), then
    ``threads`` threads of one team on ``workers`` processes sharing one budget store."""
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    out: dict[str, Any] = {
        "budgets": {"thread_tokens": THREAD_TOKENS, "team_tokens": TEAM_TOKENS,
                    "baseline_call_limit": max(1, THREAD_TOKENS // TYPICAL_CALL)},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="keel-budgets-") as scratch:
        single = _keel_settings(_home(settings, Path(scratch), "single"), team=False)
        keel_rows, base_rows, overhead = [], [], []
        with KeelApp.open(single, KeelContext.from_settings(single)) as app:
            assert app.context.meter is not None
            app.context.meter.listeners.append(
                lambda e: overhead.append(e.overhead_ms) if e.action == "settled" else None
            )
            for behaviour in BEHAVIOURS:
                for _ in range(per_behaviour):
                    keel_rows.append(keel_thread(app, behaviour))
                    base_rows.append(baseline_thread(single, behaviour))
                    if progress:
                        print(f"budgets eval: single {behaviour}", file=sys.stderr)
        out["single"] = {
            "keel": _summary(keel_rows, overhead),
            "create_agent+ModelCallLimitMiddleware": _summary(base_rows, None),
        }
        shared = _keel_settings(_home(settings, Path(scratch), "team"), team=True)
        out["concurrent"] = _concurrent(shared, threads, workers, progress)
    return out


def _concurrent(settings: Settings, threads: int, workers: int, progress: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(
        KEEL_HOME=str(settings.home), KEEL_RECORD="false",
        KEEL_BUDGETS=json.dumps([b.model_dump(exclude_none=True) for b in settings.budgets]),
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
    for proc in procs:
        stdout, _ = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"a budgets eval worker failed (exit {proc.returncode})")
        keel_rows += json.loads(stdout.strip().splitlines()[-1])
    if progress:
        print("budgets eval: concurrent done", file=sys.stderr)
    base_rows = [baseline_thread(settings, BEHAVIOURS[n % len(BEHAVIOURS)]) for n in range(threads)]
    keel_team = sum(r["billed"] for r in keel_rows)
    base_team = sum(r["billed"] for r in base_rows)
    return {
        "threads": threads,
        "workers": workers,
        "shared_store": "SQLite (one home, worker processes), not the engine",
        "keel": _summary(keel_rows, None)
        | {"team_billed": keel_team, "team_overspend": max(0, keel_team - TEAM_TOKENS)},
        "create_agent+ModelCallLimitMiddleware": _summary(base_rows, None)
        | {"team_billed": base_team, "team_overspend": max(0, base_team - TEAM_TOKENS)},
    }


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
