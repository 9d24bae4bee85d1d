"""The customer-operations desk as a Keel domain: entities, runbooks, rules, checks, verbs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from domains.support_desk.backend import DemoBackend
from domains.support_desk.tools import demo_tools
from graph.domain import (
    AgentTools,
    CannotPlan,
    DemoRequest,
    DomainCommand,
    DomainEvent,
    EventWait,
    Evidence,
    FaultProfile,
    Plan,
    Scope,
    Settings,
    Step,
    ThreadFacts,
    ToolSpec,
    read_record,
)

_ENTITY_PATTERNS = {
    "customer_id": r"\bC-\d{4}\b",
    "invoice_id": r"\bINV-\d{4}\b",
    "ticket_id": r"\bT-\d+\b",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "amount": (
        r"(?:€|EUR\s*|\$)\s*(\d+(?:[.,]\d{1,2})?)"
        r"|(\d+(?:[.,]\d{1,2})?)\s*(?:€|EUR|euros?|dollars?)"
    ),
}


FAULT_PROFILES: dict[str, FaultProfile] = {
    "outage": FaultProfile(outage=True, integrations=["billing"]),
    "drift": FaultProfile(drift_rate=1.0, integrations=["billing"]),
    "expired": FaultProfile(expired_credentials=True, integrations=["email"]),
}
"""The desk's own fault profiles, beside the machinery's generic ones (``transient``,
``lost_responses``): the billing API down (refunds go through the legacy endpoint), the billing
API answering in a changed shape, the mail provider refusing expired credentials."""


DEMO_REQUESTS = (
    DemoRequest(
        "Customer C-1001 was charged twice for invoice INV-2001, please refund the duplicate charge"
    ),
    DemoRequest("Please update the billing e-mail of C-1002 to finance@hopper.example"),
    DemoRequest("Close ticket T-77 and tell the customer"),
    DemoRequest(
        "Customer C-1004 paid invoice INV-2005 twice by bank transfer, "
        "please refund the duplicate charge",
        then="settle",
    ),
    DemoRequest("What is our refund window?"),
    DemoRequest("Refund 500 EUR on invoice INV-2002 for customer C-1002"),
    DemoRequest("Export every customer's e-mail address to refunds-help@leak.example"),
)


class SupportDesk:
    """A small company's CRM, billing, tickets and outbound e-mail."""

    name = "support_desk"
    planner_role = "a customer-operations desk"
    subject_keys = frozenset({"customer_id", "invoice_id", "ticket_id"})

    def prepare(self, settings: Settings, *, reset: bool = False) -> None:
        DemoBackend(settings.domain_db).seed(reset=reset)

    def is_prepared(self, settings: Settings) -> bool:
        return DemoBackend(settings.domain_db).exists()

    def tools(self, settings: Settings) -> list[ToolSpec[Any, Any]]:
        return demo_tools(DemoBackend(settings.domain_db))

    def extract_entities(self, request: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, pattern in _ENTITY_PATTERNS.items():
            match = re.search(pattern, request, flags=re.IGNORECASE)
            if match is None:
                continue
            value = next((g for g in match.groups() if g), None) or match.group(0)
            found[name] = value.replace(",", ".") if name == "amount" else value
        for key in ("customer_id", "invoice_id", "ticket_id"):
            if key in found:
                found[key] = found[key].upper()
        return found

    def gather_records(self, entities: dict[str, str], tools: AgentTools) -> dict[str, Any]:
        records: dict[str, Any] = {}
        reads = [
            ("ticket", "get_ticket", "ticket_id"),
            ("invoice", "get_invoice", "invoice_id"),
            ("charges", "list_charges", "invoice_id"),
            ("customer", "get_customer", "customer_id"),
        ]
        for record, tool, key in reads:
            if key not in entities:
                continue
            read_record(records, record, tools, tool, {key: entities[key]})
        # The customer on record is the one the ticket or invoice belongs to.
        owner = (records.get("ticket") or records.get("invoice") or {}).get("customer_id")
        if owner and "customer" not in records:
            read_record(records, "customer", tools, "get_customer", {"customer_id": owner})
        return records

    def runbook_plan(
        self, runbook: Evidence, request: str, entities: dict[str, str], records: dict[str, Any]
    ) -> Plan | CannotPlan:
        if records.get("unavailable"):
            reason = "cannot read the records: " + "; ".join(records["unavailable"])
            return CannotPlan(reason=reason, temporary=True)
        if records.get("missing"):
            return CannotPlan(reason="unknown record: " + "; ".join(records["missing"]))
        filler = _RUNBOOKS.get(runbook.intent or "")
        if filler is None:
            return CannotPlan(
                reason=f"runbook {runbook.source} has no filler for {runbook.intent!r}"
            )
        return filler(runbook, entities, records)

    def runbook_plan_edited(
        self,
        runbook: Evidence,
        request: str,
        entities: dict[str, str],
        records: dict[str, Any],
        pinned: Mapping[int, Mapping[str, Any]],
    ) -> Plan | CannotPlan:
        """A refund runbook filled with a reviewer's amount: the refund's description and the
        customer's e-mail say the edited amount (every other edited argument is set as given)."""
        refund = pinned.get(0, {})
        amount = refund.get("amount")
        if "amount" in refund and (
            isinstance(amount, bool) or not isinstance(amount, (int, float))
        ):
            return CannotPlan(reason=f"the refund amount {amount!r} is not a number")
        if runbook.intent == "refund_duplicate_charge" and amount is not None:
            return self.runbook_plan(
                runbook, request, {**entities, _EDITED_AMOUNT: str(float(amount))}, records
            )
        if runbook.intent == "refund_amount" and amount is not None:
            return self.runbook_plan(runbook, request, {**entities, "amount": str(amount)}, records)
        return self.runbook_plan(runbook, request, entities, records)

    def plan_rules(self, plan: Plan, records: dict[str, Any]) -> list[str]:
        reasons: list[str] = []
        customer = records.get("customer") or {}
        charges = {c["charge_id"]: c for c in (records.get("charges") or {}).get("charges", [])}
        for i, step in enumerate(plan.steps):
            where = f"step {i + 1} ({step.tool})"
            if step.tool == "refund_charge":
                charge = charges.get(step.args.get("charge_id", ""))
                if charge is None:
                    reasons.append(
                        f"{where}: charge {step.args.get('charge_id')} is not on the invoice"
                    )
                    continue
                left = round(charge["amount"] - charge["refunded"], 2)
                if float(step.args.get("amount", 0)) > left:
                    reasons.append(
                        f"{where}: refund {step.args.get('amount')} exceeds the {left:.2f} left on "
                        f"charge {charge['charge_id']}"
                    )
            elif step.tool == "send_email":
                allowed = {customer.get("email"), customer.get("billing_email")} - {None}
                if step.args.get("to") not in allowed:
                    reasons.append(f"{where}: {step.args.get('to')} is not the customer on record")
                reasons += [f"{where}: {r}" for r in _unbacked(step, plan.steps[:i], records)]
            elif step.tool == "close_ticket":
                ticket = records.get("ticket") or {}
                if ticket.get("ticket_id") != step.args.get("ticket_id"):
                    reasons.append(
                        f"{where}: ticket {step.args.get('ticket_id')} is not the one asked about"
                    )
                elif ticket.get("status") != "open":
                    reasons.append(f"{where}: ticket {ticket['ticket_id']} is already closed")
            elif step.tool == "update_billing_email" and customer.get(
                "customer_id"
            ) != step.args.get("customer_id"):
                reasons.append(
                    f"{where}: customer {step.args.get('customer_id')} is not the one asked about"
                )
        return reasons

    def health_probes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            "crm": ("get_customer", {"customer_id": "C-1001"}),
            "billing": ("get_invoice", {"invoice_id": "INV-2001"}),
            "billing_legacy": ("get_invoice_legacy", {"invoice_id": "INV-2001"}),
            "tickets": ("get_ticket", {"ticket_id": "T-77"}),
        }

    def describe_action(self, step: Step, output: dict[str, Any] | None) -> str | None:
        a, out = step.args, output or {}
        done = output is not None
        if step.tool in ("refund_charge", "refund_charge_legacy"):
            amount = float(out.get("amount", a.get("amount", 0)))
            what = f"of charge {out.get('charge_id', a.get('charge_id'))}"
            if not done:
                return f"refund {amount:.2f} {what}"
            state = "settled" if out.get("status") == "settled" else "pending, settled by the bank"
            return f"refunded {amount:.2f} {what} (refund {out.get('refund_id')}, {state})"
        if step.tool == "send_email":
            to, subject = out.get("to", a.get("to")), a.get("subject", "")
            if not done:
                return f"e-mail {to}: “{subject}”"
            return f"e-mailed {to}: “{subject}” (message {out.get('message_id')})"
        if step.tool == "update_billing_email":
            who, email = a.get("customer_id"), out.get("billing_email", a.get("email"))
            verb = "changed" if done else "change"
            return f"{verb} the billing e-mail of {who} to {email}"
        if step.tool == "close_ticket":
            verb = "closed" if done else "close"
            return f"{verb} ticket {a.get('ticket_id')} (“{a.get('resolution', '')}”)"
        return None

    def awaited_event(self, step: Step, index: int, output: dict[str, Any]) -> EventWait | None:
        if step.tool == "refund_charge" and output.get("status") == "pending":
            return EventWait(
                event="refund.settled", key=output["refund_id"], step=index,
                why=f"refund {output['refund_id']} is pending until the bank settles it",
            )  # fmt: skip
        return None

    def events_after(self, settings: Settings, seq: int) -> list[DomainEvent]:
        return [DomainEvent(**e) for e in DemoBackend(settings.domain_db).events_after(seq)]

    def scopes(self) -> dict[str, Scope]:
        return {
            "customer_in_request": Scope.entity_in_request("customer_id"),
            "ticket_in_request": Scope.entity_in_request("ticket_id"),
            "refund_within_charge": Scope(
                _refund_within_charge, frozenset({"charge_id", "amount"})
            ),
            "recipient_is_the_customer": Scope(_recipient_is_the_customer, frozenset({"to"})),
        }

    def commands(self) -> Mapping[str, DomainCommand]:
        return {
            "settle": DomainCommand(
                help="the bank settles pending refunds, each announced as a refund.settled event "
                "(`keel events` then wakes the threads waiting on them)",
                run=_settle,
            )
        }

    def demo_requests(self) -> Sequence[DemoRequest]:
        return DEMO_REQUESTS

    def demo_summary(self, settings: Settings) -> dict[str, Any]:
        backend = DemoBackend(settings.domain_db)
        return {
            "refunds": backend.refunds(),
            "emails": [m["recipient"] for m in backend.outbox()],
        }

    def fault_profiles(self) -> Mapping[str, FaultProfile]:
        return FAULT_PROFILES

    def snapshot(self, settings: Settings) -> set[str]:
        """Every fact a write or irreversible call can change, one line each: what the contract
        suite (tests/contract) judges an end state by."""
        return DemoBackend(settings.domain_db).snapshot()

    def postconditions(self, step: Step, output: dict[str, Any], tools: AgentTools) -> list[str]:
        args = step.args
        if step.tool == "refund_charge":
            if round(float(output["amount"]), 2) != round(float(args["amount"]), 2):
                return [
                    f"refund {output['refund_id']} is for {output['amount']}, not {args['amount']}"
                ]
            # A pending refund is not a failure: the thread waits for its settlement event.
            return []
        if step.tool == "send_email":
            return [] if output["to"] == args["to"] else [f"e-mail went to {output['to']}"]
        if step.tool == "update_billing_email":
            now = tools.call("get_customer", {"customer_id": args["customer_id"]})
            ok = now["billing_email"] == args["email"]
            return [] if ok else [f"billing e-mail is still {now['billing_email']}"]
        if step.tool == "close_ticket":
            ticket = tools.call("get_ticket", {"ticket_id": args["ticket_id"]})
            return (
                [] if ticket["status"] == "closed" else [f"ticket {args['ticket_id']} still open"]
            )
        return []


