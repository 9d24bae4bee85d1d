"""Record suite: is every tool call, model call, denial and approval of a run in the flight record,
and does replaying each recorded run reproduce every decision?

The counts the record is checked against are taken independently of the recorder: a second
listener on the tool registry (its own list, not the store), counting wrappers around the chat
models, and the approvals the suite itself saw and answered. Then every recorded run is replayed
from the record alone (``observability.replay``) and compared decision by decision.

Scenarios, for whatever domain ``KEEL_DOMAIN`` names: its demo requests (answered as the demo
answers them); its acting request (``record.yaml`` in the domain's folder names one of its
scenarios) rejected, edited, with a gate that also denies a read the run makes, with a chat model
planner (one that answers, one that is down with a fallback), and under the generic
``transient`` profile and each of the domain's own fault profiles.
Everything runs on a temporary home (a copy of the corpus index); nothing of the user's changes.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import BaseModel, ConfigDict, Field

from evals.scenarios import load_scenarios
from graph.context import KeelContext
from graph.domain import Showcase, load_showcase, tool_registry
from keel.app import Decision, KeelApp, Outcome
from keel.errors import BadRequest
from keel.settings import Settings
from keel.yamlfile import load_reviewed
from observability.replay import replay_run
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from stores.backends import open_stores
from stores.breakers import SqliteBreakers
from tools.faults import PROFILES
from tools.permissions import PermissionGate
from tools.spec import CallRequest, Gate, ToolEvent, ToolRegistry

RECORD_FILE = "record.yaml"


class RecordCase(BaseModel):
    """What the record suite acts on in a domain (``record.yaml`` in its folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str = Field(
        description="a scenario of the domain whose request plans an irreversible step: it is "
        "run rejected, edited, with a read denied, and planned by a chat model"
    )
    edit: dict[str, Any] = Field(
        min_length=1, description="the reviewer's edit of the first step asked about"
    )
    deny: str = Field(description="a read tool the run calls, which the gate then denies")


@dataclass(frozen=True)
class Acting:
    """The domain's acting request, with how a chat model would plan it."""

    request: str
    then: str | None
    calls: list[tuple[str, dict[str, Any]]]
    edit: dict[str, Any]
    deny: str


def acting_case(settings: Settings, domain: Showcase) -> Acting:
    """The acting request ``record.yaml`` names, looked up among the domain's scenarios."""
    path = settings.domain_dir / RECORD_FILE
    if not path.is_file():
        raise BadRequest(f"{path}: the record suite needs this file (see evals/record_eval.py)")
    _, data = load_reviewed(path.read_text(encoding="utf-8"))
    case = RecordCase.model_validate(data)
    found, _ = load_scenarios([settings.scenarios_dir], tool_registry(domain, settings), domain)
    named = next((s for s in found if s.name == case.scenario), None)
    if named is None:
        raise BadRequest(f"{path}: no scenario named {case.scenario!r}")
    calls = [(c.name, c.args) for c in named.model]
    return Acting(named.request, named.then, calls, case.edit, case.deny)


class CountingModel(FakeMessagesListChatModel):
    """A scripted planner model that counts its calls (the suite's own count, not the record's)."""

    model_name: str = "scripted-planner"
    calls: int = 0

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        return super()._generate(messages, *args, **kwargs)


class DownModel(BaseChatModel):
    """A planner model whose endpoint is down: every call raises, and is counted."""

    model_name: str = "down-model"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "down"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.calls += 1
        raise ConnectionError("connection refused")


@dataclass
class DenyTool(PermissionGate):
    """The configured manifest's gate, except that nobody may call ``tool``."""

    tool: str = ""

    @classmethod
    def around(cls, gate: Gate | None, tool: str) -> DenyTool:
        if not isinstance(gate, PermissionGate):
            raise RuntimeError("the record eval needs the manifest's permission gate")
        return cls(**{f.name: getattr(gate, f.name) for f in fields(gate)}, tool=tool)

    def check(self, request: CallRequest, tools: ToolRegistry) -> tuple[str, str] | None:
        if request.spec.name == self.tool:
            return ("eval.deny", f"the record eval denies {self.tool}")
        return super().check(request, tools)


@dataclass
class Witness:
    """What the suite saw with its own eyes."""

    tool_calls: int = 0
    denials: int = 0
    approvals_requested: int = 0
    approvals_answered: int = 0
    models: list[CountingModel | DownModel] = field(default_factory=list)

    def on_tool_event(self, event: ToolEvent) -> None:
        self.tool_calls += 1
        self.denials += event.decision == "denied"

    @property
    def model_calls(self) -> int:
        return sum(m.calls for m in self.models)


@dataclass(frozen=True)
class Scenario:
    name: str
    request: str
    answer: str = "approve"
    edit: dict[str, Any] | None = None
    faults: str = "none"
    seed: int = 0
    deny: str | None = None
    model: Callable[[str], list[BaseChatModel]] | None = None
    then: str | None = None


def _model_plan(calls: list[tuple[str, dict[str, Any]]]) -> Callable[[str], list[BaseChatModel]]:
    """A chat model that plans ``calls`` (the scenario's script), citing ``chunk_id``."""

    def models(chunk_id: str) -> list[BaseChatModel]:
        plan = {
            "intent": "as_asked",
            "steps": [{"tool": name, "args": args, "purpose": "as the request asks",
                       "evidence": [chunk_id]} for name, args in calls],
        }  # fmt: skip
        return [CountingModel(responses=[AIMessage(content=json.dumps(plan))])]

    return models


def _down_then(plan: Callable[[str], list[BaseChatModel]]) -> Callable[[str], list[BaseChatModel]]:
    return lambda chunk_id: [DownModel(), *plan(chunk_id)]


def scenarios(seeds: int, domain: Showcase, acting: Acting) -> list[Scenario]:
    """The demo requests, the acting request's variants, and each fault profile ``seeds``
    times."""
    out = [Scenario(f"demo-{i}", demo.request, demo.decision, then=demo.then)
           for i, demo in enumerate(domain.demo_requests())]  # fmt: skip
    request, then = acting.request, acting.then
    planned = _model_plan(acting.calls)
    out += [
        Scenario("acting-rejected", request, "reject", then=then),
        Scenario("acting-edited", request, "edit", edit=acting.edit, then=then),
        Scenario("read-denied-by-gate", request, deny=acting.deny, then=then),
        Scenario("model-planner", request, model=planned, then=then),
        Scenario("model-down-fallback", request, model=_down_then(planned), then=then),
    ]
    for profile in ("transient", *domain.fault_profiles()):
        out += [Scenario(f"{profile}-{s}", request, faults=profile, seed=s, then=then)
                for s in range(seeds)]  # fmt: skip
    return out


def _play(app: KeelApp, scenario: Scenario, witness: Witness, domain: Showcase) -> Outcome:
    outcome = app.run(scenario.request)
    for _ in range(4):  # an edit is validated again and may be asked again
        if outcome.status != "awaiting_approval":
            break
        witness.approvals_requested += 1
        decision = Decision(
            kind=scenario.answer,  # type: ignore[arg-type]
            reason="record eval",
            edit=scenario.edit,
            reviewer="record-eval",
        )
        if scenario.answer == "edit" and witness.approvals_answered % 2 == 1:
            decision = Decision(kind="approve", reviewer="record-eval")
        witness.approvals_answered += 1
        outcome = app.resume(outcome.thread_id, decision)
    if outcome.status == "awaiting_approval":
        witness.approvals_requested += 1
    if outcome.status == "awaiting_event" and scenario.then is not None:
        # The world moves on (the domain's command); the relay wakes the thread (an ``event``
        # segment).
        domain.commands()[scenario.then].run(app.settings)
        app.dispatch_events()
        outcome = app.show(outcome.thread_id)
    return outcome


def _runbook_chunk(settings: Settings, request: str) -> str:
    hits = CorpusStore(settings, embedder_for(settings)).query(request, settings.retrieval_k)
    return next((e.chunk_id for e in hits if e.kind == "runbook"), hits[0].chunk_id)


def run_record_eval(
    settings: Settings, *, seeds: int = 3, progress: bool = False
) -> dict[str, Any]:
    """Run every scenario recorded, count independently, replay every run; the scorecard."""
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    with tempfile.TemporaryDirectory(prefix="keel-record-eval-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copytree(settings.chroma_dir, home / "chroma")
        base = settings.model_copy(update={"home": home, "domain_backend": None, "record": True})
        return _evaluate(base, seeds, progress)


def _evaluate(base: Settings, seeds: int, progress: bool) -> dict[str, Any]:
    domain = load_showcase(base.domain)
    domain.prepare(base, reset=True)
    acting = acting_case(base, domain)
    chunk = _runbook_chunk(base, acting.request)
    witness = Witness()
    run_ids: list[str] = []
    gates: dict[str, Gate] = {}
    statuses: dict[str, str] = {}
    chosen = scenarios(seeds, domain, acting)
    for i, scenario in enumerate(chosen):
        settings = base.model_copy(
            update={"faults": scenario.faults, "fault_seed": scenario.seed, "tool_timeout_s": 0.1}
        )
        domain.prepare(settings, reset=True)
        SqliteBreakers(settings.breaker_db).reset()  # each scenario starts with closed breakers
        models = scenario.model(chunk) if scenario.model else []
        witness.models += [m for m in models if isinstance(m, CountingModel | DownModel)]
        context = KeelContext.from_settings(
            settings,
            domain=domain,
            planner_model=models[0] if models else None,
            fallback_model=models[1] if len(models) > 1 else None,
        )
        if scenario.deny:
            context.tools.gate = DenyTool.around(context.tools.gate, scenario.deny)
        context.tools.listeners.append(witness.on_tool_event)
        with KeelApp.open(settings, context) as app:
            outcome = _play(app, scenario, witness, domain)
        if outcome.run_id is None:
            raise RuntimeError(f"{scenario.name}: the run was not recorded")
        run_ids.append(outcome.run_id)
        if scenario.deny and context.tools.gate is not None:
            gates[outcome.run_id] = context.tools.gate  # replayed under the gate it ran under
        statuses[scenario.name] = outcome.status
        if progress:
            print(f"\rrecord eval: run {i + 1}/{len(chosen)}", end="", file=sys.stderr)

    recorded = _recorded_counts(base, run_ids)
    replays = []
    with KeelApp.open(base) as app:
        for j, run_id in enumerate(run_ids):
            replays.append(replay_run(app, run_id, gate=gates.get(run_id)))
            if progress:
                print(f"\rrecord eval: replay {j + 1}/{len(run_ids)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    divergent = [
        {"run_id": r.run_id, "first_divergence": r.first_divergence.model_dump(mode="json")
         if r.first_divergence else None, "error": r.error, "misses": r.misses}
        for r in replays if not r.same
    ]  # fmt: skip
    counts = {
        "runs": len(run_ids),
        "tool_calls": witness.tool_calls,
        "tool_calls_recorded": recorded["tool_calls"],
        "denials": witness.denials,
        "denials_recorded": recorded["denials"],
        "model_calls": witness.model_calls,
        "model_calls_recorded": recorded["model_calls"],
        "approvals_requested": witness.approvals_requested,
        "approvals_requested_recorded": recorded["approvals_requested"],
        "approvals_answered": witness.approvals_answered,
        "approvals_answered_recorded": recorded["approvals_answered"],
        "replayed": len(replays),
        "replayed_same": sum(r.same for r in replays),
    }
    complete = all(
        counts[k] == counts[f"{k}_recorded"]
        for k in ("tool_calls", "denials", "model_calls")
    ) and (
        counts["approvals_requested"] == counts["approvals_requested_recorded"]
        and counts["approvals_answered"] == counts["approvals_answered_recorded"]
    )  # fmt: skip
    return {
        **counts,
        "record_complete": complete,
        "replay_rate": round(counts["replayed_same"] / max(1, counts["replayed"]), 4),
        "statuses": statuses,
        "divergent": divergent,
    }


def _recorded_counts(settings: Settings, run_ids: list[str]) -> dict[str, int]:
    store = open_stores(settings).flight_record
    counts = dict.fromkeys(
        ("tool_calls", "denials", "model_calls", "approvals_requested", "approvals_answered"), 0
    )
    try:
        for run_id in run_ids:
            for event in store.events(run_id):
                p = event.payload
                if p.kind == "tool_call":
                    counts["tool_calls"] += 1
                    counts["denials"] += p.call.decision == "denied"
                elif p.kind == "model_call":
                    counts["model_calls"] += 1
                elif p.kind == "approval_requested":
                    counts["approvals_requested"] += 1
                elif p.kind == "approval_answered":
                    counts["approvals_answered"] += 1
    finally:
        store.close()
    return counts


__all__ = ["PROFILES", "RecordCase", "acting_case", "run_record_eval", "scenarios"]
