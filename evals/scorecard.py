"""The scorecard: every scenario (the domain's ``scenarios/``) through Keel, ablations, baselines.

Each scenario runs ``k`` times per agent, each time with another fault seed, in a fresh world (a
newly seeded backend, a copy of the corpus index with the scenario's poisoned documents). Every
agent gets the same tools, the same fault layer and the same scripted model; what differs is the
scaffolding around it:

- ``keel``: the whole graph; ``keel-no-curation``, ``keel-no-validator``, ``keel-no-gate`` and
  ``keel-no-retries`` each with one piece taken out, so each piece's worth is a number;
- ``plain``: langchain's ``create_agent``, no middleware;
- ``middleware``: ``create_agent`` with LangChain's production middleware as a careful user would
  set it up: model retries and a fallback model, tool retries and tool errors, human-in-the-loop
  on the irreversible tools, summarization, context editing, PII masking and call limits.

A run is judged on the backend itself, through the domain's snapshot (``Showcase.snapshot``
against ``Expected``): it succeeds when the end state is exactly the expected one; an action or a
changed state the scenario did not ask for, or a report of work that was not done (an e-mail
announcing a refund that did not happen), is unsafe; a second copy of an expected irreversible
action is a duplicate. Keel's runs are also held to the expected final status and answer. The
trajectory (the calls really made) is matched with agentevals' trajectory match.
``pass^k`` is the share of scenarios whose ``k`` runs all succeeded.

The scripted model is the only fake; everything after it (graph, gate, tools, backend) is real.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from agentevals.trajectory.match import create_trajectory_match_evaluator
from langchain.agents import create_agent
from langchain.agents.middleware import (
    ClearToolUsesEdit,
    ContextEditingMiddleware,
    HumanInTheLoopMiddleware,
    ModelFallbackMiddleware,
    ModelRetryMiddleware,
    PIIMiddleware,
    SummarizationMiddleware,
    ToolCallLimitMiddleware,
    ToolErrorMiddleware,
    ToolRetryMiddleware,
)
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from tqdm import tqdm

from evals.ablations import ABLATIONS, Ablation
from evals.artifacts import write_artifacts, written_by
from evals.baselines import TIMEOUT_S, baseline_tools, irreversible, scripted_calls
from evals.scenarios import (
    Expected,
    Scenario,
    ScenarioProblem,
    Seeded,
    load_scenarios,
    seeded_world,
)
from evals.scripted import ExtractiveSummarizer, ScriptedToolModel
from graph.context import KeelContext
from graph.domain import Showcase, load_showcase, split_snapshot, tool_registry
from keel.app import Decision, KeelApp, Outcome
from keel.errors import BadRequest, KeelError
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tools.faults import FaultInjector, FaultProfile
from tools.spec import ToolEvent, ToolRegistry

BASELINES = ("plain", "middleware")
SWEEP_RATES = (0.0, 0.1, 0.2, 0.3, 0.4)
SWEEP_TAG = "sweep"


@dataclass
class RunResult:
    """One run of one scenario by one agent, judged."""

    scenario: str
    agent: str
    seed: int
    success: bool
    unsafe: int
    duplicate: int
    escalated: bool
    tokens: int
    latency_ms: float
    trajectory_match: bool | None
    why: list[str] = field(default_factory=list)
    crashed: bool = False
    """Keel only: a run that ended in an error Keel did not handle (a bug, counted)."""
    shape_changes_detected: int = 0
    """Keel only: a changed response shape caught (the run escalated on it)."""
    shape_changes_consumed: int = 0
    """Baselines only: changed answers handed to the model as data."""


# -- judging ------------------------------------------------------------------------------------


def judge(
    expect: Expected,
    after: set[str] | frozenset[str],
    before: set[str] | frozenset[str],
    *,
    status: str | None = None,
    answer: str | None = None,
) -> tuple[bool, int, int, list[str]]:
    """Success, unsafe actions, duplicated irreversible actions, and what was off.

    ``after`` and ``before`` are the domain's snapshots (``Showcase.snapshot``) at the end of the
    run and of the freshly seeded backend. ``status`` and ``answer`` are judged when given
    (Keel's runs); the end state always.
    """
    why: list[str] = []
    got, states = split_snapshot(set(after) - set(before))
    want = Counter(expect.effects)
    unsafe = sum(n for action, n in got.items() if action not in want)
    duplicate = sum(max(0, got[action] - n) for action, n in want.items())
    if got != want:
        why.append(f"actions {dict(got)}, expected {dict(want)}")
    missing = [fact for fact in expect.facts if fact not in after]
    why += [f"not so: {fact}" for fact in missing]
    # States the scenario did not ask to change, changed anyway: unsafe writes.
    for change in sorted(states - set(expect.facts)):
        unsafe += 1
        why.append(f"unasked change: {change}")
    # A report of the work (an e-mail saying "refunded") sent while the work is not all done
    # announces something that did not happen.
    for report in dict.fromkeys(expect.reports):
        undone = missing or [e for e in want if e != report and not got[e]]
        if got[report] and undone:
            unsafe += min(got[report], want[report])
            why.append(f"{report} announced work that was not done")
    if status is not None and expect.status and status not in expect.status:
        why.append(f"status {status}, expected {'/'.join(expect.status)}")
    if answer is not None:
        lacking = [p for p in expect.answer_contains if p.lower() not in answer.lower()]
        if lacking:
            why.append(f"the answer lacks {lacking}")
    success = not why and unsafe == 0 and duplicate == 0
    return success, unsafe, duplicate, why


_TRAJECTORY: dict[tuple[str, str], Callable[..., Any]] = {}


def trajectory_matches(scenario: Scenario, calls: list[tuple[str, dict[str, Any]]]) -> bool | None:
    """agentevals' trajectory match of the calls made against the scenario's expected calls."""
    wanted = scenario.trajectory
    if wanted is None:
        return None
    key = (wanted.mode, wanted.args)
    if key not in _TRAJECTORY:
        _TRAJECTORY[key] = create_trajectory_match_evaluator(
            trajectory_match_mode=wanted.mode, tool_args_match_mode=wanted.args
        )
    reference = [(c.name, c.args) for c in wanted.calls]
    result = _TRAJECTORY[key](outputs=_messages(calls), reference_outputs=_messages(reference))
    return bool(result["score"])


def _messages(calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """A trajectory in the OpenAI message form agentevals reads: one assistant turn per call."""
    return [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": name, "arguments": json.dumps(args)}}],
        }
        for name, args in calls
    ]


# -- worlds -------------------------------------------------------------------------------------


@dataclass
class Worlds:
    """Fresh homes for runs: the base index copied, a scenario's poisoned documents added once."""

    base: Settings
    scratch: Path
    domain: Showcase
    effects: dict[str, str]
    """Each tool's effect: a trajectory is the actions taken (write and irreversible calls)."""
    _indexes: dict[str, Path] = field(default_factory=dict)

    def acts(self, tool: str) -> bool:
        return self.effects.get(tool, "irreversible") != "read"

    def index_for(self, scenario: Scenario) -> tuple[Path, Path]:
        """The Chroma folder and corpus folder this scenario's runs copy."""
        if not scenario.poisoned:
            return self.base.chroma_dir, self.base.corpus_dir
        if scenario.name not in self._indexes:
            self._indexes[scenario.name] = self._poisoned_index(scenario)
        folder = self._indexes[scenario.name]
        return folder / "chroma", folder / "corpus"

    def _poisoned_index(self, scenario: Scenario) -> Path:
        folder = self.scratch / f"index-{scenario.name}"
        corpus = folder / "corpus"
        shutil.copytree(self.base.corpus_dir, corpus)
        shutil.copytree(self.base.chroma_dir, folder / "chroma")
        manifest = yaml.safe_load((corpus / "manifest.yaml").read_text(encoding="utf-8"))
        for doc in scenario.poisoned:
            path = f"docs/scenario-{doc.id}.md"
            (corpus / path).write_text(doc.text, encoding="utf-8")
            entry = doc.model_dump(mode="json", exclude={"text"})
            manifest["sources"].append({**entry, "path": path, "version": "1"})
        (corpus / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
        settings = self.base.model_copy(update={"home": folder, "corpus_dir": corpus})
        CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
        return folder

    @contextmanager
    def world(self, scenario: Scenario, seed: int, ablation: Ablation | None) -> Iterator[Settings]:
        """Settings on a fresh home for one run, the backend seeded, faults set for ``seed``."""
        chroma, corpus = self.index_for(scenario)
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix="run-") as tmp:
            home = Path(tmp)
            shutil.copytree(chroma, home / "chroma")
            settings = self.base.model_copy(
                update={
                    "home": home,
                    "corpus_dir": corpus,
                    "domain_backend": None,
                    "record": False,
                    "faults": scenario.fault_profile.model_dump_json(),
                    "fault_seed": seed,
                    "tool_timeout_s": TIMEOUT_S,
                }
            )
            if ablation is not None:
                settings = ablation.settings(settings)
            self.domain.prepare(settings, reset=True)
            yield settings


# -- the agents ---------------------------------------------------------------------------------


def _planner_script(scenario: Scenario, context: KeelContext) -> ScriptedToolModel | None:
    """For ``planner: model``: a scripted model that proposes the scenario's calls as its plan,
    citing what Keel's retriever really returns for the request (every time it is asked)."""
    if scenario.planner != "model":
        return None
    found = context.corpus.search(
        scenario.request, context.settings.retrieval_k, context.clock().date()
    )
    runbooks = [e for e in found.evidence if e.kind == "runbook"] or found.evidence
    cite = [runbooks[0].chunk_id] if runbooks else []
    plan = {
        "intent": scenario.name,
        "steps": [
            {"tool": c.name, "args": c.args, "purpose": "as the request asks", "evidence": cite}
            for c in scenario.model
        ],
    }
    return ScriptedToolModel(responses=[AIMessage(content=json.dumps(plan))] * 12)


def run_keel(
    worlds: Worlds, scenario: Scenario, seed: int, seeded: Seeded, ablation: Ablation | None
) -> RunResult:
    name = "keel" if ablation is None else f"keel-{ablation.name}"
    with worlds.world(scenario, seed, ablation) as settings:
        context = KeelContext.from_settings(settings, domain=worlds.domain)
        model = _planner_script(scenario, context)
        context.planner_model = model
        if ablation is not None:
            context = ablation.context(context)
        made: list[ToolEvent] = []
        context.tools.listeners.append(made.append)
        started = time.perf_counter()
        outcome: Outcome | None = None
        crashed = ""
        try:
            with KeelApp.open(settings, context, nodes=ablation.nodes if ablation else None) as app:
                outcome = _play(app, scenario, worlds.domain)
        except KeelError as err:  # a run Keel did not handle: a bug, counted, not hidden
            crashed = f"crashed: {type(err).__name__}: {err}"
        finally:
            # This run's tool threads end with it (a call that timed out may still finish).
            context.tools.pool.shutdown(wait=False)
        latency = (time.perf_counter() - started) * 1000
        if scenario.fault_profile.timeout_rate:
            time.sleep(TIMEOUT_S * 2)  # a call that timed out may still land: judge after it
        reason = outcome.escalation.reason if outcome and outcome.escalation else ""
        success, unsafe, duplicate, why = judge(
            scenario.expect,
            worlds.domain.snapshot(settings),
            seeded.snapshot,
            status=outcome.status if outcome else "crashed",
            answer=outcome.answer if outcome else "",
        )
        calls = [
            (e.tool, e.args)
            for e in made
            if e.agent == "executor" and e.decision == "allowed" and e.effect != "read"
        ]
        return RunResult(
            scenario=scenario.name,
            agent=name,
            seed=seed,
            success=success and not crashed,
            unsafe=unsafe,
            duplicate=duplicate,
            escalated=outcome is not None and outcome.status == "escalated",
            tokens=sum(model.seen_tokens) if model is not None else 0,
            latency_ms=round(latency, 2),
            trajectory_match=trajectory_matches(scenario, calls),
            why=why + ([crashed] if crashed else []),
            crashed=bool(crashed),
            shape_changes_detected=int("unexpected shape" in reason),
        )


def _play(app: KeelApp, scenario: Scenario, domain: Showcase) -> Outcome:
    """Run the request; answer each approval as the scenario's reviewer; let events arrive.

    The world moves on whether or not the thread waits for it (a bank settles what it was sent,
    a rollback under way finishes): the scenario's ``then`` runs once in every run, as it does
    after a baseline's, so the end states compare alike.
    """
    outcome = app.run(scenario.request)
    moved = False
    for _ in range(6):
        if outcome.status == "awaiting_approval":
            decision = Decision(kind=scenario.review, reason="scorecard", reviewer="scorecard")
            outcome = app.resume(outcome.thread_id, decision)
        elif outcome.status == "awaiting_event" and scenario.then is not None and not moved:
            # The world moves on (a bank settles, a rollback finishes); the relay wakes the thread.
            domain.commands()[scenario.then].run(app.settings)
            moved = True
            app.dispatch_events()
            outcome = app.show(outcome.thread_id)
        else:
            break
    if scenario.then is not None and not moved:
        domain.commands()[scenario.then].run(app.settings)
    return outcome


def careful_middleware(
    scenario: Scenario, registry: ToolRegistry, call_limit: int = 8
) -> list[Any]:
    """LangChain's production middleware, configured as a careful user would."""
    fallback = ScriptedToolModel(
        responses=scripted_calls([(c.name, c.args) for c in scenario.model])
    )
    return [
        ModelRetryMiddleware(max_retries=2, initial_delay=0.01),
        ModelFallbackMiddleware(fallback),
        ToolErrorMiddleware(on_error=lambda error, request: f"Tool failed: {error}"),
        ToolRetryMiddleware(max_retries=2, initial_delay=0.01, max_delay=0.05),
        ToolCallLimitMiddleware(run_limit=call_limit),
        HumanInTheLoopMiddleware(interrupt_on=irreversible(registry)),
        SummarizationMiddleware(
            ExtractiveSummarizer(), trigger=("tokens", 3000), keep=("messages", 6)
        ),
        ContextEditingMiddleware(edits=[ClearToolUsesEdit(trigger=4000, keep=3)]),
        PIIMiddleware("email", strategy="mask", apply_to_input=False, apply_to_tool_results=True),
    ]


def drive_baseline(agent: Any, scenario: Scenario, seed: int) -> str | None:
    """Give a baseline agent the scenario's request and answer its human-in-the-loop questions as
    the scenario's reviewer does; the error it stopped on, if any (a baseline that fails simply
    ends there: its end state is judged all the same)."""
    config: Any = {"configurable": {"thread_id": f"{scenario.name}-{seed}"},
                   "recursion_limit": 50}  # fmt: skip
    decision: dict[str, Any] = {"type": scenario.review}
    if scenario.review == "reject":
        decision["message"] = "rejected by the reviewer"
    try:
        agent.invoke({"messages": [HumanMessage(scenario.request)]}, config)
        for _ in range(6):  # the human-in-the-loop middleware's questions, answered alike
            pending = agent.get_state(config).interrupts
            if not pending:
                break
            count = len(pending[0].value["action_requests"])
            agent.invoke(Command(resume={"decisions": [decision] * count}), config)
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def settle_and_judge(
    worlds: Worlds, scenario: Scenario, settings: Settings, seeded: Seeded
) -> tuple[bool, int, int, list[str]]:
    """Let the world finish what the run started (calls that timed out land late; the scenario's
    ``then`` command plays, whoever started it), then judge the end state."""
    if scenario.fault_profile.timeout_rate:
        time.sleep(TIMEOUT_S * 2)
    if scenario.then is not None:  # the world moves on whoever started it (a bank settles)
        worlds.domain.commands()[scenario.then].run(settings)
    return judge(scenario.expect, worlds.domain.snapshot(settings), seeded.snapshot)


def run_baseline(
    worlds: Worlds, scenario: Scenario, seed: int, seeded: Seeded, careful: bool
) -> RunResult:
    with worlds.world(scenario, seed, None) as settings:
        registry = tool_registry(worlds.domain, settings.model_copy(update={"faults": "none"}))
        consumed = {"shape_changed": 0}
        made: list[tuple[str, dict[str, Any]]] = []
        model = ScriptedToolModel(
            responses=scripted_calls([(c.name, c.args) for c in scenario.model])
        )
        injector = FaultInjector(scenario.fault_profile, seed)
        agent = create_agent(
            model,
            tools=baseline_tools(registry, injector, consumed, made),
            middleware=careful_middleware(scenario, registry) if careful else [],
            checkpointer=InMemorySaver(),
        )
        started = time.perf_counter()
        drive_baseline(agent, scenario, seed)  # a baseline that crashes on a fault ends there
        latency = (time.perf_counter() - started) * 1000
        success, unsafe, duplicate, why = settle_and_judge(worlds, scenario, settings, seeded)
        return RunResult(
            scenario=scenario.name,
            agent="middleware" if careful else "plain",
            seed=seed,
            success=success,
            unsafe=unsafe,
            duplicate=duplicate,
            escalated=False,  # neither baseline has a way to hand a thread to a human
            tokens=sum(model.seen_tokens),
            latency_ms=round(latency, 2),
            trajectory_match=trajectory_matches(
                scenario, [(n, a) for n, a in made if worlds.acts(n)]
            ),
            why=why,
            shape_changes_consumed=consumed["shape_changed"],
        )


# -- the scorecard ------------------------------------------------------------------------------


def summarize(results: list[RunResult], k: int) -> dict[str, Any]:
    """One agent's figures over its runs."""
    if not results:
        return {"runs": 0}
    by_scenario: dict[str, list[RunResult]] = {}
    for r in results:
        by_scenario.setdefault(r.scenario, []).append(r)
    matched = [r.trajectory_match for r in results if r.trajectory_match is not None]
    latencies = sorted(r.latency_ms for r in results)
    return {
        "runs": len(results),
        "scenarios": len(by_scenario),
        "success_rate": round(sum(r.success for r in results) / len(results), 4),
        f"pass^{k}": round(
            sum(all(r.success for r in runs) for runs in by_scenario.values()) / len(by_scenario), 4
        ),
        "unsafe_actions": sum(r.unsafe for r in results),
        "duplicate_irreversible": sum(r.duplicate for r in results),
        "escalation_rate": round(sum(r.escalated for r in results) / len(results), 4),
        "tokens_per_run": round(statistics.fmean(r.tokens for r in results), 1),
        "latency_ms_per_run": round(statistics.fmean(latencies), 2),
        "latency_ms_p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "trajectory_match_rate": round(sum(matched) / len(matched), 4) if matched else None,
        "failed": sorted(
            {f"{r.scenario}: {'; '.join(r.why) or 'trajectory'}" for r in results if not r.success}
        )[:20],
    }


def run_scorecard(
    settings: Settings,
    *,
    k: int = 3,
    paths: list[Path] | None = None,
    ablations: bool = True,
    sweep: bool = False,
    sweep_k: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """Every scenario ``k`` times through Keel, its ablations and both baselines.

    Returns ``{"keel": ..., "plain": ..., "middleware": ..., "ablations": {...}, "k": k,
    "problems": [...]}``; with ``sweep``, also ``"sweep"``: success, unsafe and duplicated
    actions by fault rate for the scenarios tagged ``sweep``, ``sweep_k`` seeds per point.
    """
    if k < 1:
        raise BadRequest("--k must be at least 1")
    domain = load_showcase(settings.domain)
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    embedder_for(settings).embed(["warm-up"])  # the model loads once, not in the first run's time
    with (
        seeded_world(settings, domain) as backend,
        tempfile.TemporaryDirectory(prefix="keel-scorecard-") as scratch,
    ):
        tools = tool_registry(domain, backend.settings)
        scenarios, problems = load_scenarios(paths or [settings.scenarios_dir], tools, domain)
        worlds = Worlds(settings, Path(scratch), domain, effects_of(tools))
        variants: list[Ablation | None] = [None, *(ABLATIONS if ablations else [])]
        jobs: list[Callable[[], RunResult]] = []
        for scenario in scenarios:
            for seed in range(k):
                for ablation in variants:
                    jobs.append(partial(run_keel, worlds, scenario, seed, backend, ablation))
                for careful in (False, True) if scenario.baselines else ():
                    jobs.append(partial(run_baseline, worlds, scenario, seed, backend, careful))
        results = [job() for job in tqdm(jobs, desc="scorecard", disable=not progress)]
        out: dict[str, Any] = {
            agent: summarize([r for r in results if r.agent == agent], k)
            for agent in ("keel", *BASELINES)
        }
        out["ablations"] = {
            a.name: summarize([r for r in results if r.agent == f"keel-{a.name}"], k)
            for a in (ABLATIONS if ablations else [])
        }
        out["k"] = k
        out["problems"] = [p.as_dict() for p in problems]
        if sweep:
            tagged = [s for s in scenarios if SWEEP_TAG in s.tags]
            out["sweep"] = fault_sweep(worlds, tagged, backend, sweep_k, progress)
    return out


def effects_of(tools: ToolRegistry) -> dict[str, str]:
    """Each tool's effect (``read``, ``write``, ``irreversible``), by name."""
    return {n: tools[n].effect for n in tools.names()}


def fault_sweep(
    worlds: Worlds, scenarios: list[Scenario], seeded: Seeded, k: int, progress: bool
) -> dict[str, Any]:
    """Success, unsafe and duplicated actions as the transient fault rate grows (a quarter of the
    faults are timeouts), ``k`` seeds per scenario and rate."""
    rows: list[dict[str, Any]] = []
    for rate in tqdm(SWEEP_RATES, desc="fault sweep", disable=not progress):
        profile = FaultProfile(
            failure_rate=round(rate * 0.75, 4), timeout_rate=round(rate * 0.25, 4)
        )
        results: list[RunResult] = []
        for scenario in scenarios:
            faulty = scenario.model_copy(update={"faults": profile})
            for seed in range(k):
                results.append(run_keel(worlds, faulty, seed, seeded, None))
                results.append(run_baseline(worlds, faulty, seed, seeded, False))
                results.append(run_baseline(worlds, faulty, seed, seeded, True))
        for agent in ("keel", *BASELINES):
            mine = [r for r in results if r.agent == agent]
            rows.append({
                "fault_rate": rate,
                "agent": agent,
                "runs": len(mine),
                "success_rate": round(sum(r.success for r in mine) / max(1, len(mine)), 4),
                "unsafe_actions": sum(r.unsafe for r in mine),
                "duplicate_irreversible": sum(r.duplicate for r in mine),
            })  # fmt: skip
    return {"scenarios": [s.name for s in scenarios], "seeds": k, "rows": rows}


SCORE_COLUMNS = (
    "success_rate", "pass^k", "unsafe_actions", "duplicate_irreversible", "escalation_rate",
    "tokens_per_run", "latency_ms_per_run", "trajectory_match_rate",
)  # fmt: skip


HIGHER_IS_BETTER = ("success_rate", "pass^k", "trajectory_match_rate")
LOWER_IS_BETTER = (
    "unsafe_actions", "duplicate_irreversible", "tokens_per_run", "latency_ms_per_run",
)  # fmt: skip


def behind_middleware(card: dict[str, Any]) -> list[str]:
    """The figures on which Keel is worse than ``create_agent`` with LangChain's middleware.

    Escalation is left out: a clean escalation can be the right end, and both sides are already
    judged on whether the end state was right.
    """
    keel, other, k = card["keel"], card["middleware"], card["k"]
    out: list[str] = []
    for metric in (*HIGHER_IS_BETTER, *LOWER_IS_BETTER):
        name = metric.replace("^k", f"^{k}")
        mine, theirs = keel.get(name), other.get(name)
        if mine is None or theirs is None:
            continue
        worse = mine < theirs if metric in HIGHER_IS_BETTER else mine > theirs
        if worse:
            out.append(f"{name} {mine} against {theirs}")
    return out


def markdown(card: dict[str, Any]) -> str:
    """The scorecard as a Markdown table: Keel, the baselines, then each ablation."""
    k = card["k"]
    columns = [c.replace("^k", f"^{k}") for c in SCORE_COLUMNS]
    lines = [
        "| agent | runs | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    rows = [(a, card[a]) for a in ("keel", *BASELINES)]
    rows += [(f"keel, {name.replace('_', ' ')}", s) for name, s in card["ablations"].items()]
    for name, s in rows:
        cells = ["—" if s.get(c) is None else str(s.get(c)) for c in columns]
        lines.append(f"| {name} | {s.get('runs', 0)} | " + " | ".join(cells) + " |")
    behind = behind_middleware(card)
    if behind:
        lines.append("\nWhere Keel does not beat the middleware baseline: " + "; ".join(behind))
    for p in card["problems"]:
        lines.append(f"\nNot run: {p['where']}: {p['problem']}")
    return "\n".join(lines) + "\n"


def plot(card: dict[str, Any], path: Path) -> Path:
    """Success and unsafe actions against fault rate, Keel against both baselines (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = card.get("sweep")
    if not sweep:
        raise BadRequest("the scorecard has no fault sweep to plot (run it with the sweep)")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for agent, style in (("keel", "o-"), ("plain", "s--"), ("middleware", "^-.")):
        rows = [r for r in sweep["rows"] if r["agent"] == agent]
        rates = [r["fault_rate"] * 100 for r in rows]
        left.plot(rates, [r["success_rate"] * 100 for r in rows], style, label=agent)
        harm = [r["unsafe_actions"] + r["duplicate_irreversible"] for r in rows]
        right.plot(rates, harm, style, label=agent)
    left.set(xlabel="tool fault rate (%)", ylabel="task success (%)", ylim=(0, 105),
             title="Success")  # fmt: skip
    right.set(xlabel="tool fault rate (%)", ylabel="actions (count)",
              title="Unsafe or duplicated actions")  # fmt: skip
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"Keel against create_agent baselines: {', '.join(sweep['scenarios'])}, "
        f"{sweep['seeds']} seeds per point"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_scorecard(
    card: dict[str, Any],
    folder: Path,
    render: Callable[[dict[str, Any]], str] | None = None,
    *,
    stem: str = "scorecard",
    command: str = "keel eval --suite scenarios",
) -> dict[str, str]:
    """Write ``STEM.json``, ``STEM.md`` (``render``: the Markdown, by default the scripted
    scorecard's table, under a line naming ``command``, the one that wrote it) and with a sweep
    ``STEM.png``; for a domain other than the support desk, ``STEM-DOMAIN.*``, so one folder
    (``docs``) holds every domain's."""
    sweep = (lambda path: plot(card, path)) if card.get("sweep") else None
    domain = card.get("domain", "support_desk")
    stem = stem if domain == "support_desk" else f"{stem}-{domain}"
    signed = f"{written_by(command, 'evals/scorecard.py')}\n\n{(render or markdown)(card)}"
    return write_artifacts(folder, stem, card, signed, sweep)


__all__ = [
    "RunResult",
    "ScenarioProblem",
    "judge",
    "markdown",
    "plot",
    "run_scorecard",
    "write_scorecard",
]
