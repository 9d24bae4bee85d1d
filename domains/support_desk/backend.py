"""The demo company's systems of record: CRM, billing, tickets and an outbox, in one SQLite file.

It behaves like the real APIs it stands in for where that matters to Keel: an irreversible call
takes an idempotency key, and the same key returns the first result instead of acting again.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graph.domain import Permanent, SqliteFile, schema_gaps

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, billing_email TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY, invoice_id TEXT NOT NULL REFERENCES invoices(id),
    amount_cents INTEGER NOT NULL, created_at TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT 'card'
);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, charge_id TEXT NOT NULL REFERENCES charges(id),
    amount_cents INTEGER NOT NULL, reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'settled'
);
-- What changed, for whoever waits on it: the transactional outbox of business events.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, key TEXT NOT NULL,
    payload TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
    subject TEXT NOT NULL, status TEXT NOT NULL, resolution TEXT,
    body TEXT  -- what the customer wrote: outside text, never instructions
);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL,
    body TEXT NOT NULL, idempotency_key TEXT UNIQUE, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, operation TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL
);
"""

SEED_CUSTOMERS = [
    ("C-1001", "Ada Lovelace", "ada@example.com", "ada@example.com"),
    ("C-1002", "Grace Hopper", "grace@example.com", "accounts@hopper.example"),
    ("C-1003", "Alan Turing", "alan@example.com", "alan@example.com"),
    ("C-1004", "Katherine Johnson", "katherine@example.com", "katherine@example.com"),
]
SEED_INVOICES = [
    ("INV-2001", "C-1001", 4900, "EUR", "paid"),
    ("INV-2002", "C-1002", 12000, "EUR", "paid"),
    ("INV-2003", "C-1003", 2500, "EUR", "paid"),
    ("INV-2004", "C-1004", 9900, "EUR", "open"),
    ("INV-2005", "C-1004", 6500, "EUR", "paid"),
]
SEED_CHARGES = [
    ("CH-3001", "INV-2001", 4900, "2026-11-02T09:14:00+00:00", "card"),
    ("CH-3002", "INV-2001", 4900, "2026-11-02T09:14:41+00:00", "card"),
    ("CH-3003", "INV-2002", 12000, "2026-11-05T16:02:00+00:00", "card"),
    ("CH-3004", "INV-2003", 2500, "2026-11-07T11:30:00+00:00", "card"),
    # Paid twice by bank transfer: a refund of these settles later, announced as an event.
    ("CH-3005", "INV-2005", 6500, "2026-11-09T08:00:00+00:00", "sepa"),
    ("CH-3006", "INV-2005", 6500, "2026-11-09T08:03:10+00:00", "sepa"),
]
SEED_TICKETS = [
    ("T-77", "C-1003", "Cannot download the invoice PDF", "open", None,
     "Hello, the download link for my November invoice gives an error page. Alan"),
    ("T-78", "C-1004", "Question about the annual plan", "open", None,
     "Can I switch to the annual plan in the middle of a month?"),
]  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def cents(amount: float) -> int:
    return round(amount * 100)