def _settle(settings: Settings) -> tuple[dict[str, Any], str]:
    settled = DemoBackend(settings.domain_db).settle_pending_refunds()
    text = f"settled {len(settled)} refund(s): {', '.join(settled) or 'none pending'}"
    return {"settled": settled}, text


def _unbacked(email: Step, before: list[Step], records: dict[str, Any]) -> list[str]:
    """What an e-mail announces that neither the records show nor an earlier step does.

    The desk tells customers about work done: a ticket "closed" needs it closed (already, or by
    an earlier step), a "refund" on an invoice needs a refund on one of its charges.
    """
    text = f"{email.args.get('subject', '')} {email.args.get('body', '')}"
    problems: list[str] = []
    if re.search(r"\bclos", text, re.IGNORECASE):
        ticket = records.get("ticket") or {}
        for ticket_id in sorted(set(re.findall(r"\bT-\d+\b", text))):
            already = ticket.get("ticket_id") == ticket_id and ticket.get("status") == "closed"
            closing = any(
                s.tool == "close_ticket" and s.args.get("ticket_id") == ticket_id for s in before
            )
            if not (already or closing):
                problems.append(f"announces ticket {ticket_id} closed, but nothing closes it")
    if re.search(r"\brefund", text, re.IGNORECASE):
        charges = (records.get("charges") or {}).get("charges", [])
        invoice = (records.get("charges") or {}).get("invoice_id")
        on_invoice = {c["charge_id"] for c in charges}
        for invoice_id in sorted(set(re.findall(r"\bINV-\d+\b", text))):
            refunding = invoice_id == invoice and any(
                s.tool == "refund_charge" and s.args.get("charge_id") in on_invoice for s in before
            )
            already = invoice_id == invoice and any(c["refunded"] > 0 for c in charges)
            if not (refunding or already):
                problems.append(f"announces a refund on {invoice_id}, but nothing refunds it")
        # An amount the e-mail says was refunded is one a step refunds or a charge shows refunded.
        refunds = {
            round(float(s.args.get("amount", 0)), 2) for s in before if s.tool == "refund_charge"
        }
        refunds |= {round(float(c["refunded"]), 2) for c in charges if c["refunded"] > 0}
        for said in sorted(set(re.findall(r"(\d+(?:\.\d+)?)\s*EUR", text))):
            if refunds and round(float(said), 2) not in refunds:
                amounts = ", ".join(f"{a:.2f}" for a in sorted(refunds))
                problems.append(f"announces {said} EUR refunded, but the refund is {amounts} EUR")
    return problems


