"""Eval scenarios as data: one YAML file holds a list of them (a domain's ``scenarios/*.yaml``).

A scenario names the request, the fault profile, the scripted model's behaviour (the tool calls a
model makes for this request: the baselines' script, and Keel's plan when ``planner: model``),
any poisoned documents added to the corpus, how the human reviewer answers, the expected end
state of the backend and the expected trajectory. Loading checks every scenario against the
tools and the seeded backend: a file that is not YAML or does not fit the schema is reported
with its line, a scenario that names a tool or record that does not exist is reported by name,
and the others still load.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domains.support_desk.backend import DemoBackend
from graph.state import Status, TrustTier
from keel.errors import BadRequest, Permanent
from keel.settings import Settings
from keel.yamlfile import line_of, load_reviewed, problem_of
from tools.faults import FaultProfile, profile_named
from tools.spec import ToolRegistry


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolCallSpec(Strict):
    """One tool call, as a model would make it."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ExpectedRefund(Strict):
    charge_id: str
    amount: float


class Expected(Strict):
    """The end state a correct run leaves behind; anything else the backend shows is unsafe.

    Refunds, e-mails, ticket states and billing addresses are compared with the backend itself,
    not with what an agent says it did.
    """

    status: list[Status] = Field(
        default_factory=list, description="Keel's final status, one of these (empty: any)"
    )
    refunds: list[ExpectedRefund] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list, description="recipients, one per e-mail")
    tickets: dict[str, Literal["open", "closed"]] = Field(default_factory=dict)
    billing_emails: dict[str, str] = Field(default_factory=dict)
    answer_contains: list[str] = Field(
        default_factory=list, description="phrases Keel's answer must hold (case-insensitive)"
    )

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ExpectedTrajectory(Strict):
    """The actions (write and irreversible calls) a run should make, matched with agentevals'
    trajectory match against the actions it really made. Reads are left out: which records an
    agent reads, and how often, is its own business."""

    mode: Literal["strict", "unordered", "subset", "superset"] = "superset"
    args: Literal["exact", "ignore", "subset", "superset"] = "superset"
    calls: list[ToolCallSpec] = Field(min_length=1)


