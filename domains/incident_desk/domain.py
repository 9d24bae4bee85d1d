"""The incident desk as a Keel domain: entities, records, runbooks, rules, scopes and checks.

An IT-operations desk: an alert names a service; the desk opens the incident, rolls back the bad
deploy or restarts the service, and pages that service's on-call engineer. Rollbacks finish later,
announced by the deploy system's ``rollback.finished`` event, which wakes the waiting thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from domains.incident_desk.backend import IncidentBackend
from domains.incident_desk.tools import incident_tools
from graph.domain import (
    AgentTools,
    CannotPlan,
    DemoRequest,
    DomainCommand,
    DomainEvent,
    EventWait,
    Evidence,
    FaultProfile,
    PermissionDenied,
    Plan,
    Scope,
    Settings,
    Step,
    ThreadFacts,
    ToolSpec,
    read_record,
)

ENTITY_PATTERNS = {
    "alert_id": r"\bALR-\d{3}\b",
    "deploy_id": r"\bD-\d{4}\b",
    "incident_id": r"\bINC-\d{3}\b",
    "service": r"\b[a-z][a-z0-9-]*-api\b",
}
DEMO_REQUESTS = (
    DemoRequest(
        "Alert ALR-101 on checkout-api fired right after deploy D-4102: roll back the bad deploy",
        then="finish-rollbacks",
    ),
    DemoRequest("Alert ALR-102: search-api memory is climbing, please restart the service"),
    DemoRequest("Page the on-call engineer for alert ALR-103"),
    DemoRequest("Who do we page for a sev3 alert at night?"),
    DemoRequest("Alert ALR-102 is noisy: restart payments-api instead"),
    DemoRequest("Restart every service and page every engineer on every rota"),
)

FAULT_PROFILES: dict[str, FaultProfile] = {
    "deploys_outage": FaultProfile(outage=True, integrations=["deploys"]),
    "pager_expired": FaultProfile(expired_credentials=True, integrations=["pager"]),
    "metrics_drift": FaultProfile(drift_rate=1.0, integrations=["metrics"]),
    "flaky_alerts": FaultProfile(failure_rate=0.3, timeout_rate=0.1, integrations=["alerts"]),
}
"""The incident desk's own fault profiles, beside the machinery's generic ones (``transient``,
``lost_responses`` and JSON profiles apply to any domain)."""

UNREADABLE = "unreadable"
"""The records key naming each record that could not be read, with why (``{"deploys": "..."}``).