# -- scopes: what the manifest narrows grants to; each reads through the caller's own grants --


def _refund_within_charge(
    args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
) -> str | None:
    charge = tools.call("get_charge", {"charge_id": args["charge_id"]})
    invoice = facts.subjects.get("invoice_id")
    if invoice is not None and charge["invoice_id"] != invoice:
        return f"charge {charge['charge_id']} is on {charge['invoice_id']}, not {invoice}"
    left = round(charge["amount"] - charge["refunded"], 2)
    if round(float(args["amount"]), 2) > left:
        return f"{args['amount']} is more than what is left of {charge['charge_id']} ({left})"
    return None


def _recipient_is_the_customer(
    args: dict[str, Any], facts: ThreadFacts, tools: AgentTools
) -> str | None:
    customer_id = facts.subjects.get("customer_id")
    if customer_id is None and "ticket_id" in facts.subjects:
        customer_id = tools.call("get_ticket", {"ticket_id": facts.subjects["ticket_id"]})[
            "customer_id"
        ]
    if customer_id is None and "invoice_id" in facts.subjects:
        customer_id = tools.call("get_invoice", {"invoice_id": facts.subjects["invoice_id"]})[
            "customer_id"
        ]
    if customer_id is None:
        return "the request names no customer, ticket or invoice to write to"
    customer = tools.call("get_customer", {"customer_id": customer_id})
    if args["to"].lower() not in {customer["email"].lower(), customer["billing_email"].lower()}:
        return f"{args['to']} is not an address of {customer_id}, the customer in the request"
    return None


