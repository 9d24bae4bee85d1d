"""The seam between Keel's machinery and an example domain.

A domain brings its tools, how to recognise its entities in a request, how to fill a runbook's
parameters, and the business rules the validator checks. Replacing the demo domain means writing
one object with this shape (see ``tools/demo``), not editing the graph.
"""

from __future__ import annotations

from typing import Any, Protocol

from graph.state import CannotPlan, DomainEvent, EventWait, Evidence, Plan, Step
from keel.settings import Settings
from tools.permissions import Scope
from tools.spec import AgentTools, ToolRegistry


class Domain(Protocol):
    name: str

    def prepare(self, settings: Settings, *, reset: bool = False) -> None:
        """Create (and with ``reset``, re-create) the domain's backing stores."""

    def is_prepared(self, settings: Settings) -> bool: ...

    def tools(self, settings: Settings) -> ToolRegistry:
        """The domain's tool registry, bound to its backends and to the home's shared breakers
        (``breaker_for=SqliteBreakerStore(settings.breaker_db).breaker``)."""

    def extract_entities(self, request: str) -> dict[str, str]:
        """Business ids and values the request names (customer, invoice, amount, ...)."""

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        """Read, through read-only tools, the records the request's entities point at."""

    def runbook_plan(
        self, runbook: Evidence, request: str, entities: dict[str, str], records: dict[str, Any]
    ) -> Plan | CannotPlan:
        """Fill one runbook's steps from the request and the records."""

    def plan_rules(self, plan: Plan, records: dict[str, Any]) -> list[str]:
        """Business rules a plan must meet; each broken rule is one reason."""

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """For each integration, a cheap read that shows whether it answers."""

    def postconditions(self, step: Step, output: dict[str, Any], tools: AgentTools) -> list[str]:
        """What must be true after a step ran; each failure is one reason."""

    def awaited_event(self, step: Step, index: int, output: dict[str, Any]) -> EventWait | None:
        """When a step's effect is still in flight after it answered: the event that settles it."""

    def events_after(self, settings: Settings, seq: int) -> list[DomainEvent]:
        """The domain's business events newer than ``seq`` (its outbox), oldest first."""

    def scopes(self) -> dict[str, Scope]:
        """The named scopes the permission manifest may narrow grants with, each with the
        arguments its check reads (a grant on a tool without them does not load)."""
