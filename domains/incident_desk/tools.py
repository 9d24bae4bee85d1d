"""The incident desk's tools: typed contracts over the operations backend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domains.incident_desk.backend import IncidentBackend
from graph.domain import ToolCall, ToolSpec

ALERT_ID = r"^ALR-\d{3}$"
DEPLOY_ID = r"^D-\d{4}$"
INCIDENT_ID = r"^INC-\d{3}$"
SERVICE = r"^[a-z][a-z0-9-]{1,40}-api$"


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Responses may grow fields (that is not drift); a missing or retyped one is."""

    model_config = ConfigDict(extra="ignore")


class AlertRef(Args):
    alert_id: str = Field(pattern=ALERT_ID)


class ServiceRef(Args):
    service: str = Field(pattern=SERVICE)


class DeployRef(Args):
    deploy_id: str = Field(pattern=DEPLOY_ID)


class IncidentRef(Args):
    incident_id: str = Field(pattern=INCIDENT_ID)


class OpenIncidentArgs(Args):
    alert_id: str = Field(pattern=ALERT_ID)
    title: str = Field(min_length=3, max_length=200)


class AnnotateArgs(Args):
    incident_id: str = Field(pattern=INCIDENT_ID)
    note: str = Field(min_length=3, max_length=1000)


class RollbackArgs(Args):
    deploy_id: str = Field(pattern=DEPLOY_ID)
    reason: str = Field(min_length=3, max_length=200)


class RestartArgs(Args):
    service: str = Field(pattern=SERVICE)
    reason: str = Field(min_length=3, max_length=200)


class PageArgs(Args):
    service: str = Field(pattern=SERVICE)
    engineer: str = Field(min_length=2, max_length=80)
    message: str = Field(min_length=3, max_length=1000)


class Alert(Answer):
    alert_id: str
    service: str
    title: str
    severity: Literal["sev1", "sev2", "sev3", "sev4"]
    status: Literal["firing", "resolved"]
    opened_at: str


class Deploy(Answer):
    deploy_id: str
    service: str
    version: str
    previous_version: str
    deployed_at: str
    status: Literal["live", "superseded", "rolling_back", "rolled_back"]


class Deploys(Answer):
    service: str
    deploys: list[Deploy]


class Metric(Answer):
    name: str
    value: float
    baseline: float


class Metrics(Answer):
    service: str
    metrics: list[Metric]


class OnCall(Answer):
    service: str
    engineer: str
    handle: str


class Incident(Answer):
    incident_id: str
    alert_id: str
    service: str
    title: str
    severity: str
    status: Literal["open", "closed"]
    notes: list[str]


class Annotated(Answer):
    incident_id: str
    notes: list[str]


class Rollback(Answer):
    rollback_id: str
    deploy_id: str
    service: str
    to_version: str
    status: Literal["rolling_back", "finished"]
    replayed: bool


class Restart(Answer):
    restart_id: str
    service: str
    status: Literal["restarted"]
    replayed: bool


class Page(Answer):
    page_id: str
    service: str
    engineer: str
    status: Literal["paged"]
    replayed: bool


def _key(call: ToolCall[Any]) -> str:
    if not call.idempotency_key:
        raise ValueError("an irreversible call needs an idempotency key")
    return call.idempotency_key


def incident_tools(backend: IncidentBackend) -> list[ToolSpec[Any, Any]]:
    """The incident desk's tools bound to one backend, as declarations for Keel to wrap."""
    b = backend
    return [
        ToolSpec("get_alert", "Read an alert: its service, title, severity and status.",
                 AlertRef, Alert, "read", lambda c: b.get_alert(c.args.alert_id),
                 integration="alerts"),
        ToolSpec("list_deploys", "List a service's deploys, newest first, with their status.",
                 ServiceRef, Deploys, "read", lambda c: b.list_deploys(c.args.service),
                 integration="deploys"),
        ToolSpec("get_deploy", "Read one deploy: its service, versions and status.",
                 DeployRef, Deploy, "read", lambda c: b.get_deploy(c.args.deploy_id),
                 integration="deploys"),
        ToolSpec("get_metrics", "Read a service's current metrics beside their baselines.",
                 ServiceRef, Metrics, "read", lambda c: b.get_metrics(c.args.service),
                 integration="metrics"),
        ToolSpec("get_oncall", "Read who is on call for a service.",
                 ServiceRef, OnCall, "read", lambda c: b.get_oncall(c.args.service),
                 integration="pager"),
        ToolSpec("get_incident", "Read an incident and its timeline notes.",
                 IncidentRef, Incident, "read", lambda c: b.get_incident(c.args.incident_id),
                 integration="incidents"),
        ToolSpec("open_incident", "Open the incident for an alert (one per alert).",
                 OpenIncidentArgs, Incident, "write",
                 lambda c: b.open_incident(c.args.alert_id, c.args.title),
                 integration="incidents"),
        ToolSpec("annotate_incident", "Add a note to an incident's timeline.",
                 AnnotateArgs, Annotated, "write",
                 lambda c: b.annotate_incident(c.args.incident_id, c.args.note),
                 integration="incidents"),
        ToolSpec("rollback_deploy", "Roll a live deploy back to the version before it. "
                 "Irreversible.", RollbackArgs, Rollback, "irreversible",
                 lambda c: b.rollback_deploy(c.args.deploy_id, c.args.reason, _key(c)),
                 integration="deploys", lookup=b.recorded),
        ToolSpec("restart_service", "Restart every instance of a service. Irreversible.",
                 RestartArgs, Restart, "irreversible",
                 lambda c: b.restart_service(c.args.service, c.args.reason, _key(c)),
                 integration="deploys", lookup=b.recorded),
        ToolSpec("page_oncall", "Page a service's on-call engineer. Irreversible.",
                 PageArgs, Page, "irreversible",
                 lambda c: b.page_oncall(c.args.service, c.args.engineer, c.args.message,
                                         _key(c)),
                 integration="pager", lookup=b.recorded),
    ]  # fmt: skip