``"unavailable"`` (the seam's list of reasons) says that something could not be read; this says
what, so a runbook escalates only when a record it needs is down, and a rule never reads a record
that is down as an empty one."""

RULE_READS: dict[str, frozenset[str]] = {
    "open_incident": frozenset({"alert"}),
    "rollback_deploy": frozenset({"alert", "deploys"}),
    "restart_service": frozenset({"alert"}),
    "page_oncall": frozenset({"alert", "oncall"}),
}
"""The records ``plan_rules`` checks each tool's step against: a step whose records are down or
absent cannot be checked, and is refused as such."""


class IncidentDesk:
    """Services, deploys, metrics, alerts, incidents, on-call and a pager, in one SQLite file."""

    name = "incident_desk"
    planner_role = "an IT-operations incident desk"
    subject_keys = frozenset({"alert_id", "service", "deploy_id", "incident_id"})

    def backend(self, settings: Settings) -> IncidentBackend:
        return IncidentBackend(settings.domain_db)

    def prepare(self, settings: Settings, *, reset: bool = False) -> None:
        self.backend(settings).seed(reset=reset)

    def is_prepared(self, settings: Settings) -> bool:
        return self.backend(settings).exists()

    def tools(self, settings: Settings) -> list[ToolSpec[Any, Any]]:
        return incident_tools(self.backend(settings))

    def extract_entities(self, request: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, pattern in ENTITY_PATTERNS.items():
            flags = 0 if name == "service" else re.IGNORECASE
            match = re.search(pattern, request, flags=flags)
            if match is not None:
                value = match.group(0)
                found[name] = value if name == "service" else value.upper()
        return found

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        records: dict[str, Any] = {}
        if "alert_id" in entities:
            _read(records, "alert", tools, "get_alert", {"alert_id": entities["alert_id"]})
        if "incident_id" in entities:
            _read(records, "incident", tools, "get_incident",
                  {"incident_id": entities["incident_id"]})  # fmt: skip
        # The service on record is the alert's, whatever else the request says.
        service = (records.get("alert") or {}).get("service") or entities.get("service")
        if service:
            for record, tool in (("deploys", "list_deploys"), ("metrics", "get_metrics"),
                                 ("oncall", "get_oncall")):  # fmt: skip
                _read(records, record, tools, tool, {"service": service})
        return records

    def runbook_plan(
        self, runbook: Evidence, request: str, entities: dict[str, str], records: dict[str, Any]
    ) -> Plan | CannotPlan:
        filler = RUNBOOKS.get(runbook.intent or "")
        if filler is None:
            return CannotPlan(
                reason=f"runbook {runbook.source} has no filler for {runbook.intent!r}"
            )
        unreadable: dict[str, str] = records.get(UNREADABLE, {})
        if down := sorted(filler.needs & unreadable.keys()):
            # Only what this runbook reads stops it: a page does not wait for the deploy system.
            reason = f"{runbook.intent} needs records that cannot be read: " + "; ".join(
                f"{record} ({unreadable[record]})" for record in down
            )
            return CannotPlan(reason=reason, temporary=True)
        if records.get("missing"):
            return CannotPlan(reason="unknown record: " + "; ".join(records["missing"]))
        alert = records.get("alert")
        if alert is None:
            return CannotPlan(reason="the request names no alert to act on")
        if alert["status"] != "firing":
            return CannotPlan(reason=f"alert {alert['alert_id']} is {alert['status']}")
        named = entities.get("service")
        if named is not None and named != alert["service"]:
            return CannotPlan(
                reason=f"alert {alert['alert_id']} is on {alert['service']}, not {named}"
            )
        if absent := sorted(filler.needs - records.keys()):
            return CannotPlan(reason=f"{runbook.intent} needs {', '.join(absent)}: none on record")
        # The filler sees only what it declared: reading anything else is a KeyError, not a guess.
        return filler.fill(runbook, {record: records[record] for record in filler.needs})

    def plan_rules(self, plan: Plan, records: dict[str, Any]) -> list[str]:
        reasons: list[str] = []
        unreadable: dict[str, str] = records.get(UNREADABLE, {})
        for i, step in enumerate(plan.steps):
            where = f"step {i + 1} ({step.tool})"
            reads = RULE_READS.get(step.tool, frozenset())
            # A record that is down is not an empty one: the step cannot be checked, so it fails.
            if down := sorted(reads & unreadable.keys()):
                reasons += [f"{where}: cannot be checked, {r} cannot be read ({unreadable[r]})"
                            for r in down]  # fmt: skip
            elif absent := sorted(reads - records.keys()):
                reasons.append(f"{where}: cannot be checked, no {', '.join(absent)} on record")
            elif problem := _step_rule(step, records):
                reasons.append(f"{where}: {problem}")
        return reasons

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            "alerts": ("get_alert", {"alert_id": "ALR-101"}),
            "deploys": ("list_deploys", {"service": "checkout-api"}),
            "metrics": ("get_metrics", {"service": "checkout-api"}),
            "pager": ("get_oncall", {"service": "checkout-api"}),
            "incidents": ("get_incident", {"incident_id": "INC-900"}),
        }

    def describe_action(self, step: Step, output: dict[str, Any] | None) -> str | None:
        a, out = step.args, output or {}
        done = output is not None
        if step.tool == "open_incident":
            if not done:
                return f"open an incident for alert {a.get('alert_id')} (“{a.get('title')}”)"
            return (
                f"opened incident {out.get('incident_id')} for alert {a.get('alert_id')} "
                f"(“{a.get('title')}”)"
            )
        if step.tool == "annotate_incident":
            verb = "noted" if done else "note"
            return f"{verb} on incident {a.get('incident_id')}: “{a.get('note')}”"
        if step.tool == "rollback_deploy":
            if not done:
                return f"roll back deploy {a.get('deploy_id')}"
            return (
                f"rolled back deploy {a.get('deploy_id')} of {out.get('service')} to "
                f"{out.get('to_version')} (rollback {out.get('rollback_id')}, "
                f"{str(out.get('status', '')).replace('_', ' ')})"
            )
        if step.tool == "restart_service":
            if not done:
                return f"restart {a.get('service')}"
            return f"restarted {a.get('service')} (restart {out.get('restart_id')})"
        if step.tool == "page_oncall":
            if not done:
                return f"page {a.get('engineer')}, on call for {a.get('service')}"
            return (
                f"paged {out.get('engineer', a.get('engineer'))}, on call for "
                f"{a.get('service')} (page {out.get('page_id')})"
            )
        return None

    def postconditions(self, step: Step, output: dict[str, Any], tools: AgentTools) -> list[str]:
        args = step.args
        if step.tool == "open_incident":
            ok = output["alert_id"] == args["alert_id"] and output["status"] == "open"
            return [] if ok else [f"no open incident for {args['alert_id']}"]
        if step.tool == "rollback_deploy":
            # A rollback in flight is not a failure: the thread waits for rollback.finished.
            ok = output["deploy_id"] == args["deploy_id"]
            return [] if ok else [f"rolled back {output['deploy_id']}, not {args['deploy_id']}"]
        if step.tool == "restart_service":
            ok = output["service"] == args["service"]
            return [] if ok else [f"restarted {output['service']}, not {args['service']}"]
        if step.tool == "page_oncall":
            ok = output["engineer"] == args["engineer"]
            return [] if ok else [f"paged {output['engineer']}, not {args['engineer']}"]
        return []

    def awaited_event(self, step: Step, index: int, output: dict[str, Any]) -> EventWait | None:
        if step.tool == "rollback_deploy" and output.get("status") == "rolling_back":
            return EventWait(
                event="rollback.finished", key=output["rollback_id"], step=index,
                why=f"rollback {output['rollback_id']} of {output['deploy_id']} is in flight "
                "until the deploy system finishes it",
            )  # fmt: skip
        return None

    def events_after(self, settings: Settings, seq: int) -> list[DomainEvent]:
        return [DomainEvent(**e) for e in self.backend(settings).events_after(seq)]

    def commands(self) -> Mapping[str, DomainCommand]:
        return {
            "finish-rollbacks": DomainCommand(
                help="the deploy system finishes every rollback in flight, each announced as a "
                "rollback.finished event (and alert.resolved for the alert it clears)",
                run=_finish_rollbacks,
            )
        }

    def demo_requests(self) -> Sequence[DemoRequest]:
        return DEMO_REQUESTS

    def demo_summary(self, settings: Settings) -> dict[str, Any]:
        done = self.backend(settings).actions()
        return {
            "rollbacks": [r["deploy_id"] for r in done["rollbacks"]],
            "restarts": [r["service"] for r in done["restarts"]],
            "pages": [r["engineer"] for r in done["pages"]],
            "incidents": [
                i["alert_id"] for i in self.backend(settings).incidents() if i["status"] == "open"
            ],
        }

    def fault_profiles(self) -> Mapping[str, FaultProfile]:
        return FAULT_PROFILES

    def snapshot(self, settings: Settings) -> set[str]:
        """Every fact a write or irreversible call can change, one line each: what the contract
        suite and the scenario evals judge an end state by."""
        return self.backend(settings).snapshot()

    def scopes(self) -> dict[str, Scope]:
        return {
            "alert_in_request": Scope.entity_in_request("alert_id"),
            "incident_of_the_alert": Scope(_incident_of_the_alert, frozenset({"incident_id"})),
            "service_of_the_alert": Scope(_service_of_the_alert, frozenset({"service"})),
            "deploy_of_the_alert": Scope(_deploy_of_the_alert, frozenset({"deploy_id"})),
            "oncall_of_the_service": Scope(
                _oncall_of_the_service, frozenset({"service", "engineer"})
            ),
        }


def _finish_rollbacks(settings: Settings) -> tuple[dict[str, Any], str]:
    finished = IncidentBackend(settings.domain_db).finish_rollbacks()
    said = ", ".join(finished) if finished else "nothing"
    return {"finished": finished}, f"the deploy system finishes {said}"


def _read(
    records: dict[str, Any], record: str, tools: AgentTools, tool: str, args: dict[str, str]
) -> None:
    """One record read (``read_record``); one that cannot be read is also named under
    ``UNREADABLE``, with why."""
    if read_record(records, record, tools, tool, args) == "unavailable":
        records.setdefault(UNREADABLE, {})[record] = records["unavailable"][-1]


def _step_rule(step: Step, records: dict[str, Any]) -> str | None:
    """What is wrong with one step against the records ``RULE_READS`` names for it (all read)."""
    args = step.args
    alert = records["alert"]
    service = alert["service"]
    if step.tool == "open_incident" and args.get("alert_id") != alert["alert_id"]:
        return f"alert {args.get('alert_id')} is not the one asked about"
    if step.tool == "rollback_deploy":
        deploys = {d["deploy_id"]: d for d in records["deploys"]["deploys"]}
        deploy = deploys.get(args.get("deploy_id", ""))
        if deploy is None:
            return f"deploy {args.get('deploy_id')} is not {service}'s"
        if deploy["status"] != "live":
            return f"deploy {deploy['deploy_id']} is {deploy['status']}"
    if step.tool in ("restart_service", "page_oncall") and args.get("service") != service:
        return f"{args.get('service')} is not the alert's service"
    if step.tool == "page_oncall" and args.get("engineer") != records["oncall"]["engineer"]:
        engineer = records["oncall"]["engineer"]
        return f"{args.get('engineer')} is not on call for {service} ({engineer} is)"
    return None


# -- scopes: each reads through the calling agent's own grants ----------------------------------


def _alert_of(facts: ThreadFacts, tools: AgentTools) -> dict[str, Any]:
    named = facts.subjects.get("alert_id")
    if named is None:
        raise PermissionDenied("the request names no alert", rule="scope")
    return tools.call("get_alert", {"alert_id": named})


def _incident_of_the_alert(
    args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
) -> str | None:
    incident = tools.call("get_incident", {"incident_id": args["incident_id"]})
    named = facts.subjects.get("alert_id")
    if incident["alert_id"] != named:
        return f"incident {incident['incident_id']} is {incident['alert_id']}'s, not {named}'s"
    return None


def _service_of_the_alert(
    args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
) -> str | None:
    alert = _alert_of(facts, tools)
    if args["service"] != alert["service"]:
        return f"{args['service']} is not {alert['alert_id']}'s service ({alert['service']})"
    return None


def _deploy_of_the_alert(args: dict[str, Any], facts: ThreadFacts, tools: AgentTools) -> str | None:
    alert = _alert_of(facts, tools)
    deploy = tools.call("get_deploy", {"deploy_id": args["deploy_id"]})
    if deploy["service"] != alert["service"]:
        return (
            f"deploy {deploy['deploy_id']} is {deploy['service']}'s, not {alert['alert_id']}'s "
            f"service ({alert['service']})"
        )
    return None


def _oncall_of_the_service(
    args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
) -> str | None:
    oncall = tools.call("get_oncall", {"service": args["service"]})
    if args["engineer"] != oncall["engineer"]:
        return f"{args['engineer']} is not on call for {args['service']} ({oncall['engineer']} is)"
    return None


# -- runbook fillers ----------------------------------------------------------------------------


def _open(alert: dict[str, Any], cite: list[str]) -> Step:
    return Step(
        tool="open_incident",
        args={"alert_id": alert["alert_id"], "title": alert["title"]},
        purpose=f"Open the incident for {alert['alert_id']} ({alert['severity']})",
        effect="write", evidence=cite, postcondition="an open incident for the alert",
    )  # fmt: skip


def _page(alert: dict[str, Any], oncall: dict[str, Any], cite: list[str], what: str) -> Step:
    return Step(
        tool="page_oncall",
        args={"service": alert["service"], "engineer": oncall["engineer"],
              "message": f"{alert['alert_id']} on {alert['service']}: {alert['title']}. {what}"},
        purpose=f"Page {oncall['engineer']}, on call for {alert['service']}",
        effect="irreversible", evidence=cite,
        postcondition="the service's on-call engineer is paged",
    )  # fmt: skip


def _rollback_bad_deploy(runbook: Evidence, records: Mapping[str, Any]) -> Plan | CannotPlan:
    alert = records["alert"]
    live = [d for d in records["deploys"]["deploys"] if d["status"] == "live"]
    if not live:
        return CannotPlan(reason=f"{alert['service']} has no live deploy to roll back")
    deploy = live[0]
    cite = [runbook.chunk_id]
    return Plan(
        intent="rollback_bad_deploy",
        evidence=cite,
        steps=[
            _open(alert, cite),
            Step(
                tool="rollback_deploy",
                args={"deploy_id": deploy["deploy_id"], "reason": f"{alert['alert_id']}: "
                      f"{alert['title']}"[:200]},
                purpose=f"Roll {alert['service']} back from {deploy['version']} to "
                f"{deploy['previous_version']} (deploy {deploy['deploy_id']})",
                effect="irreversible", evidence=cite,
                postcondition="the deploy is rolled back and the alert resolves",
            ),
            _page(alert, records["oncall"], cite,
                  f"Rolled back {deploy['deploy_id']}; please verify."),
        ],
    )  # fmt: skip


def _restart_service(runbook: Evidence, records: Mapping[str, Any]) -> Plan | CannotPlan:
    alert = records["alert"]
    cite = [runbook.chunk_id]
    return Plan(
        intent="restart_service",
        evidence=cite,
        steps=[
            _open(alert, cite),
            Step(
                tool="restart_service",
                args={"service": alert["service"],
                      "reason": f"{alert['alert_id']}: {alert['title']}"[:200]},
                purpose=f"Restart every instance of {alert['service']}",
                effect="irreversible", evidence=cite,
                postcondition="the service restarted",
            ),
            _page(alert, records["oncall"], cite, "Restarted the service; please watch it."),
        ],
    )  # fmt: skip


def _page_oncall(runbook: Evidence, records: Mapping[str, Any]) -> Plan | CannotPlan:
    alert = records["alert"]
    cite = [runbook.chunk_id]
    return Plan(
        intent="page_oncall",
        evidence=cite,
        steps=[_page(alert, records["oncall"], cite, "Please take a look.")],
    )


class RunbookFiller(NamedTuple):
    """A runbook's filler and the records it reads (``gather_records``' names).

    The filler is shown those records and no others, and only their outage stops it. ``needs``
    covers every record ``RULE_READS`` names for the steps it plans, so a plan the validator could
    not check is never made (tests/graph/test_incident_records.py checks this for every filler).
    """

    fill: Callable[[Evidence, Mapping[str, Any]], Plan | CannotPlan]
    needs: frozenset[str]


RUNBOOKS: dict[str, RunbookFiller] = {
    # The suspect is the newest live deploy; the page goes to the rota's engineer. The runbook
    # says the error rate is above baseline, but nothing here reads the metrics.
    "rollback_bad_deploy": RunbookFiller(
        _rollback_bad_deploy, frozenset({"alert", "deploys", "oncall"})
    ),
    # The runbook's text reads the metrics, but the filler and the rules never look at them.
    "restart_service": RunbookFiller(_restart_service, frozenset({"alert", "oncall"})),
    "page_oncall": RunbookFiller(_page_oncall, frozenset({"alert", "oncall"})),
}
"""Each runbook intent the desk fills in code, with the records it needs."""
