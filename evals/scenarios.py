"""Eval scenarios as data: one YAML file holds a list of them (a domain's ``scenarios/*.yaml``).

A scenario names the request, the fault profile, the scripted model's behaviour (the tool calls a
model makes for this request: the baselines' script, and Keel's plan when ``planner: model``),
any poisoned documents added to the corpus, how the human reviewer answers, the expected end
state of the backend and the expected trajectory. The end state is written in lines of the
domain's snapshot (``Showcase.snapshot``), so one schema serves every domain. Loading checks every
scenario against the domain: a file that is not YAML or does not fit the schema is reported with
its line, a scenario that names a tool, fault profile or command that does not exist is reported
by name, and the others still load.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from graph.domain import Showcase
from graph.state import ThreadStatus, TrustTier
from keel.errors import BadRequest
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


class Expected(Strict):
    """The end state a correct run leaves behind; anything else the backend shows is unsafe.

    Both are lines of the domain's ``snapshot`` (``Showcase.snapshot``), compared with the backend
    itself, not with what an agent says it did.
    """

    status: list[ThreadStatus] = Field(
        default_factory=list, description="Keel's final status, one of these (empty: any)"
    )
    effects: list[str] = Field(
        default_factory=list,
        description="the irreversible actions the run takes, each once, in the order they "
        "happen: snapshot lines without their '#ID' (\"email to ada@example.com\")",
    )
    facts: list[str] = Field(
        default_factory=list,
        description='the states the run leaves changed: snapshot lines ("ticket T-77 is '
        'closed"); a state changed and not listed here is an unasked change',
    )
    reports: list[str] = Field(
        default_factory=list,
        description="the effects that tell someone the work is done (an e-mail saying "
        '"refunded"): each one taken while another expected effect or fact is not so is '
        "unsafe, since it announces work that did not happen",
    )
    answer_contains: list[str] = Field(
        default_factory=list, description="phrases Keel's answer must hold (case-insensitive)"
    )

    @model_validator(mode="after")
    def _reports_are_effects(self) -> Expected:
        stray = [r for r in self.reports if r not in self.effects]
        if stray:
            raise ValueError(f"a report is one of the effects: {stray[0]!r} is not")
        return self

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("effects")
    @classmethod
    def _no_ids(cls, value: list[str]) -> list[str]:
        with_id = [line for line in value if "#" in line]
        if with_id:
            raise ValueError(f"an effect is written without its '#ID': {with_id[0]!r}")
        return value

    @field_validator("facts")
    @classmethod
    def _states(cls, value: list[str]) -> list[str]:
        odd = [line for line in value if " is " not in line or "#" in line]
        if odd:
            raise ValueError(f"a fact reads 'SUBJECT is VALUE': {odd[0]!r}")
        return value


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
    then: str | None = Field(
        default=None,
        description="the domain command (Domain.commands) that moves the world on when the "
        "thread waits for an event (a bank settling a refund, a rollback finishing)",
    )
    poisoned: list[PoisonedDoc] = Field(default_factory=list)
    baselines: bool = Field(
        default=True,
        description="run the baselines too (false where they cannot express the scenario: "
        "a question needs retrieval, which create_agent does not bring)",
    )
    expect: Expected
    trajectory: ExpectedTrajectory | None = None
    tags: list[str] = Field(default_factory=list)
    _named: FaultProfile | None = PrivateAttr(default=None)

    @property
    def fault_profile(self) -> FaultProfile:
        """The profile: given inline, or the named one ``load_scenarios`` resolved among the
        generic and the domain's own profiles."""
        if isinstance(self.faults, FaultProfile):
            return self.faults
        return self._named if self._named is not None else profile_named(self.faults)

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
    paths: list[Path], tools: ToolRegistry, domain: Showcase
) -> tuple[list[Scenario], list[ScenarioProblem]]:
    """Every scenario the files hold that can run, and what is wrong with the rest.

    Args:
        paths: YAML files, or folders of them.
        tools: the registry the scenarios' calls must name tools of.
        domain: the domain whose fault profiles and commands the scenarios may name.
    """
    files = sorted(p for path in paths for p in (path.glob("*.yaml") if path.is_dir() else [path]))
    if not files:
        raise BadRequest(f"no scenario files in {', '.join(map(str, paths))}")
    scenarios: list[Scenario] = []
    problems: list[ScenarioProblem] = []
    for file in files:
        found, wrong = _load_file(file, tools, domain)
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
    file: Path, tools: ToolRegistry, domain: Showcase
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
        unknown = _unknown_references(scenario, tools, domain)
        if unknown:
            at = f"{file}:{line_of(root, (i,))} ({name})"
            problems.append(ScenarioProblem(at, "; ".join(unknown)))
            continue
        out.append(scenario)
    return out, problems


def _unknown_references(scenario: Scenario, tools: ToolRegistry, domain: Showcase) -> list[str]:
    """The tools, profiles and commands a scenario names that do not exist (the named profile
    is resolved here, among the generic and the domain's own)."""
    problems: list[str] = []
    if isinstance(scenario.faults, str):
        try:
            scenario._named = profile_named(scenario.faults, domain.fault_profiles())
        except BadRequest as err:
            problems.append(f"faults: {err}")
    calls = scenario.model + (scenario.trajectory.calls if scenario.trajectory else [])
    for call in calls:
        if call.name not in tools:
            problems.append(f"no tool named {call.name!r} (known: {', '.join(tools.names())})")
    if scenario.planner == "model" and not scenario.model:
        problems.append("planner: model needs the model's calls (model: [...])")
    if scenario.then is not None and scenario.then not in domain.commands():
        known = ", ".join(domain.commands()) or "none"
        problems.append(f"then: {domain.name} has no command {scenario.then!r} (known: {known})")
    return problems


@dataclass(frozen=True)
class Seeded:
    """A freshly seeded backend in a folder of its own: settings pointing at it, and its
    snapshot (what every run's end state is compared with)."""

    settings: Settings
    snapshot: frozenset[str]


@contextmanager
def seeded_world(settings: Settings, domain: Showcase) -> Iterator[Seeded]:
    """The domain's backend seeded in a temporary folder, for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="keel-seeded-") as folder:
        own = settings.model_copy(update={"domain_backend": Path(folder) / "seeded.sqlite"})
        domain.prepare(own, reset=True)
        yield Seeded(own, frozenset(domain.snapshot(own)))
