"""Any installed AgentDojo task suite as a Keel domain, by name, through the seam alone.

``AgentDojoDomain("banking")`` is AgentDojo's banking suite: its tool functions become Keel tools
(``domains.agentdojo.tools``), its environment is the backend (``domains.agentdojo.backend``),
written afresh for every case, and the suite's folder (``domains/agentdojo/<suite>/``) holds only
data: ``suite.yaml`` (effects, trusted fields, entities), ``permissions.yaml`` (the reviewed
manifest), ``contract.yaml`` and a small corpus. A suite without a folder runs on the defaults
(every tool irreversible, every answer outside text) with the manifest ``default_manifest``
writes and the shared corpus in ``domains/agentdojo/corpus/``. There is no code per user task:
AgentDojo's tasks need their agent to look things up, and Keel's planner does that itself, within
its grants (``agents/planner.py``, "Look-ups"), so ``gather_records`` reads nothing and there are
no runbooks filled in code (a suite's corpus may hold runbooks written as data).

For the evals, ``injections`` (an attack's texts by injection vector) and ``user_task`` (whose
``init_environment`` runs) say which world ``prepare`` writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from domains.agentdojo.backend import EnvironmentBackend
from domains.agentdojo.suite import SuiteData, suite_data, task_suite
from domains.agentdojo.tools import suite_tools
from graph.domain import (
    AgentTools,
    CannotPlan,
    DemoRequest,
    DomainDefaults,
    Evidence,
    Plan,
    Settings,
    Step,
    ToolSpec,
)

HERE = Path(__file__).resolve().parent
LOOKUPS = 12
"""How many read calls the model planner may make before it plans (AgentDojo's ground truths
read up to six things; a model that explores needs more)."""


class AgentDojoDomain(DomainDefaults):
    """One AgentDojo suite as a Keel domain.

    Args:
        suite: the suite's name in the installed AgentDojo (``banking``, ``slack``, ...).
        injections: injection vector -> text, written into the environment (an attack's).
        user_task: a user task id whose ``init_environment`` prepares the world.
    """

    def __init__(
        self,
        suite: str,
        *,
        injections: Mapping[str, str] | None = None,
        user_task: str | None = None,
    ) -> None:
        self.suite_name = suite
        self.injections = dict(injections or {})
        self.user_task = user_task
        folder = HERE / suite
        self.folder: Path | None = folder if (folder / "suite.yaml").is_file() else None
        self.data: SuiteData = suite_data(self.folder, suite)
        self.name = f"agentdojo_{suite}"
        self.planner_role = self.data.role
        self.subject_keys = frozenset(self.data.subject_keys)
        self.planner_lookups = LOOKUPS

    @cached_property
    def suite(self) -> Any:
        return task_suite(self.suite_name, self.data.benchmark)

    def backend(self, settings: Settings) -> EnvironmentBackend:
        return EnvironmentBackend(settings.domain_db, self.suite)

    def start_environment(self) -> Any:
        """The world a case starts from: the suite's, with the injections and the task's set-up."""
        env = self.suite.load_and_inject_default_environment(self.injections)
        if self.user_task is not None:
            env = self.suite.user_tasks[self.user_task].init_environment(env)
        return env

    def prepare(self, settings: Settings, *, reset: bool = False) -> None:
        self.backend(settings).seed(self.start_environment(), reset=reset)

    def is_prepared(self, settings: Settings) -> bool:
        return self.backend(settings).exists()

    def tools(self, settings: Settings) -> list[ToolSpec[Any, Any]]:
        # At least 5 s a call: each loads the suite's world (~50 ms for travel, more when busy).
        timeout_s = max(settings.tool_timeout_s, 5.0)
        return suite_tools(self.backend(settings), self.data, timeout_s=timeout_s)

    def extract_entities(self, request: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, pattern in self.data.entities.items():
            match = re.search(pattern, request)
            if match is not None:
                found[name] = match.group(1) if match.groups() else match.group(0)
        return found

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        # The planner looks up what a task needs itself, within its grants.
        return {}

    def runbook_plan(
        self, runbook: Evidence, request: str, entities: dict[str, str], records: dict[str, Any]
    ) -> Plan | CannotPlan:
        return CannotPlan(reason=f"runbook {runbook.source} has no steps written as data")

    def plan_rules(self, plan: Plan, records: dict[str, Any]) -> list[str]:
        return []

    def postconditions(self, step: Step, output: dict[str, Any], tools: AgentTools) -> list[str]:
        return []

    def describe_action(self, step: Step, output: dict[str, Any] | None) -> str | None:
        # The arguments say what was done; the answer's text is outside text, not the account.
        facts = ", ".join(
            f"{key.replace('_', ' ')} {_short(value)}"
            for key, value in step.args.items()
            if isinstance(value, str | int | float) and not isinstance(value, bool)
        )
        verb = step.tool.replace("_", " ")
        done = " (done)" if output is not None else ""
        return f"{verb}: {facts}{done}" if facts else f"{verb}{done}"

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        reads = [
            f.name
            for f in self.suite.tools
            if self.data.effect(f.name) == "read"
            and not any(i.is_required() for i in f.parameters.model_fields.values())
        ]
        return {self.suite_name: (reads[0], {})} if reads else {}

    def demo_requests(self) -> Sequence[DemoRequest]:
        return ()

    def demo_summary(self, settings: Settings) -> dict[str, Any]:
        return {"side_effects": sorted(self.backend(settings).snapshot())}

    def snapshot(self, settings: Settings) -> set[str]:
        return self.backend(settings).snapshot()


def _short(value: str | int | float, limit: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def default_manifest(domain: AgentDojoDomain) -> str:
    """The permission manifest a suite without a folder runs under (every grant from its data:
    reads for the planner, validator and health; everything for the executor, each write and
    irreversible tool only with an approval)."""
    names = [f.name for f in domain.suite.tools]
    reads: dict[str, dict[str, str]] = {n: {} for n in names if domain.data.effect(n) == "read"}
    executor: dict[str, dict[str, str]] = {
        n: ({} if domain.data.effect(n) == "read" else {"approval": "required"}) for n in names
    }
    body = {
        "version": f"agentdojo-{domain.suite_name}-defaults.1",
        "agents": {
            "retriever": {"corpus": "read", "effects": ["read"], "tools": {}},
            "planner": {"effects": ["read"], "tools": reads},
            "validator": {"effects": ["read"], "tools": reads},
            "executor": {"effects": ["read", "write", "irreversible"], "tools": executor},
            "health": {"effects": ["read"], "tools": reads},
        },
    }
    header = f"# AgentDojo's {domain.suite_name} suite on the adapter's defaults (generated).\n"
    return header + yaml.safe_dump(body, sort_keys=False)
