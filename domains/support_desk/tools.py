"""The demo domain's tools: typed contracts over the demo backend, declared for Keel to wrap."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domains.support_desk.backend import DemoBackend
from graph.domain import OUTSIDE_TEXT, ToolCall, ToolSpec

CUSTOMER_ID = r"^C-\d{4}$"
INVOICE_ID = r"^INV-\d{4}$"
CHARGE_ID = r"^CH-\d{4}$"
TICKET_ID = r"^T-\d+$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    """Responses may grow fields (that is not drift); a missing or retyped one is."""

    model_config = ConfigDict(extra="ignore")


class CustomerRef(Args):
    customer_id: str = Field(pattern=CUSTOMER_ID)


class InvoiceRef(Args):
    invoice_id: str = Field(pattern=INVOICE_ID)


class ChargeRef(Args):
    charge_id: str = Field(pattern=CHARGE_ID)


class TicketRef(Args):
    ticket_id: str = Field(pattern=TICKET_ID)


class RefundArgs(Args):
    charge_id: str = Field(pattern=CHARGE_ID)
    amount: float = Field(gt=0, le=100_000)
    reason: str = Field(min_length=3, max_length=200)


class EmailArgs(Args):
    to: str = Field(pattern=EMAIL)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=4000)


class BillingEmailArgs(Args):
    customer_id: str = Field(pattern=CUSTOMER_ID)
    email: str = Field(pattern=EMAIL)


class CloseTicketArgs(Args):
    ticket_id: str = Field(pattern=TICKET_ID)
    resolution: str = Field(min_length=3, max_length=500)


class Customer(Answer):
    customer_id: str
    name: str
    email: str
    billing_email: str


class Invoice(Answer):
    invoice_id: str
    customer_id: str
    amount: float
    currency: str
    status: str


class Charge(Answer):
    charge_id: str
    amount: float
    refunded: float
    created_at: str


class ChargeOfInvoice(Charge):
    invoice_id: str


class Charges(Answer):
    invoice_id: str
    charges: list[Charge]


class Ticket(Answer):
    ticket_id: str
    customer_id: str
    subject: str
    status: Literal["open", "closed"]
    resolution: str | None
    body: Annotated[str | None, OUTSIDE_TEXT] = None
    """What the customer wrote: read as data, screened, and it taints the thread."""


class Refund(Answer):
    refund_id: str
    charge_id: str
    amount: float
    status: Literal["settled", "pending"]
    replayed: bool


class EmailSent(Answer):
    message_id: str
    to: str
    status: Literal["queued", "sent"]
    replayed: bool


class BillingEmail(Answer):
    customer_id: str
    billing_email: str


class TicketClosed(Answer):
    ticket_id: str
    status: Literal["closed"]


def _key(call: ToolCall[Any]) -> str:
    if not call.idempotency_key:
        raise ValueError("an irreversible call needs an idempotency key")
    return call.idempotency_key


def demo_tools(backend: DemoBackend) -> list[ToolSpec[Any, Any]]:
    """The desk's tools bound to one backend, as declarations: Keel adds the fault layer,
    timeouts, retries and breakers (``graph.domain.tool_registry``)."""
    b = backend
    return [
        ToolSpec("get_customer", "Read a customer's name and e-mail addresses.",
                 CustomerRef, Customer, "read", lambda c: b.get_customer(c.args.customer_id),
                 integration="crm"),
        ToolSpec("get_invoice", "Read an invoice: customer, amount, status.",
                 InvoiceRef, Invoice, "read", lambda c: b.get_invoice(c.args.invoice_id),
                 integration="billing", fallback="get_invoice_legacy"),
        ToolSpec("list_charges", "List the card charges of an invoice and what was refunded.",
                 InvoiceRef, Charges, "read", lambda c: b.list_charges(c.args.invoice_id),
                 integration="billing", fallback="list_charges_legacy"),
        ToolSpec("get_charge", "Read one card charge: its invoice, amount and what was refunded.",
                 ChargeRef, ChargeOfInvoice, "read", lambda c: b.get_charge(c.args.charge_id),
                 integration="billing", fallback="get_charge_legacy"),
        ToolSpec("get_ticket", "Read a support ticket.",
                 TicketRef, Ticket, "read", lambda c: b.get_ticket(c.args.ticket_id),
                 integration="tickets"),
        ToolSpec("update_billing_email", "Change the e-mail address invoices are sent to.",
                 BillingEmailArgs, BillingEmail, "write",
                 lambda c: b.update_billing_email(c.args.customer_id, c.args.email),
                 integration="crm"),
        ToolSpec("close_ticket", "Close a support ticket with a resolution note.",
                 CloseTicketArgs, TicketClosed, "write",
                 lambda c: b.close_ticket(c.args.ticket_id, c.args.resolution),
                 integration="tickets"),
        ToolSpec("refund_charge", "Refund money on a card charge. Irreversible.",
                 RefundArgs, Refund, "irreversible",
                 lambda c: b.refund_charge(c.args.charge_id, c.args.amount, c.args.reason, _key(c)),
                 integration="billing", fallback="refund_charge_legacy", lookup=b.recorded),
        ToolSpec("send_email", "Send an e-mail to a customer. Irreversible.",
                 EmailArgs, EmailSent, "irreversible",
                 lambda c: b.send_email(c.args.to, c.args.subject, c.args.body, _key(c)),
                 integration="email", lookup=b.recorded),
        # The legacy billing endpoint: slower, older, the same ledger and idempotency store.
        ToolSpec("get_invoice_legacy", "Legacy billing: read an invoice.",
                 InvoiceRef, Invoice, "read", lambda c: b.get_invoice(c.args.invoice_id),
                 integration="billing_legacy", planner_visible=False),
        ToolSpec("get_charge_legacy", "Legacy billing: read one card charge.",
                 ChargeRef, ChargeOfInvoice, "read", lambda c: b.get_charge(c.args.charge_id),
                 integration="billing_legacy", planner_visible=False),
        ToolSpec("list_charges_legacy", "Legacy billing: list the charges of an invoice.",
                 InvoiceRef, Charges, "read", lambda c: b.list_charges(c.args.invoice_id),
                 integration="billing_legacy", planner_visible=False),
        ToolSpec("refund_charge_legacy", "Legacy billing: refund a charge. Irreversible.",
                 RefundArgs, Refund, "irreversible",
                 lambda c: b.refund_charge(c.args.charge_id, c.args.amount, c.args.reason, _key(c)),
                 integration="billing_legacy", planner_visible=False, lookup=b.recorded),
    ]  # fmt: skip
