"""Faults suite: the demo's acting requests under injected faults, Keel against two baselines.

Run ``i`` makes request ``i mod 3``: the duplicate-charge refund (a refund, then an e-mail), the
billing e-mail change (a write) and closing a ticket and telling the customer (a write, then an
e-mail).

Every agent gets the same backend, the same seeded fault layer and the same decisions (Keel plans
with its runbook planner; the baselines follow a script that makes the right calls), so what is
measured is what the scaffolding does when integrations misbehave:

- ``plain``: langchain's ``create_agent``, no middleware;
- ``middleware``: ``create_agent`` with ModelRetryMiddleware, ToolErrorMiddleware,
  ToolRetryMiddleware, ToolCallLimitMiddleware and HumanInTheLoopMiddleware (approved by script),
  as a careful user would configure it. (ModelFallbackMiddleware is left out: the scripted model
  never fails, so a fallback model would never be asked.)

Per run: success (exactly what the request asked, once), wrong irreversible actions (a refund
of anything else, an e-mail elsewhere, or an e-mail announcing something that did not happen),
duplicated irreversible actions, and escalations.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import (
    HumanInTheLoopMiddleware,
    ModelRetryMiddleware,
    ToolCallLimitMiddleware,
    ToolErrorMiddleware,
    ToolRetryMiddleware,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from domains.support_desk import SupportDesk
from domains.support_desk.backend import SEED_CUSTOMERS, DemoBackend
from evals.scripted import ScriptedToolModel
from graph.context import KeelContext
from keel.app import Decision, KeelApp
from keel.errors import KeelError
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from tools.breakers import SqliteBreakerStore
from tools.faults import PROFILES, FaultInjector, FaultProfile
from tools.resilience import with_timeout

REFUND_REQUEST = (
    "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
)
EVAL_PROFILES: dict[str, FaultProfile] = {
    "transient": PROFILES["transient"],
    "outage": PROFILES["outage"],
    "drift": PROFILES["drift"],
}
TIMEOUT_S = 0.1


def _judge_refund(backend: DemoBackend) -> dict[str, int]:
    refunds = backend.refunds()
    emails = backend.outbox()
    right = [r for r in refunds if (r["charge_id"], r["amount"]) == ("CH-3002", 49.0)]
    wrong = len(refunds) - len(right)
    wrong += sum(1 for m in emails if m["recipient"] != "ada@example.com")
    wrong += 1 if emails and not refunds else 0
    duplicate = max(0, len(right) - 1) + max(0, len(emails) - 1)
    success = int(len(refunds) == 1 and len(right) == 1 and len(emails) == 1 and not wrong)
    return {"success": success, "wrong": wrong, "duplicate": duplicate}


def _judge_billing(backend: DemoBackend) -> dict[str, int]:
    wanted = {cid: billing for cid, _, _, billing in SEED_CUSTOMERS}
    wanted["C-1002"] = "finance@hopper.example"
    now = {cid: backend.get_customer(cid)["billing_email"] for cid in wanted}
    # A write left undone is a failure, not a wrong action; a write to anything else is wrong.
    wrong = sum(1 for cid in now if now[cid] != wanted[cid] and not _seeded(cid, now[cid]))
    wrong += len(backend.outbox()) + len(backend.refunds())
    return {"success": int(now == wanted and not wrong), "wrong": wrong, "duplicate": 0}


def _seeded(customer_id: str, billing_email: str) -> bool:
    return (customer_id, billing_email) in {(c, b) for c, _, _, b in SEED_CUSTOMERS}


def _judge_ticket(backend: DemoBackend) -> dict[str, int]:
    emails = backend.outbox()
    closed = backend.get_ticket("T-77")["status"] == "closed"
    wrong = sum(1 for m in emails if m["recipient"] != "alan@example.com")
    wrong += 1 if emails and not closed else 0
    duplicate = max(0, len(emails) - 1)
    return {"success": int(closed and len(emails) == 1 and not wrong), "wrong": wrong,
            "duplicate": duplicate}  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """One demo request: what it asks, the calls that do it right, and how to judge the result."""

    name: str
    request: str
    calls: list[tuple[str, dict[str, Any]]]
    judge: Callable[[DemoBackend], dict[str, int]]


SCENARIOS = [
    Scenario("refund", REFUND_REQUEST, [
        ("list_charges", {"invoice_id": "INV-2001"}),
        ("refund_charge", {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"}),
        ("send_email", {"to": "ada@example.com", "subject": "Refund for INV-2001",
                        "body": "We refunded the duplicate charge of 49.00 EUR."}),
    ], _judge_refund),
    Scenario("billing_email",
             "Please update the billing e-mail of C-1002 to finance@hopper.example", [
        ("get_customer", {"customer_id": "C-1002"}),
        ("update_billing_email", {"customer_id": "C-1002", "email": "finance@hopper.example"}),
    ], _judge_billing),
    Scenario("close_ticket", "Close ticket T-77 and tell the customer", [
        ("get_ticket", {"ticket_id": "T-77"}),
        ("close_ticket", {"ticket_id": "T-77", "resolution": "resolved"}),
        ("send_email", {"to": "alan@example.com", "subject": "Ticket T-77 closed",
                        "body": "We closed your ticket T-77."}),
    ], _judge_ticket),
]  # fmt: skip


def _keel_run(settings: Settings, seed: int, scenario: Scenario) -> dict[str, int]:
    tuned = settings.model_copy(update={"fault_seed": seed})
    # Runs share the home, and its breakers are shared: each run is its own trial, as its fresh
    # backend file is, so its breakers start closed (an outage run's open billing breaker would
    # otherwise send the next profile's billing reads to the legacy endpoint).
    SqliteBreakerStore(tuned.breaker_db).reset()
    try:
        with KeelApp.open(tuned, KeelContext.from_settings(tuned)) as app:
            outcome = app.run(scenario.request)
            if outcome.status == "awaiting_approval":
                outcome = app.resume(outcome.thread_id, Decision(kind="approve", reviewer="eval"))
    except KeelError:  # a run Keel did not handle: a bug, counted and reported, not hidden
        verdict = scenario.judge(DemoBackend(settings.domain_db))
        return verdict | {"escalated": 0, "crashed": 1, "shape_changes_detected": 0,
                          "shape_changes_consumed": 0}  # fmt: skip
    verdict = scenario.judge(DemoBackend(settings.domain_db))
    verdict["crashed"] = 0
    verdict["escalated"] = int(outcome.status == "escalated")
    reason = outcome.escalation.reason if outcome.escalation else ""
    verdict["shape_changes_detected"] = int("unexpected shape" in reason)
    verdict["shape_changes_consumed"] = 0  # a changed shape never passes the output model
    return verdict


def baseline_tools(
    backend: DemoBackend,
    injector: FaultInjector,
    consumed: dict[str, int],
    made: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[Any]:
    """The demo's tools as plain LangChain tools, faults injected, for the baselines.

    Each call the agent really makes is appended to ``made`` (name, arguments).
    """

    class Call:  # what the fault layer wraps: an object with .args
        def __init__(self, **args: Any) -> None:
            self.kwargs = args
            self.args = type("Args", (), args)

    charges = injector.wrap("billing", TIMEOUT_S, lambda c: backend.list_charges(c.args.invoice_id))
    refund = injector.wrap(
        "billing", TIMEOUT_S,
        # A plain integration sends no idempotency key of its own: a fresh one per call.
        lambda c: backend.refund_charge(c.args.charge_id, c.args.amount, c.args.reason,
                                        f"plain-{uuid.uuid4()}"),
    )  # fmt: skip
    email = injector.wrap(
        "email", TIMEOUT_S,
        lambda c: backend.send_email(
            c.args.to, c.args.subject, c.args.body, f"plain-{uuid.uuid4()}"
        ),
    )  # fmt: skip

    def answer(name: str, func: Any, call: Any) -> str:
        if made is not None:
            made.append((name, dict(call.kwargs)))
        # The same client timeout Keel uses: a careful integration does not wait forever.
        output = dict(with_timeout(lambda: func(call), TIMEOUT_S))
        if any(key.endswith("_v2") for key in output):
            consumed["shape_changed"] += 1  # a changed shape, handed to the model as data
        return json.dumps(output)

    @tool
    def list_charges(invoice_id: str) -> str:
        """List the card charges of an invoice."""
        return answer("list_charges", charges, Call(invoice_id=invoice_id))

    @tool
    def refund_charge(charge_id: str, amount: float, reason: str) -> str:
        """Refund money on a card charge."""
        return answer(
            "refund_charge", refund, Call(charge_id=charge_id, amount=amount, reason=reason)
        )

    @tool
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an e-mail to a customer."""
        return answer("send_email", email, Call(to=to, subject=subject, body=body))

    customer = injector.wrap("crm", TIMEOUT_S, lambda c: backend.get_customer(c.args.customer_id))
    billing_email = injector.wrap(
        "crm", TIMEOUT_S,
        lambda c: backend.update_billing_email(c.args.customer_id, c.args.email),
    )  # fmt: skip
    ticket = injector.wrap("tickets", TIMEOUT_S, lambda c: backend.get_ticket(c.args.ticket_id))
    close = injector.wrap(
        "tickets", TIMEOUT_S, lambda c: backend.close_ticket(c.args.ticket_id, c.args.resolution)
    )

    @tool
    def get_customer(customer_id: str) -> str:
        """Read a customer's name and e-mail addresses."""
        return answer("get_customer", customer, Call(customer_id=customer_id))

    @tool
    def update_billing_email(customer_id: str, email: str) -> str:
        """Change the e-mail address invoices are sent to."""
        return answer(
            "update_billing_email", billing_email, Call(customer_id=customer_id, email=email)
        )

    @tool
    def get_ticket(ticket_id: str) -> str:
        """Read a support ticket."""
        return answer("get_ticket", ticket, Call(ticket_id=ticket_id))

    @tool
    def close_ticket(ticket_id: str, resolution: str) -> str:
        """Close a support ticket with a resolution note."""
        return answer("close_ticket", close, Call(ticket_id=ticket_id, resolution=resolution))

    return [list_charges, refund_charge, send_email, get_customer, update_billing_email,
            get_ticket, close_ticket]  # fmt: skip