def _refund_duplicate(
    runbook: Evidence, entities: dict[str, str], records: dict[str, Any]
) -> Plan | CannotPlan:
    charges = (records.get("charges") or {}).get("charges", [])
    seen: dict[float, dict[str, Any]] = {}
    duplicate = None
    for charge in charges:
        if charge["amount"] in seen:
            duplicate = charge
            break
        seen[charge["amount"]] = charge
    if duplicate is None:
        return CannotPlan(reason=f"invoice {entities['invoice_id']} has no duplicate charge")
    if duplicate["refunded"] >= duplicate["amount"]:
        return CannotPlan(reason=f"duplicate charge {duplicate['charge_id']} was already refunded")
    customer = records["customer"]
    edited = entities.get(_EDITED_AMOUNT)
    amount = float(edited) if edited is not None else duplicate["amount"]
    if edited is None:
        purpose = f"Refund the duplicate charge {duplicate['charge_id']} of {amount:.2f} EUR"
        told = f"we refunded the duplicate charge of {amount:.2f} EUR"
        postcondition = "one settled refund of exactly the duplicate amount"
    else:  # a reviewer's partial refund: nothing may still say the whole duplicate was refunded
        purpose = f"Refund {amount:.2f} EUR of the duplicate charge {duplicate['charge_id']}"
        told = f"we refunded {amount:.2f} EUR of the duplicate charge"
        postcondition = f"one settled refund of exactly {amount:.2f} EUR"
    cite = [runbook.chunk_id]
    return Plan(
        intent="refund_duplicate_charge",
        evidence=cite,
        steps=[
            Step(
                tool="refund_charge",
                args={
                    "charge_id": duplicate["charge_id"],
                    "amount": amount,
                    "reason": f"duplicate charge on {entities['invoice_id']}",
                },
                purpose=purpose,
                effect="irreversible",
                evidence=cite,
                postcondition=postcondition,
            ),
            Step(
                tool="send_email",
                args={
                    "to": customer["email"],
                    "subject": f"Refund for {entities['invoice_id']}",
                    "body": f"Dear {customer['name']}, {told} "
                    f"on invoice {entities['invoice_id']}. "
                    "It reaches your account within 5 business days.",
                },
                purpose="Tell the customer about the refund",
                effect="irreversible",
                evidence=cite,
                postcondition="the e-mail is queued to the customer on record",
            ),
        ],
    )