class PoisonedDoc(Strict):
    """A document added to this scenario's copy of the corpus (a trap, an injection)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    kind: Literal["policy", "runbook", "faq", "note"] = "note"
    trust_tier: TrustTier = "untrusted"
    owner: str = "unknown"
    effective_date: date = date(2026, 6, 1)
    text: str = Field(min_length=1)


class Scenario(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    request: str = Field(min_length=1)
    faults: str | FaultProfile = "none"
    planner: Literal["runbook", "model"] = "runbook"
    model: list[ToolCallSpec] = Field(
        default_factory=list, description="the scripted model's tool calls for this request"
    )
    review: Literal["approve", "reject"] = "approve"
    poisoned: list[PoisonedDoc] = Field(default_factory=list)
    baselines: bool = Field(
        default=True,
        description="run the baselines too (false where they cannot express the scenario: "
        "a question needs retrieval, which create_agent does not bring)",
    )
    expect: Expected
    trajectory: ExpectedTrajectory | None = None
    tags: list[str] = Field(default_factory=list)

    @property
    def fault_profile(self) -> FaultProfile:
        if isinstance(self.faults, FaultProfile):
            return self.faults
        return profile_named(self.faults)

    @property
    def fault_name(self) -> str:
        return self.faults if isinstance(self.faults, str) else "custom"


@dataclass(frozen=True)
class ScenarioProblem:
    """A scenario (or a whole file) that cannot run, and why: reported, never fatal."""

    where: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "problem": self.problem}


def load_scenarios(
    paths: list[Path], tools: ToolRegistry, backend: DemoBackend
) -> tuple[list[Scenario], list[ScenarioProblem]]:
    """Every scenario the files hold that can run, and what is wrong with the rest.

    Args:
        paths: YAML files, or folders of them.
        tools: the registry the scenarios' calls must name tools of.
        backend: a seeded backend the expected records must exist in.
    """
    files = sorted(p for path in paths for p in (path.glob("*.yaml") if path.is_dir() else [path]))
    if not files:
        raise BadRequest(f"no scenario files in {', '.join(map(str, paths))}")
    scenarios: list[Scenario] = []
    problems: list[ScenarioProblem] = []
    for file in files:
        found, wrong = _load_file(file, tools, backend)
        scenarios += found
        problems += wrong
    seen: set[str] = set()
    for s in list(scenarios):
        if s.name in seen:
            problems.append(ScenarioProblem(s.name, "a second scenario of this name"))
            scenarios.remove(s)
        seen.add(s.name)
    return scenarios, problems


def _load_file(
    file: Path, tools: ToolRegistry, backend: DemoBackend
) -> tuple[list[Scenario], list[ScenarioProblem]]:
    if not file.is_file():
        return [], [ScenarioProblem(str(file), "no such file")]
    text = file.read_text(encoding="utf-8")
    try:
        root, data = load_reviewed(text)
    except yaml.YAMLError as err:  # a duplicate key too: the last one must not win quietly
        line, said = problem_of(err)
        at = f":{line}" if line is not None else ""
        return [], [ScenarioProblem(f"{file}{at}", f"not valid YAML: {said}")]
    if not isinstance(data, list):
        return [], [ScenarioProblem(f"{file}:1", "a scenario file is a list of scenarios")]
    out: list[Scenario] = []
    problems: list[ScenarioProblem] = []
    for i, item in enumerate(data):
        name = item.get("name", f"#{i + 1}") if isinstance(item, dict) else f"#{i + 1}"
        try:
            scenario = Scenario.model_validate(item)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            line = line_of(root, (i, *first["loc"]))
            problems.append(ScenarioProblem(f"{file}:{line} ({name})", f"{where}: {first['msg']}"))
            continue
        unknown = _unknown_references(scenario, tools, backend)
        if unknown:
            at = f"{file}:{line_of(root, (i,))} ({name})"
            problems.append(ScenarioProblem(at, "; ".join(unknown)))
            continue
        out.append(scenario)
    return out, problems


def _unknown_references(scenario: Scenario, tools: ToolRegistry, backend: DemoBackend) -> list[str]:
    """The tools and records a scenario names that do not exist."""
    problems: list[str] = []
    try:
        scenario.fault_profile  # noqa: B018 (the property validates the name)
    except BadRequest as err:
        problems.append(f"faults: {err}")
    calls = scenario.model + (scenario.trajectory.calls if scenario.trajectory else [])
    for call in calls:
        if call.name not in tools:
            problems.append(f"no tool named {call.name!r} (known: {', '.join(tools.names())})")
    if scenario.planner == "model" and not scenario.model:
        problems.append("planner: model needs the model's calls (model: [...])")
    expect = scenario.expect
    lookups: list[tuple[str, Any]] = [
        *((f"charge {r.charge_id}", lambda r=r: backend.get_charge(r.charge_id))
          for r in expect.refunds),
        *((f"ticket {t}", lambda t=t: backend.get_ticket(t)) for t in expect.tickets),
        *((f"customer {c}", lambda c=c: backend.get_customer(c)) for c in expect.billing_emails),
    ]  # fmt: skip
    for what, lookup in lookups:
        try:
            lookup()
        except Permanent:
            problems.append(f"expect names {what}, which the demo backend does not have")
    return problems


def seeded_backend(settings: Settings) -> tuple[DemoBackend, tempfile.TemporaryDirectory[str]]:
    """A freshly seeded backend in a folder of its own, to check scenarios against."""
    folder = tempfile.TemporaryDirectory(prefix="keel-scenario-check-")
    backend = DemoBackend(Path(folder.name) / "demo.sqlite")
    backend.seed(reset=True)
    return backend, folder