def scripted_calls(calls: list[tuple[str, dict[str, Any]]]) -> list[BaseMessage]:
    """A tool-calling model's answers: one call per turn, then "Done."."""
    script: list[BaseMessage] = [
        AIMessage(content="", tool_calls=[{"name": n, "args": a, "id": f"call-{i}"}])
        for i, (n, a) in enumerate(calls)
    ]
    script.append(AIMessage(content="Done."))
    return script


def _baseline_run(
    settings: Settings, profile: FaultProfile, seed: int, careful: bool, scenario: Scenario
) -> dict[str, int]:
    backend = DemoBackend(settings.domain_db)
    consumed = {"shape_changed": 0}
    middleware: list[Any] = []
    if careful:
        middleware = [
            ModelRetryMiddleware(max_retries=2, initial_delay=0.01),
            ToolErrorMiddleware(on_error=lambda error, request: f"Tool failed: {error}"),
            ToolRetryMiddleware(max_retries=2, initial_delay=0.01, max_delay=0.05),
            ToolCallLimitMiddleware(run_limit=6),
            HumanInTheLoopMiddleware(interrupt_on={"refund_charge": True, "send_email": True}),
        ]
    agent = create_agent(
        ScriptedToolModel(responses=scripted_calls(scenario.calls)),
        tools=baseline_tools(backend, FaultInjector(profile, seed), consumed),
        middleware=middleware,
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": str(seed)}, "recursion_limit": 50}
    try:
        agent.invoke({"messages": [HumanMessage(scenario.request)]}, config)
        for _ in range(5):  # approve what the human-in-the-loop middleware asks for
            pending = agent.get_state(config).interrupts
            if not pending:
                break
            count = len(pending[0].value["action_requests"])
            agent.invoke(Command(resume={"decisions": [{"type": "approve"}] * count}), config)
    except Exception:  # a baseline that crashes on a fault simply ends there
        pass
    verdict = scenario.judge(backend)
    verdict["escalated"] = 0  # neither baseline has a way to hand a thread to a human
    verdict["crashed"] = 0  # a baseline that raised already ended its run above
    verdict["shape_changes_consumed"] = consumed["shape_changed"]
    verdict["shape_changes_detected"] = 0
    return verdict


def run_faults_eval(
    settings: Settings, *, runs: int = 200, progress: bool = False
) -> dict[str, Any]:
    # Keel's runs retrieve: on a home never indexed, every one of them would stop at the first
    # node with CorpusMissing and count as a crash.
    CorpusStore(settings, embedder_for(settings)).ingest(progress=progress)
    domain = SupportDesk()
    out: dict[str, Any] = {"keel": {}, "plain": {}, "middleware": {}}
    with tempfile.TemporaryDirectory(prefix="keel-faults-") as tmp:
        _run_profiles(settings, runs, progress, domain, out, Path(tmp))
    if progress:
        print(file=sys.stderr)
    return out


def _run_profiles(
    settings: Settings, runs: int, progress: bool, domain: SupportDesk, out: dict[str, Any],
    scratch: Path,
) -> None:  # fmt: skip
    for name, profile in EVAL_PROFILES.items():
        faulty = settings.model_copy(
            update={"faults": profile.model_dump_json(), "tool_timeout_s": TIMEOUT_S}
        )
        keys = ("success", "wrong", "duplicate", "escalated", "shape_changes_detected",
                "shape_changes_consumed", "crashed")  # fmt: skip
        totals = {agent: dict.fromkeys(keys, 0) for agent in out}
        by_request = {agent: {s.name: [0, 0] for s in SCENARIOS} for agent in out}
        for run in range(runs):
            scenario = SCENARIOS[run % len(SCENARIOS)]
            for agent in out:
                # A fresh backend file per run: a call that timed out may still land late, and
                # must land in its own run's books, not the next one's.
                db = scratch / f"{name}-{agent}-{run}.sqlite"
                own = settings.model_copy(update={"domain_backend": db})
                domain.prepare(own, reset=True)
                if agent == "keel":
                    verdict = _keel_run(
                        faulty.model_copy(update={"domain_backend": db}), run, scenario
                    )
                else:
                    verdict = _baseline_run(
                        own, profile, run, careful=agent == "middleware", scenario=scenario
                    )
                if profile.timeout_rate:
                    # Let calls that timed out but were still under way land, then judge again.
                    time.sleep(TIMEOUT_S * 2)
                    verdict.update(scenario.judge(DemoBackend(db)))
                for key, value in verdict.items():
                    totals[agent][key] += value
                by_request[agent][scenario.name][0] += 1
                by_request[agent][scenario.name][1] += verdict["success"]
            if progress:
                print(f"\rfaults eval: {name} {run + 1}/{runs}", end="", file=sys.stderr)
        for agent, t in totals.items():
            out[agent][name] = {
                "runs": runs,
                "success_rate": round(t["success"] / runs, 4),
                "wrong_irreversible": t["wrong"],
                "duplicate_irreversible": t["duplicate"],
                "escalated": t["escalated"],
                "shape_changes_detected": t["shape_changes_detected"],
                "shape_changes_consumed": t["shape_changes_consumed"],
                "crashed": t["crashed"],
                "by_request": {
                    request: {"runs": n, "succeeded": ok}
                    for request, (n, ok) in by_request[agent].items()
                },
            }
