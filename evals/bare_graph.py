"""The engine bench's floor: a hand-built LangGraph graph of the same shape as Keel's refund thread.

``intake -> plan -> approve (interrupt) -> execute -> respond``: it reads the request's ids, looks
the charges up in the demo backend, asks for an approval with ``interrupt()``, then makes the same
two idempotent SQLite writes as Keel's executor (a refund and an e-mail, each keyed by the thread)
and answers. No retrieval, validation, ledger, gate, receipts or budgets: what a user would write
by hand. ``evals/bench_engine.json`` serves it beside Keel's graph on the same engine
(``keel bench --only engine``). Measurement only: nothing Keel serves imports it.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Literal, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from domains.support_desk.backend import DemoBackend
from keel.settings import Settings

_IDS = re.compile(r"\b(C-\d+)\b.*\b(INV-\d+)\b")


class BareState(TypedDict, total=False):
    request: str
    customer_id: str
    invoice_id: str
    action: dict[str, Any]
    decision: str
    results: list[dict[str, Any]]
    answer: str


@cache
def _backend() -> DemoBackend:
    """The demo backend Keel's workers use (the same ``KEEL_HOME``), opened once per process."""
    return DemoBackend(Settings().domain_db)


def intake(state: BareState) -> dict[str, Any]:
    found = _IDS.search(state.get("request", ""))
    if found is None:
        return {"answer": "no customer and invoice in the request"}
    return {"customer_id": found.group(1), "invoice_id": found.group(2)}


def after_intake(state: BareState) -> Literal["plan", "respond"]:
    return "plan" if state.get("invoice_id") else "respond"


def plan(state: BareState) -> dict[str, Any]:
    backend = _backend()
    charges = backend.list_charges(state["invoice_id"])["charges"]
    customer = backend.get_customer(state["customer_id"])
    duplicate = charges[-1]
    return {
        "action": {
            "charge_id": duplicate["charge_id"],
            "amount": duplicate["amount"],
            "email": customer["billing_email"],
        }
    }


def approve(state: BareState) -> dict[str, Any]:
    answer = interrupt({"action": state["action"]})
    return {"decision": str(answer.get("decision", "reject"))}


def execute(state: BareState, config: RunnableConfig) -> dict[str, Any]:
    if state.get("decision") != "approve":
        return {"results": []}
    thread = str(config["configurable"]["thread_id"])
    action, backend = state["action"], _backend()
    refund = backend.refund_charge(
        action["charge_id"], action["amount"], "duplicate charge", f"bare-{thread}-refund"
    )
    email = backend.send_email(
        action["email"],
        "Your refund",
        f"We refunded {action['amount']:.2f} for invoice {state['invoice_id']}.",
        f"bare-{thread}-email",
    )
    return {"results": [refund, email]}


def respond(state: BareState) -> dict[str, Any]:
    if state.get("answer"):
        return {}
    done = len(state.get("results", []))
    return {"answer": f"done: {done} action(s) for {state.get('customer_id', '?')}"}


def build_bare_graph() -> Any:
    builder = StateGraph(BareState)
    builder.add_node("intake", intake)
    builder.add_node("plan", plan)
    builder.add_node("approve", approve)
    builder.add_node("execute", execute)
    builder.add_node("respond", respond)
    builder.add_edge(START, "intake")
    builder.add_conditional_edges("intake", after_intake)
    builder.add_edge("plan", "approve")
    builder.add_edge("approve", "execute")
    builder.add_edge("execute", "respond")
    builder.add_edge("respond", END)
    return builder.compile(name="bare")


graph = build_bare_graph()
"""What ``evals/bench_engine.json`` serves as ``bare``."""