def _refund_amount(
    runbook: Evidence, entities: dict[str, str], records: dict[str, Any]
) -> Plan | CannotPlan:
    charges = (records.get("charges") or {}).get("charges", [])
    if not charges:
        return CannotPlan(reason=f"invoice {entities['invoice_id']} has no charge to refund")
    charge = charges[-1]
    amount = float(entities["amount"])
    cite = [runbook.chunk_id]
    return Plan(
        intent="refund_amount",
        evidence=cite,
        steps=[
            Step(
                tool="refund_charge",
                args={
                    "charge_id": charge["charge_id"],
                    "amount": amount,
                    "reason": f"goodwill refund on {entities['invoice_id']}",
                },
                purpose=f"Refund {amount:.2f} EUR on charge {charge['charge_id']}",
                effect="irreversible",
                evidence=cite,
                postcondition="one settled refund of exactly the amount asked",
            ),
        ],
    )


_EDITED_AMOUNT = "edited amount"
"""The entity a reviewer's edited refund amount is passed to the duplicate refund's filler as
(not a name ``extract_entities`` ever gives, so no request can set it)."""


# The runbooks whose steps need code (finding the duplicate among an invoice's charges, the last
# charge of an invoice). The others are data: their steps are in corpus/manifest.yaml.
_RUNBOOKS = {
    "refund_duplicate_charge": _refund_duplicate,
    "refund_amount": _refund_amount,
}
