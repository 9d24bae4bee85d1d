"""Context growth over a 50-step scripted workflow: Keel against create_agent, with and without
LangChain's SummarizationMiddleware and ContextEditingMiddleware.

The workflow: refund a charge (step 1), read 48 invoices with verbose notes (steps 2-49), then
e-mail the customer quoting the refund id from step 1 (step 50). Every agent gets the same
scripted model decisions and the same tool outputs; what differs is what each shows its model.
Keel's side is the product's own planner node (``agents.planner.plan``) planning the thread again
after each finished step, as it does on a replan: its working memory is built by the node from
the thread's results, and the prompt counted is what the node sent its model, with the
``submit_plan`` tool schema (the baselines' tool schemas are counted the same way). The model
is a scripted fake (``evals.scripted.ScriptedToolModel``), said so here.
"""

from __future__ import annotations

import json
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import (
    ClearToolUsesEdit,
    ContextEditingMiddleware,
    SummarizationMiddleware,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.runtime import Runtime

from agents.planner import SUBMIT_PLAN, plan
from evals.scripted import ExtractiveSummarizer, ScriptedToolModel
from graph.context import KeelContext
from graph.state import Evidence, PlannerView, ToolOutcome
from keel.settings import Settings

STEPS = 50
REQUEST = (
    "Refund the duplicate charge CH-3002 of customer C-1001, check invoices INV-4001 to "
    "INV-4048 for the same problem, then e-mail the customer the refund reference."
)
REFUND_ID = "RF-5001"
NOTE = (
    "Payment received by card. The customer asked for a copy of the invoice in PDF and for the "
    "VAT number to be printed on it. Support confirmed the billing address and the plan tier. "
) * 3


def _invoice(n: int) -> dict[str, Any]:
    return {"invoice_id": f"INV-{4000 + n}", "customer_id": "C-1001", "amount": 49.0 + n,
            "currency": "EUR", "status": "paid", "notes": NOTE}  # fmt: skip


def _outputs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(tool, args, output) for each of the 50 steps."""
    steps: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("refund_charge", {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate"},
         {"refund_id": REFUND_ID, "charge_id": "CH-3002", "amount": 49.0, "status": "settled"}),
    ]  # fmt: skip
    steps += [("get_invoice", {"invoice_id": f"INV-{4000 + n}"}, _invoice(n)) for n in range(1, 49)]
    steps.append(
        ("send_email", {"to": "ada@example.com", "subject": "Refund", "body": f"Ref {REFUND_ID}"},
         {"message_id": "MSG-7001", "to": "ada@example.com", "status": "queued"})
    )  # fmt: skip
    return steps


def _keel(settings: Settings, evidence: list[Evidence]) -> dict[str, Any]:
    answer = {"intent": "noted", "steps": [], "answer": "noted"}
    model = ScriptedToolModel(
        responses=[
            AIMessage("", tool_calls=[{"name": SUBMIT_PLAN, "args": answer, "id": f"plan-{i}"}])
            for i in range(STEPS)
        ]
    )
    runtime = Runtime(context=KeelContext.from_settings(settings, planner_model=model))
    results: list[ToolOutcome] = []
    for i, (name, args, output) in enumerate(_outputs()):
        state: PlannerView = {"request": REQUEST, "entities": {"customer_id": "C-1001"},
                              "evidence": evidence, "results": results}  # fmt: skip
        planned = plan(state, runtime)
        assert planned["planner"].startswith("model:"), planned  # the model path, not the runbook
        results = [*results, ToolOutcome(step=i, tool=name, args=args, ok=True, output=output)]
    return _summary(model.seen_tokens, REFUND_ID in model.seen_text[-1])


def _agent(middleware: list[Any]) -> dict[str, Any]:
    outputs = _outputs()
    by_call = {f"call-{i}": out for i, (_, _, out) in enumerate(outputs)}

    @tool
    def refund_charge(charge_id: str, amount: float, reason: str) -> str:
        """Refund money on a card charge."""
        return json.dumps(by_call["call-0"])

    counter = {"n": 0}

    @tool
    def get_invoice(invoice_id: str) -> str:
        """Read an invoice."""
        counter["n"] += 1
        return json.dumps(_invoice(counter["n"]))

    @tool
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an e-mail to a customer."""
        return json.dumps(by_call[f"call-{STEPS - 1}"])

    script: list[BaseMessage] = [
        AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{i}"}])
        for i, (name, args, _) in enumerate(outputs)
    ]
    script.append(AIMessage(content="Done."))
    model = ScriptedToolModel(responses=script)
    agent = create_agent(
        model, tools=[refund_charge, get_invoice, send_email], middleware=middleware,
        system_prompt="You are a customer-operations agent. Use the tools.",
    )  # fmt: skip
    agent.invoke({"messages": [HumanMessage(REQUEST)]}, {"recursion_limit": 4 * STEPS + 10})
    calls = model.seen_tokens[:STEPS]
    return _summary(calls, REFUND_ID in model.seen_text[STEPS - 1])


def _summary(per_call: list[int], has_fact: bool) -> dict[str, Any]:
    return {
        "prompt_tokens": per_call,
        "step1": per_call[0],
        "step50": per_call[-1],
        "total": sum(per_call),
        "last_step_had_refund_id": has_fact,
    }


def bench_context(settings: Settings, evidence: list[Evidence]) -> dict[str, Any]:
    """Run the workflow through all three and compare their prompts (the domain's backend must be
    prepared: Keel's planner node reads the customer's record, as it does in a run)."""
    keel = _keel(settings, evidence)
    plain = _agent([])
    middleware = _agent(
        [
            SummarizationMiddleware(
                ExtractiveSummarizer(), trigger=("tokens", 3000), keep=("messages", 6)
            ),
            ContextEditingMiddleware(edits=[ClearToolUsesEdit(trigger=3000, keep=3)]),
        ]
    )
    return {
        "steps": STEPS,
        "step50_over_step1": round(keel["step50"] / keel["step1"], 3),
        "total_tokens_plain_over_keel": round(plain["total"] / keel["total"], 3),
        "total_tokens_middleware_over_keel": round(middleware["total"] / keel["total"], 3),
        "keel": keel,
        "plain": plain,
        "middleware": middleware,
    }