class DemoBackend:
    """The demo systems behind the tools. One short transaction per call, safe across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, rows="row")

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._file.transaction()

    # -- set-up ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the file holds every table and column of the schema and the seed data: a
        file left empty or half-written by a failed first run is not a backend a run can use
        (``seed`` repairs it). The file is only read, never created.

        Raises:
            ConfigError: the file is not a SQLite database.
        """
        if schema_gaps(self.path, SCHEMA):
            return False
        with self._file.connect() as conn:
            return conn.execute("SELECT 1 FROM customers LIMIT 1").fetchone() is not None

    def seed(self, *, reset: bool = False) -> None:
        """Create the schema and the deterministic demo data (``reset`` starts from nothing).

        A reset drops the tables rather than the file, so a process that holds the file open
        (a worker, a long-lived app) sees the new data, not a deleted file.
        """
        if reset and self.path.exists():
            self._file.wipe()
        with self._file.connect() as conn:
            conn.executescript(SCHEMA)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(tickets)")}
            if "body" not in columns:  # a home seeded before tickets kept their body
                conn.execute("ALTER TABLE tickets ADD COLUMN body TEXT")
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO customers VALUES (?,?,?,?)", SEED_CUSTOMERS)
            conn.executemany("INSERT OR IGNORE INTO invoices VALUES (?,?,?,?,?)", SEED_INVOICES)
            conn.executemany("INSERT OR IGNORE INTO charges VALUES (?,?,?,?,?)", SEED_CHARGES)
            conn.executemany("INSERT OR IGNORE INTO tickets VALUES (?,?,?,?,?,?)", SEED_TICKETS)

    # -- reads ----------------------------------------------------------------------------------

    def get_customer(self, customer_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            raise Permanent(f"no customer {customer_id}")
        return {
            "customer_id": row["id"],
            "name": row["name"],
            "email": row["email"],
            "billing_email": row["billing_email"],
        }

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchone()
        if row is None:
            raise Permanent(f"no invoice {invoice_id}")
        return {
            "invoice_id": row["id"],
            "customer_id": row["customer_id"],
            "amount": row["amount_cents"] / 100,
            "currency": row["currency"],
            "status": row["status"],
        }

    def get_charge(self, charge_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT c.id, c.invoice_id, c.amount_cents, c.created_at,"
                " COALESCE((SELECT SUM(r.amount_cents) FROM refunds r WHERE r.charge_id = c.id), 0)"
                " AS refunded FROM charges c WHERE c.id = ?",
                (charge_id,),
            ).fetchone()
        if row is None:
            raise Permanent(f"no charge {charge_id}")
        return {
            "charge_id": row["id"],
            "invoice_id": row["invoice_id"],
            "amount": row["amount_cents"] / 100,
            "refunded": row["refunded"] / 100,
            "created_at": row["created_at"],
        }

    def list_charges(self, invoice_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT c.id, c.amount_cents, c.created_at,"
                " COALESCE((SELECT SUM(r.amount_cents) FROM refunds r WHERE r.charge_id = c.id), 0)"
                " AS refunded FROM charges c WHERE c.invoice_id = ? ORDER BY c.created_at",
                (invoice_id,),
            ).fetchall()
        return {
            "invoice_id": invoice_id,
            "charges": [
                {
                    "charge_id": r["id"],
                    "amount": r["amount_cents"] / 100,
                    "refunded": r["refunded"] / 100,
                    "created_at": r["created_at"],
                }
                for r in rows
            ],
        }

    def get_ticket(self, ticket_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        if row is None:
            raise Permanent(f"no ticket {ticket_id}")
        return {
            "ticket_id": row["id"],
            "customer_id": row["customer_id"],
            "subject": row["subject"],
            "status": row["status"],
            "resolution": row["resolution"],
            "body": row["body"] if "body" in row.keys() else None,  # noqa: SIM118 (sqlite3.Row)
        }

    def refunds(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM refunds ORDER BY created_at, id").fetchall()
        return [
            {
                "refund_id": r["id"],
                "charge_id": r["charge_id"],
                "amount": r["amount_cents"] / 100,
                "idempotency_key": r["idempotency_key"],
                "status": r["status"],
            }
            for r in rows
        ]

    def snapshot(self) -> set[str]:
        """Every fact a write or irreversible call can change, one line each (for judging)."""
        with self._tx() as conn:
            customers = conn.execute("SELECT id, billing_email FROM customers").fetchall()
            tickets = conn.execute("SELECT id, status FROM tickets").fetchall()
        return (
            {f"refund {r['charge_id']} {r['amount']:.2f}#{r['refund_id']}" for r in self.refunds()}
            | {f"email to {m['recipient']}#{m['id']}" for m in self.outbox()}
            | {f"billing e-mail of {c['id']} is {c['billing_email']}" for c in customers}
            | {f"ticket {t['id']} is {t['status']}" for t in tickets}
        )

    def outbox(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM outbox ORDER BY created_at, id").fetchall()
        return [dict(r) for r in rows]

    # -- writes ---------------------------------------------------------------------------------

    def update_billing_email(self, customer_id: str, email: str) -> dict[str, Any]:
        with self._tx() as conn:
            updated = conn.execute(
                "UPDATE customers SET billing_email = ? WHERE id = ?", (email, customer_id)
            ).rowcount
        if not updated:
            raise Permanent(f"no customer {customer_id}")
        return {"customer_id": customer_id, "billing_email": email}

    def write_ticket_body(self, ticket_id: str, body: str) -> None:
        """What the ticket portal does when the customer edits their ticket: outside text."""
        with self._tx() as conn:
            done = conn.execute("UPDATE tickets SET body = ? WHERE id = ?", (body, ticket_id))
        if done.rowcount == 0:
            raise Permanent(f"no ticket {ticket_id}")

    def close_ticket(self, ticket_id: str, resolution: str) -> dict[str, Any]:
        with self._tx() as conn:
            updated = conn.execute(
                "UPDATE tickets SET status = 'closed', resolution = ? WHERE id = ?",
                (resolution, ticket_id),
            ).rowcount
        if not updated:
            raise Permanent(f"no ticket {ticket_id}")
        return {"ticket_id": ticket_id, "status": "closed"}

    # -- irreversible, idempotent ---------------------------------------------------------------

    def _replay(
        self, conn: sqlite3.Connection, key: str, operation: str, request: dict[str, Any]
    ) -> dict[str, Any] | None:
        row = conn.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row["operation"] != operation or json.loads(row["request"]) != request:
            raise Permanent(f"idempotency key {key} was used for a different request")
        return {**json.loads(row["response"]), "replayed": True}

    def _remember(
        self,
        conn: sqlite3.Connection,
        key: str,
        operation: str,
        request: dict[str, Any],
        response: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO idempotency VALUES (?,?,?,?)",
            (key, operation, json.dumps(request, sort_keys=True), json.dumps(response)),
        )

    def recorded(self, idempotency_key: str) -> dict[str, Any] | None:
        """What the call with this key did, if it happened: the payment-API style lookup."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT response FROM idempotency WHERE key = ?", (idempotency_key,)
            ).fetchone()
        return {**json.loads(row["response"]), "replayed": True} if row else None

    def settle_pending_refunds(self) -> list[str]:
        """The bank's side: settle every pending refund, each announced as a ``refund.settled``
        event in the same transaction (a transactional outbox). Returns the refunds settled."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, charge_id, amount_cents FROM refunds WHERE status = 'pending'"
            ).fetchall()
            for r in rows:
                conn.execute("UPDATE refunds SET status = 'settled' WHERE id = ?", (r["id"],))
                payload = {"refund_id": r["id"], "charge_id": r["charge_id"],
                           "amount": r["amount_cents"] / 100, "status": "settled"}  # fmt: skip
                conn.execute(
                    "INSERT INTO events (type, key, payload, created_at) VALUES (?,?,?,?)",
                    ("refund.settled", r["id"], json.dumps(payload), _now()),
                )
        return [r["id"] for r in rows]

    def events_after(self, seq: int) -> list[dict[str, Any]]:
        """Business events newer than ``seq``, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        return [
            {"seq": r["seq"], "type": r["type"], "key": r["key"],
             "payload": json.loads(r["payload"]), "created_at": r["created_at"]}
            for r in rows
        ]  # fmt: skip

    def refund_charge(
        self, charge_id: str, amount: float, reason: str, idempotency_key: str
    ) -> dict[str, Any]:
        request = {"charge_id": charge_id, "amount": amount, "reason": reason}
        with self._tx() as conn:
            if (earlier := self._replay(conn, idempotency_key, "refund", request)) is not None:
                return earlier
            charge = conn.execute(
                "SELECT amount_cents, method, (SELECT COALESCE(SUM(amount_cents), 0) FROM refunds"
                " WHERE charge_id = ?) AS refunded FROM charges WHERE id = ?",
                (charge_id, charge_id),
            ).fetchone()
            if charge is None:
                raise Permanent(f"declined: no charge {charge_id}")
            if cents(amount) > charge["amount_cents"] - charge["refunded"]:
                raise Permanent(f"declined: {amount:.2f} exceeds what is left of {charge_id}")
            count = conn.execute("SELECT COUNT(*) FROM refunds").fetchone()[0]
            refund_id = f"RF-{5001 + count}"
            # A card refund settles at once; a bank transfer's settles when the bank says so.
            status = "pending" if charge["method"] == "sepa" else "settled"
            conn.execute(
                "INSERT INTO refunds VALUES (?,?,?,?,?,?,?)",
                (refund_id, charge_id, cents(amount), reason, idempotency_key, _now(), status),
            )
            response = {
                "refund_id": refund_id,
                "charge_id": charge_id,
                "amount": amount,
                "status": status,
                "replayed": False,
            }
            self._remember(conn, idempotency_key, "refund", request, response)
            return response

    def send_email(self, to: str, subject: str, body: str, idempotency_key: str) -> dict[str, Any]:
        request = {"to": to, "subject": subject, "body": body}
        with self._tx() as conn:
            if (earlier := self._replay(conn, idempotency_key, "email", request)) is not None:
                return earlier
            count = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            message_id = f"MSG-{7001 + count}"
            conn.execute(
                "INSERT INTO outbox VALUES (?,?,?,?,?,?,?)",
                (message_id, "email", to, subject, body, idempotency_key, _now()),
            )
            response = {"message_id": message_id, "to": to, "status": "queued", "replayed": False}
            self._remember(conn, idempotency_key, "email", request, response)
            return response
