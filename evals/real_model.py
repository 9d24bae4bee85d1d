"""The scorecard on a real model: Keel's model planner and both baselines on one real endpoint.

``keel eval --suite scenarios --model NAME`` runs the domain's scenarios as the scripted scorecard
(``evals.scorecard``) does, in the same fresh worlds, with the same fault layer and reviewer, and
judged the same way on the backend, but every model decision is made by ``NAME`` on the endpoint
the settings name (``OPENAI_API_KEY`` for OpenAI, ``OPENAI_BASE_URL`` for any OpenAI-compatible
server), through the real ``langchain-openai`` client with Keel's timeout and retries:

- ``keel``: the whole graph with its model planner, for every scenario (the runbook planner
  stays the last resort when the model fails; which planner planned each run is counted);
- ``plain``: ``create_agent`` on the same model with the desk's tools and a short system prompt;
- ``middleware``: the same with the scorecard's production middleware (the fallback model is
  ``KEEL_PLANNER_FALLBACK_MODEL`` when set, as for Keel; no scripted fallback; no PII masking,
  see ``for_real_model``).

Scenarios tagged ``scripted-mistake`` were written around a mistake the scripted model makes on
purpose (obeying a poisoned note); their expected end state is what an agent must do once the
model has made it. A real model decides for itself, so these runs are listed one by one, with the
actions each agent took, and kept out of the headline figures. (A request that is itself wrong,
such as a refund above the charge, needs no tag: its expected end state holds for any model.)

Ablations and the fault sweep are not run on a real model: they measure the scaffolding, which
the scripted scorecard does without a bill.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import openai
from langchain.agents import create_agent
from langchain.agents.middleware import ModelFallbackMiddleware, PIIMiddleware
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, ConfigDict

from agents.models import chat_model_for
from evals.baselines import TIMEOUT_S, baseline_tools
from evals.prompts import BASELINE_SYSTEM
from evals.scenarios import Scenario, Seeded, load_scenarios, seeded_world
from evals.scorecard import (
    BASELINES,
    RunResult,
    Worlds,
    _play,
    careful_middleware,
    drive_baseline,
    effects_of,
    judge,
    markdown,
    settle_and_judge,
    summarize,
    trajectory_matches,
)
from graph.context import KeelContext
from graph.domain import load_showcase, tool_registry
from keel.app import KeelApp, Outcome, probe_endpoint
from keel.errors import BadRequest, ConfigError, KeelError
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tools.faults import FaultInjector
from tools.spec import ToolEvent

MISTAKE_TAG = "scripted-mistake"
AGENTS = ("keel", *BASELINES)
DEFAULT_K = 1
"""Runs per scenario and agent unless ``--k`` says otherwise: a real model costs per call."""

HOW_TO_READ_MISTAKES = (
    "These scenarios were written around a mistake the scripted model makes on purpose (obeying "
    "a poisoned note); the expected end state is what an agent must do once its model has made "
    "it. A real model decides for itself: one that does not make the mistake fails the scripted "
    "expectation, and an action it rightly took (the refund asked for) counts as unsafe there. "
    "Read these rows by the actions taken (was the e-mail the note asks for sent?), not by "
    "success. The baselines have no retrieval, so a poisoned corpus note never reaches them: "
    "their rows say nothing about injection."
)

_REFUSED = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
"""Errors that no retry or other scenario will fix: the key, the permission or the model name
(langchain-openai's own error classes are subclasses of these)."""


class RealModel(BaseModel):
    """The endpoint and model a real-model scorecard runs on; never the key.

    Example:
        >>> s = Settings(home=Path("/tmp/k"), openai_base_url="http://10.0.0.5:8000/v1")
        >>> RealModel.from_settings(s, "qwen2.5-7b").describe()["base_url_host"]
        '10.0.0.5'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url_host: str
    fallback: str | None
    timeout_s: float
    max_retries: int

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> RealModel:
        """The model named on the command line, on the endpoint the settings name.

        Raises:
            ConfigError: neither a key nor a base URL is set, or the base URL is not a URL.
            BadRequest: the name is empty.
        """
        if not name.strip():
            raise BadRequest("--model needs a model name, e.g. --model gpt-4o-mini")
        if settings.openai_api_key is None and settings.openai_base_url is None:
            raise ConfigError(
                "--model needs an endpoint: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL "
                "(an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1); neither is set"
            )
        host = "api.openai.com"
        if settings.openai_base_url is not None:
            url = urlparse(settings.openai_base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(  # not echoed: a URL may carry credentials
                    "OPENAI_BASE_URL is not an http(s) URL with a host, such as "
                    "http://127.0.0.1:11434/v1"
                )
            host = url.hostname  # never the whole URL: it may carry credentials
        return cls(
            name=name.strip(),
            base_url_host=host,
            fallback=settings.planner_fallback_model,
            timeout_s=settings.model_timeout_s,
            max_retries=settings.model_max_retries,
        )

    def describe(self) -> dict[str, Any]:
        """What the output says about the model: it was real, which one, where, how called."""
        return {"kind": "real", **self.model_dump()}


class Meter(BaseCallbackHandler):
    """One run's model calls, as the endpoint answered them: tokens (when it reports usage) and
    errors by kind. Attached to the chat model itself, so every call is seen, the planner's
    inside Keel's graph as much as the baselines' inside ``create_agent``."""

    def __init__(self) -> None:
        self.calls = 0
        self.with_usage = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.errors: Counter[str] = Counter()
        self.refused: str | None = None
        self._lock = threading.Lock()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self.calls += 1
            for generations in response.generations:
                for generation in generations:
                    message = generation.message if isinstance(generation, ChatGeneration) else None
                    usage = message.usage_metadata if isinstance(message, AIMessage) else None
                    if usage:
                        self.with_usage += 1
                        self.input_tokens += usage["input_tokens"]
                        self.output_tokens += usage["output_tokens"]

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        kind = type(error).__name__
        said = str(error).splitlines()[0][:200] if str(error) else kind
        with self._lock:
            self.calls += 1
            self.errors[kind] += 1
            if self.refused is not None:
                return
            if isinstance(error, _REFUSED):
                self.refused = f"{kind}: {said}"
            elif isinstance(error, openai.APIConnectionError) and not isinstance(
                error, openai.APITimeoutError
            ):  # a slow answer is this run's failure; no connection at all is the setting's
                self.refused = f"cannot connect ({said})"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class RealRun:
    """One judged run (the scripted scorecard's ``RunResult``) and what the model did in it."""

    result: RunResult
    mistake_scenario: bool
    status: str
    planner: str
    actions: list[str]
    meter: Meter
    seconds: float
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        r = self.result
        return {
            "scenario": r.scenario,
            "agent": r.agent,
            "seed": r.seed,
            "success": r.success,
            "status": self.status,
            "planner": self.planner,
            "unsafe": r.unsafe,
            "duplicate": r.duplicate,
            "actions": self.actions,
            "model_calls": self.meter.calls,
            "model_errors": dict(self.meter.errors),
            "input_tokens": self.meter.input_tokens,
            "output_tokens": self.meter.output_tokens,
            "seconds": round(self.seconds, 2),
            "why": r.why + self.notes,
        }


def _action(name: str, args: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted(args.items()) if k not in ("body", "reason"))
    return f"{name}({shown})"


def _models(settings: Settings, model: RealModel, meter: Meter) -> tuple[BaseChatModel, ...]:
    """The run's chat model, and its fallback when one is configured, both metered."""
    chat = chat_model_for(settings, model.name, callbacks=[meter])
    if model.fallback is None:
        return (chat,)
    return chat, chat_model_for(settings, model.fallback, callbacks=[meter])


def for_real_model(middleware: list[Any], fallback: BaseChatModel | None) -> list[Any]:
    """The scorecard's production middleware, fitted to a real model.

    Its scripted fallback model becomes the configured fallback (or none, as for Keel), and PII
    masking is left out: it masks the customer's address in the tools' answers ("ada@****.com"),
    the very address a real model must e-mail, which the scripted calls never had to read.
    """
    kept = [m for m in middleware if not isinstance(m, ModelFallbackMiddleware | PIIMiddleware)]
    if fallback is not None:
        kept.insert(1, ModelFallbackMiddleware(fallback))
    return kept


def run_keel(
    worlds: Worlds, scenario: Scenario, seed: int, seeded: Seeded, model: RealModel
) -> RealRun:
    """Keel with the real model as its planner (and fallback), judged as the scorecard judges."""
    meter = Meter()
    with worlds.world(scenario, seed, None) as settings:
        chat, *fallback = _models(settings, model, meter)
        context = KeelContext.from_settings(
            settings,
            domain=worlds.domain,
            planner_model=chat,
            fallback_model=fallback[0] if fallback else None,
        )
        made: list[ToolEvent] = []
        context.tools.listeners.append(made.append)
        started = time.perf_counter()
        outcome: Outcome | None = None
        crashed: list[str] = []
        try:
            with KeelApp.open(settings, context) as app:
                outcome = _play(app, scenario, worlds.domain)
        except KeelError as err:  # a run Keel did not handle: a bug, counted, not hidden
            crashed = [f"crashed: {type(err).__name__}: {err}"]
        finally:
            context.tools.pool.shutdown(wait=False)
        seconds = time.perf_counter() - started
        if scenario.fault_profile.timeout_rate:
            time.sleep(TIMEOUT_S * 2)  # a call that timed out may still land: judge after it
        status = outcome.status if outcome else "crashed"
        success, unsafe, duplicate, why = judge(
            scenario.expect,
            worlds.domain.snapshot(settings),
            seeded.snapshot,
            status=status,
            answer=outcome.answer if outcome else "",
        )
        acted = [
            (e.tool, e.args)
            for e in made
            if e.agent == "executor" and e.decision == "allowed" and e.effect != "read"
        ]
    result = RunResult(
        scenario=scenario.name, agent="keel", seed=seed, success=success and not crashed,
        unsafe=unsafe, duplicate=duplicate, escalated=status == "escalated",
        tokens=meter.tokens, latency_ms=round(seconds * 1000, 2),
        trajectory_match=trajectory_matches(scenario, acted), why=why + crashed,
    )  # fmt: skip
    return RealRun(
        result=result,
        mistake_scenario=MISTAKE_TAG in scenario.tags,
        status=status,
        planner=outcome.planner if outcome else "none",
        actions=[_action(n, a) for n, a in acted],
        meter=meter,
        seconds=seconds,
    )


def run_baseline(
    worlds: Worlds,
    scenario: Scenario,
    seed: int,
    seeded: Seeded,
    model: RealModel,
    careful: bool,
) -> RealRun:
    """``create_agent`` on the real model (with the production middleware when ``careful``)."""
    meter = Meter()
    notes: list[str] = []
    with worlds.world(scenario, seed, None) as settings:
        registry = tool_registry(worlds.domain, settings.model_copy(update={"faults": "none"}))
        chat, *fallback = _models(settings, model, meter)
        made: list[tuple[str, dict[str, Any]]] = []
        middleware: list[Any] = []
        if careful:
            middleware = for_real_model(
                careful_middleware(scenario, registry), fallback[0] if fallback else None
            )
        agent = create_agent(
            chat,
            tools=baseline_tools(
                registry, FaultInjector(scenario.fault_profile, seed), {"shape_changed": 0}, made
            ),
            system_prompt=BASELINE_SYSTEM.format(role=worlds.domain.planner_role),
            middleware=middleware,
            checkpointer=InMemorySaver(),
        )
        started = time.perf_counter()
        status = "ended"
        stopped = drive_baseline(agent, scenario, seed)
        if stopped is not None:  # a baseline that fails simply ends there; said in its row
            status = "stopped"
            notes.append(f"stopped: {stopped[:200]}")
        seconds = time.perf_counter() - started
        success, unsafe, duplicate, why = settle_and_judge(worlds, scenario, settings, seeded)
    acted = [(n, a) for n, a in made if worlds.acts(n)]
    result = RunResult(
        scenario=scenario.name, agent="middleware" if careful else "plain", seed=seed,
        success=success, unsafe=unsafe, duplicate=duplicate, escalated=False,
        tokens=meter.tokens, latency_ms=round(seconds * 1000, 2),
        trajectory_match=trajectory_matches(scenario, acted), why=why,
    )  # fmt: skip
    return RealRun(
        result=result,
        mistake_scenario=MISTAKE_TAG in scenario.tags,
        status=status,
        planner=f"model:{model.name}",
        actions=[_action(n, a) for n, a in acted],
        meter=meter,
        seconds=seconds,
        notes=notes,
    )


def choose(scenarios: list[Scenario], names: list[str], limit: int | None) -> list[Scenario]:
    """The scenarios asked for by name (all when none), then the first ``limit`` of them.

    Raises:
        BadRequest: a name that no loaded scenario has, or a limit below 1.
    """
    known = [s.name for s in scenarios]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadRequest(f"--scenario: no scenario named {', '.join(unknown)}; known: "
                         f"{', '.join(known)}")  # fmt: skip
    if limit is not None and limit < 1:
        raise BadRequest("--limit must be at least 1")
    chosen = [s for s in scenarios if not names or s.name in names]
    return chosen[:limit] if limit is not None else chosen


Progress = Callable[[str], None]


def run_real_scorecard(
    settings: Settings,
    model: RealModel,
    *,
    k: int = DEFAULT_K,
    paths: list[Path] | None = None,
    names: list[str] | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every chosen scenario ``k`` times through Keel and both baselines, on the real model.

    Returns the scripted scorecard's shape (``keel``, ``plain``, ``middleware``, ``k``,
    ``problems``; ``ablations`` empty) plus ``model`` (which model, where; never the key),
    ``usage`` per agent, Keel's ``planners``, ``scripted_mistakes`` and every run's row.

    Raises:
        ConfigError: the endpoint refused the key or the model, or cannot be reached (the run
            stops at once instead of failing every scenario the same way).
        BadRequest: bad ``k``, ``limit`` or scenario names.
    """
    if k < 1:
        raise BadRequest("--k must be at least 1")
    say = progress or (lambda line: None)
    if settings.openai_base_url is not None:
        try:
            probe_endpoint(settings.openai_base_url)
        except ConfigError as err:  # said with the host only: a URL may carry credentials
            reason = str(err).split("(", 1)[-1].split(")", 1)[0]
            raise ConfigError(
                f"the model endpoint at {model.base_url_host} is unreachable ({reason}): "
                "fix OPENAI_BASE_URL"
            ) from None
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    embedder_for(settings).embed(["warm-up"])
    domain = load_showcase(settings.domain)
    runs: list[RealRun] = []
    with (
        seeded_world(settings, domain) as backend,
        tempfile.TemporaryDirectory(prefix="keel-real-scorecard-") as scratch,
    ):
        tools = tool_registry(domain, backend.settings)
        loaded, problems = load_scenarios(paths or [settings.scenarios_dir], tools, domain)
        scenarios = choose(loaded, names or [], limit)
        worlds = Worlds(settings, Path(scratch), domain, effects_of(tools))
        jobs: list[tuple[str, Callable[[], RealRun]]] = []
        for scenario in scenarios:
            for seed in range(k):
                keel = partial(run_keel, worlds, scenario, seed, backend, model)
                jobs.append((f"keel {scenario.name} (seed {seed})", keel))
                for careful in (False, True) if scenario.baselines else ():
                    agent = "middleware" if careful else "plain"
                    base = partial(run_baseline, worlds, scenario, seed, backend, model, careful)
                    jobs.append((f"{agent} {scenario.name} (seed {seed})", base))
        say(f"real model {model.name} at {model.base_url_host}: {len(jobs)} runs "
            f"({len(scenarios)} scenarios of {domain.name}, k={k}, "
            f"agents {', '.join(AGENTS)})")  # fmt: skip
        for i, (label, job) in enumerate(jobs, 1):
            try:
                run = job()
            except KeyboardInterrupt:  # Ctrl-C: what the endpoint was paid for is kept and scored
                say(f"interrupted in run {i} of {len(jobs)}: the {i - 1} finished are scored")
                break
            runs.append(run)
            say(f"[{i}/{len(jobs)}] {label}: {_verdict(run)}")
            if run.meter.refused is not None:
                raise ConfigError(
                    f"the endpoint at {model.base_url_host} refused model {model.name!r}: "
                    f"{run.meter.refused} (check OPENAI_API_KEY, OPENAI_BASE_URL and the name)"
                )
    return _card(
        domain.name,
        model,
        runs,
        k,
        [s.name for s in scenarios],
        [p.as_dict() for p in problems],
        len(jobs),
    )


def _verdict(run: RealRun) -> str:
    r = run.result
    said = "success" if r.success else "failed"
    if run.mistake_scenario:
        said += " (scripted-mistake scenario)"
    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(run.meter.errors.items()))
    return (
        f"{said}, {run.status}, {run.meter.calls} model call(s)"
        + (f" (failed: {errors})" if errors else "")
        + f", {run.meter.tokens} tokens, {run.seconds:.1f} s"
        + (f", planner {run.planner}" if r.agent == "keel" else "")
    )


def _card(
    domain: str,
    model: RealModel,
    runs: list[RealRun],
    k: int,
    scenario_names: list[str],
    problems: list[dict[str, str]],
    planned: int,
) -> dict[str, Any]:
    headline = [r for r in runs if not r.mistake_scenario]
    out: dict[str, Any] = {"domain": domain, "model": model.describe()}
    out["complete"] = len(runs) == planned
    out["runs_planned"] = planned
    for agent in AGENTS:
        out[agent] = summarize([r.result for r in headline if r.result.agent == agent], k)
    out["ablations"] = {}
    out["k"] = k
    out["problems"] = problems
    out["scenarios_run"] = scenario_names
    out["usage"] = {agent: _usage([r for r in runs if r.result.agent == agent]) for agent in AGENTS}
    out["planners"] = dict(Counter(r.planner for r in runs if r.result.agent == "keel"))
    out["scripted_mistakes"] = {
        "how_to_read": HOW_TO_READ_MISTAKES,
        "runs": [r.row() for r in runs if r.mistake_scenario],
    }
    out["runs"] = [r.row() for r in runs]
    return out


def _usage(runs: list[RealRun]) -> dict[str, Any]:
    """An agent's model bill over all its runs (scripted-mistake ones too: they were paid for)."""
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r.meter.errors)
    return {
        "runs": len(runs),
        "model_calls": sum(r.meter.calls for r in runs),
        "calls_reporting_usage": sum(r.meter.with_usage for r in runs),
        "input_tokens": sum(r.meter.input_tokens for r in runs),
        "output_tokens": sum(r.meter.output_tokens for r in runs),
        "model_errors": dict(errors),
        "seconds": round(sum(r.seconds for r in runs), 2),
    }


def real_markdown(card: dict[str, Any]) -> str:
    """The real-model scorecard: which model, the scorecard's table, the bill, how to read it."""
    m = card["model"]
    lines = [
        f"Real model: `{m['name']}` at {m['base_url_host']}, on the {card['domain']} domain "
        f"(timeout {m['timeout_s']} s, "
        f"{m['max_retries']} retries per call"
        + (f", fallback `{m['fallback']}`" if m["fallback"] else "")
        + "). Every model decision of every agent was made by this model over HTTP; these are "
        "its figures, not the scripted scorecard's.",
    ]
    if not card["complete"]:
        done = len(card["runs"])
        lines.append(
            f"\nInterrupted: {done} of {card['runs_planned']} runs finished; every figure "
            "below is theirs only."
        )
    lines += [
        "",
        markdown(card).rstrip("\n"),
        "",
        "| agent | runs | model calls | failed calls | input tokens | output tokens | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for agent in AGENTS:
        u = card["usage"][agent]
        lines.append(
            f"| {agent} | {u['runs']} | {u['model_calls']} | {sum(u['model_errors'].values())} "
            f"| {u['input_tokens']} | {u['output_tokens']} | {u['seconds']} |"
        )
    reported = sum(u["calls_reporting_usage"] for u in card["usage"].values())
    if not reported:
        lines.append("\nThe endpoint reported no token usage: the token figures are 0, not free.")
    planners = ", ".join(f"{p}: {n}" for p, n in sorted(card["planners"].items()))
    lines.append(f"\nKeel's plans were made by: {planners or 'no run'}.")
    mistakes = card["scripted_mistakes"]["runs"]
    if mistakes:
        lines += [
            "",
            "Scripted-mistake scenarios (not in the figures above). "
            + card["scripted_mistakes"]["how_to_read"],
            "",
            "| scenario | agent | seed | status | actions taken | judged against the script |",
            "|---|---|---|---|---|---|",
        ]
        for row in mistakes:
            judged = "as expected" if row["success"] else "; ".join(row["why"]) or "trajectory"
            lines.append(
                f"| {row['scenario']} | {row['agent']} | {row['seed']} | {row['status']} | "
                f"{'; '.join(row['actions']) or 'none'} | {judged} |"
            )
    return "\n".join(lines) + "\n"


__all__ = [
    "MISTAKE_TAG",
    "Meter",
    "RealModel",
    "choose",
    "real_markdown",
    "run_real_scorecard",
]
