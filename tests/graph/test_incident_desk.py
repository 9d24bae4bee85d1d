"""The incident desk's own behaviour, beyond the contract suite: a rollback that finishes later
wakes its thread through the deploy system's event, scopes keep actions on the alert's service,
and its own fault profiles are named like the machinery's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from domains.incident_desk import IncidentDesk
from domains.incident_desk.backend import IncidentBackend
from graph.context import KeelContext
from graph.domain import tool_registry
from graph.state import Plan, Receipt, Step, approval_digest
from keel.app import Decision, KeelApp
from keel.cli import main
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from stores.guard import plan_digest
from tools.permissions import PermissionGate

SPEC = "domains.incident_desk:IncidentDesk"
ROLLBACK = "Alert ALR-101 on checkout-api fired right after deploy D-4102: roll back the bad deploy"


@pytest.fixture(scope="module")
def desk_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("incident-index")
    settings = Settings(home=home, domain=SPEC, _env_file=None)  # type: ignore[call-arg]
    CorpusStore(settings, embedder_for(settings)).ingest(progress=False)
    return home


@pytest.fixture
def desk(desk_index: Path, tmp_path: Path) -> Settings:
    import shutil

    shutil.copytree(desk_index, tmp_path / "home")
    settings = Settings(home=tmp_path / "home", domain=SPEC, _env_file=None)  # type: ignore[call-arg]
    IncidentDesk().prepare(settings, reset=True)
    return settings


def test_a_rollback_waits_for_the_deploy_system_and_its_event_wakes_the_thread(
    desk: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEEL_HOME", str(desk.home))
    monkeypatch.setenv("KEEL_DOMAIN", SPEC)
    domain = IncidentDesk()
    with KeelApp.open(desk, KeelContext.from_settings(desk, domain=domain)) as app:
        first = app.run(ROLLBACK)
        assert first.status == "awaiting_approval"
        assert [p.name for p in first.pending or []] == ["rollback_deploy", "page_oncall"]
        waiting = app.resume(first.thread_id, Decision(kind="approve", reviewer="alice"))
        assert waiting.status == "awaiting_event"
        assert waiting.waiting is not None and waiting.waiting.event == "rollback.finished"
        backend = IncidentBackend(desk.domain_db)
        assert backend.actions()["pages"] == []  # the page waits for the rollback to finish
        assert main(["domain", "finish-rollbacks", "--json"]) == 0  # the deploy system's side
        said = json.loads(capsys.readouterr().out)
        assert said["finish-rollbacks"] == {"finished": ["RB-601"]}
        woke = app.dispatch_events()
        assert [(d["type"], d["woke"]) for d in woke] == [
            ("rollback.finished", [first.thread_id]),
            ("alert.resolved", []),
        ]
        done = app.show(first.thread_id)
    assert done.status == "done"
    assert [p["engineer"] for p in backend.actions()["pages"]] == ["Lin Wei"]
    assert {"deploy D-4102 is rolled_back", "alert ALR-101 is resolved"} <= backend.snapshot()


def test_a_request_for_another_service_than_the_alerts_is_refused(desk: Settings) -> None:
    with KeelApp.open(desk, KeelContext.from_settings(desk, domain=IncidentDesk())) as app:
        outcome = app.run("Alert ALR-102 is noisy: restart payments-api instead")
    assert outcome.status == "refused"
    assert "ALR-102 is on search-api, not payments-api" in outcome.answer
    assert IncidentBackend(desk.domain_db).actions()["restarts"] == []


def test_the_desks_own_fault_profiles_are_named_on_the_command_line(
    desk: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEEL_HOME", str(desk.home))
    monkeypatch.setenv("KEEL_DOMAIN", SPEC)
    assert main(["health", "--json", "--faults", "pager_expired"]) == 0
    rows = {r["integration"]: r for r in json.loads(capsys.readouterr().out)["integrations"]}
    assert rows["pager"]["status"] == "down" and "credentials expired" in rows["pager"]["detail"]
    assert rows["alerts"]["status"] == rows["deploys"]["status"] == "ok"
    assert main(["health", "--faults", "gremlins"]) == 2
    err = capsys.readouterr().err
    assert "unknown fault profile 'gremlins'" in err and "pager_expired" in err


def test_the_desks_scenarios_load_without_problems(tmp_path: Path) -> None:
    """Its eval scenarios are in the evals/scenarios format: tools it has, its own fault
    profiles by name, its own command to move the world on."""
    from evals.scenarios import load_scenarios

    desk = Settings(home=tmp_path, domain=SPEC, _env_file=None)  # type: ignore[call-arg]
    scenarios, problems = load_scenarios([desk.scenarios_dir], tool_registry(IncidentDesk(), desk),
                                         IncidentDesk())  # fmt: skip
    assert problems == []
    assert len(scenarios) == 10
    assert {s.fault_profile.integrations[0] for s in scenarios if s.fault_profile.integrations} == {
        "alerts", "pager", "deploys"
    }  # fmt: skip
    assert {s.then for s in scenarios} == {None, "finish-rollbacks"}


RESTART = "Alert ALR-102: search-api memory is climbing, please restart the service"


@pytest.mark.parametrize(
    ("request_text", "approvals", "status", "pages", "reason"),
    [
        pytest.param("Page the on-call engineer for alert ALR-103", ["page_oncall"], "done",
                     ["Priya Nair"], None, id="page"),
        # The rollback reads the deploys: it escalates before anything is done.
        pytest.param(ROLLBACK, None, "escalated", [], "rollback_bad_deploy needs records that "
                     "cannot be read: deploys (checkout-api: deploys:", id="rollback"),
        # The restart reads no deploy, but goes through the deploy system: the call is refused
        # (its breaker opened on the reads), and the page announcing it is never sent.
        pytest.param(RESTART, ["restart_service", "page_oncall"], "escalated", [],
                     "step 2 (restart_service) failed: deploys", id="restart"),
    ],
)  # fmt: skip
def test_a_deploys_outage_escalates_only_what_needs_the_deploy_system(
    desk: Settings,
    request_text: str,
    approvals: list[str] | None,
    status: str,
    pages: list[str],
    reason: str | None,
) -> None:
    down = desk.model_copy(update={"faults": "deploys_outage"})
    with KeelApp.open(down, KeelContext.from_settings(down, domain=IncidentDesk())) as app:
        outcome = app.run(request_text)
        if approvals is not None:
            assert outcome.status == "awaiting_approval"
            assert [p.name for p in outcome.pending or []] == approvals
            outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="alice"))
    assert outcome.status == status
    if reason is not None:
        assert outcome.escalation is not None and reason in outcome.escalation.reason
    actions = IncidentBackend(desk.domain_db).actions()
    assert [p["engineer"] for p in actions["pages"]] == pages
    assert actions["rollbacks"] == actions["restarts"] == []


WRITTEN_SUBJECTS = [
    pytest.param("ALR-102", Step(
        tool="restart_service", args={"service": "search-api", "reason": "memory climbing"},
        purpose="Restart search-api", effect="irreversible",
    ), id="service_of_the_alert"),
    pytest.param("ALR-103", Step(
        tool="open_incident", args={"alert_id": "ALR-103", "title": "auth-api login failures"},
        purpose="Open an incident for ALR-103", effect="write",
    ), id="alert_in_request"),
]  # fmt: skip


@pytest.mark.parametrize(("alert", "step"), WRITTEN_SUBJECTS)
def test_an_alert_a_caller_writes_into_entities_does_not_move_the_scopes(
    desk: Settings, alert: str, step: Step
) -> None:
    """The thread is about ALR-101 (checkout-api), as the thread guard recorded its request; a
    caller writes another alert into ``entities`` and a step on that alert's service, the plan
    one the validator passed and a reviewer approved: the scopes still read ALR-101 and refuse."""
    with KeelApp.open(desk, KeelContext.from_settings(desk, domain=IncidentDesk())) as app:
        first = app.run(ROLLBACK, thread_id="t-alert")
        assert first.status == "awaiting_approval"
        backend = IncidentBackend(desk.domain_db)
        before = backend.snapshot()
        plan = Plan(intent="act on the alert in entities", steps=[step])
        gate = app.context.tools.gate
        assert isinstance(gate, PermissionGate) and app.context.guard is not None
        app.context.guard.record_validated_plan("t-alert", plan_digest(plan))
        now = datetime.now(UTC)
        receipt = gate.signer.sign(Receipt(
            tool=step.tool, digest=approval_digest(step.tool, step.args), thread_id="t-alert",
            approved_by="alice", approved_at=now.isoformat(),
            expires_at=(now + timedelta(hours=1)).isoformat(), manifest_version=gate.version,
        ))  # fmt: skip
        config: Any = {"configurable": {"thread_id": "t-alert"}}
        app.graph.update_state(
            config,
            {"entities": {"alert_id": alert}, "plan": plan, "cursor": 0,
             "approvals": {receipt.digest: receipt}, "review": "approved", "status": "running"},
            as_node="approve",
        )  # fmt: skip
        app.graph.invoke(None, config, context=app.context, durability="sync")
        [result] = [r for r in app.show("t-alert").results if r.tool == step.tool]
    assert backend.snapshot() == before
    assert result.denied and "ALR-101" in (result.error or ""), result


RESTART = "Alert ALR-102: search-api memory is climbing, please restart the service"
"""Its plan: read the alert, open an incident (a write the grants allow without an approval),
restart the service (irreversible, approved), page the on-call engineer."""


def _dies_in_the_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.graph.test_chat import WorkerDied

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise WorkerDied

    monkeypatch.setattr(IncidentBackend, "restart_service", dies)


def test_a_write_before_a_step_the_worker_died_in_is_made_once_and_said_done(
    desk: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``execute`` node runs steps in turn in one superstep only past reads and irreversible
    calls (the ledger keeps those once): after a write with no ledger intent its outcome is
    checkpointed first. So a worker that dies in a later step leaves the write's outcome saved:
    the recovery does not make it again, and the account says it was done (found by a review:
    with every step in one superstep, the incident was opened twice and called "not started")."""
    from tests.graph.test_chat import WorkerDied

    opened: list[str] = []
    real_open = IncidentBackend.open_incident

    def counted(self: IncidentBackend, *args: Any, **kwargs: Any) -> Any:
        opened.append("open_incident")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(IncidentBackend, "open_incident", counted)
    real_restart = IncidentBackend.restart_service
    with KeelApp.open(desk, KeelContext.from_settings(desk, domain=IncidentDesk())) as app:
        first = app.run(RESTART, thread_id="t-restart")
        assert [s.tool for s in first.plan.steps if s.effect == "write"] == ["open_incident"]
        _dies_in_the_restart(monkeypatch)
        with pytest.raises(WorkerDied):
            app.resume(first.thread_id, Decision(kind="approve", reviewer="alice"))
        saved = app.graph.get_state({"configurable": {"thread_id": "t-restart"}}).values
        assert [(r.tool, r.ok) for r in saved["results"]] == [("open_incident", True)]
        monkeypatch.setattr(IncidentBackend, "restart_service", real_restart)
        recovered = app.recover(first.thread_id)
    assert recovered.status == "done"
    assert opened == ["open_incident"]
    assert [r.tool for r in recovered.results if r.tool == "open_incident"] == ["open_incident"]


def test_a_run_cut_short_after_a_write_accounts_for_the_write_as_done(
    desk: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same death, then a chat message: the escalation's account says the incident was
    opened (its outcome was checkpointed before the restart ran), never "not started"."""
    from tests.graph.test_chat import Chat, WorkerDied
    from tests.graph.test_chat import _say as say

    with KeelApp.open(desk, KeelContext.from_settings(desk, domain=IncidentDesk())) as app:
        chat = Chat(app)
        chat.send(say(RESTART))
        asked = chat.pending()["action_requests"]
        _dies_in_the_restart(monkeypatch)
        with pytest.raises(WorkerDied):
            chat.answer({"decisions": [{"type": "approve"} for _ in asked]})
        monkeypatch.undo()
        escalation = chat.send(say("any news?"))["escalation"]
    assert any("incident" in line.lower() for line in escalation.done), escalation
    assert not any("incident" in line.lower() for line in escalation.left), escalation.left
