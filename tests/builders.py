"""Data builders for tests: one place that knows how to make a valid object, with overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from domains.support_desk import MANIFEST, SupportDesk
from graph.state import Evidence, Plan, Receipt, Step, approval_digest
from tools.permissions import PermissionGate, open_gate
from tools.spec import ThreadFacts, ToolRegistry


def evidence(**overrides: Any) -> Evidence:
    fields: dict[str, Any] = {
        "chunk_id": "runbook-duplicate-charge:abc",
        "source": "runbook-duplicate-charge",
        "title": "Runbook: refund a duplicate charge",
        "kind": "runbook",
        "trust_tier": "reviewed",
        "owner": "billing-ops",
        "effective_date": "2026-02-01",
        "score": 0.6,
        "text": "Runbook: refund a duplicate charge - Steps: ...",
        "intent": "refund_duplicate_charge",
        "keywords": ["charged twice", "duplicate"],
        "requires": ["invoice_id"],
    }
    fields.update(overrides)
    return Evidence(**fields)


def policy(**overrides: Any) -> Evidence:
    base: dict[str, Any] = {
        "chunk_id": "refund-policy-v2:w",
        "source": "refund-policy-v2",
        "title": "Refund policy",
        "kind": "policy",
        "trust_tier": "official",
        "owner": "finance",
        "effective_date": "2026-01-01",
        "text": "Refund policy - Refund window: within 30 days.",
        "intent": None,
        "keywords": [],
        "requires": [],
    }
    base.update(overrides)
    return evidence(**base)


def refund_step(**overrides: Any) -> Step:
    fields: dict[str, Any] = {
        "tool": "refund_charge",
        "args": {"charge_id": "CH-3002", "amount": 49.0, "reason": "duplicate charge"},
        "purpose": "Refund the duplicate",
        "effect": "irreversible",
        "evidence": ["runbook-duplicate-charge:abc"],
        "postcondition": "one refund",
    }
    fields.update(overrides)
    return Step(**fields)


def email_step(**overrides: Any) -> Step:
    fields: dict[str, Any] = {
        "tool": "send_email",
        "args": {"to": "ada@example.com", "subject": "Refund", "body": "We refunded you."},
        "purpose": "Tell the customer",
        "effect": "irreversible",
        "evidence": ["runbook-duplicate-charge:abc"],
    }
    fields.update(overrides)
    return Step(**fields)


def plan(*steps: Step, **overrides: Any) -> Plan:
    fields: dict[str, Any] = {
        "intent": "refund_duplicate_charge",
        "steps": list(steps) or [refund_step(), email_step()],
        "evidence": ["runbook-duplicate-charge:abc"],
    }
    fields.update(overrides)
    return Plan(**fields)


# Records as the demo domain gathers them for C-1001 / INV-2001.
REFUND_RECORDS: dict[str, Any] = {
    "invoice": {
        "invoice_id": "INV-2001",
        "customer_id": "C-1001",
        "amount": 49.0,
        "currency": "EUR",
        "status": "paid",
    },
    "charges": {
        "invoice_id": "INV-2001",
        "charges": [
            {"charge_id": "CH-3001", "amount": 49.0, "refunded": 0.0, "created_at": "t1"},
            {"charge_id": "CH-3002", "amount": 49.0, "refunded": 0.0, "created_at": "t2"},
        ],
    },
    "customer": {
        "customer_id": "C-1001",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "billing_email": "ada@example.com",
    },
}


def gated(tools: ToolRegistry, home: Path) -> ToolRegistry:
    """Put the shipped manifest's gate on a demo registry (a registry without one denies all)."""
    open_gate(MANIFEST, tools, SupportDesk().scopes(), home)
    return tools


def approved(
    tools: ToolRegistry, tool: str, args: dict[str, Any], thread_id: str = "t-test", **subjects: str
) -> dict[str, Any]:
    """Keyword arguments for an executor call a human approved: the thread's facts and a receipt
    signed by the gate's key, as the approval node would give it."""
    gate = tools.gate
    assert isinstance(gate, PermissionGate)
    now = gate.clock()
    receipt = Receipt(
        tool=tool,
        digest=approval_digest(tool, args),
        thread_id=thread_id,
        approved_by="tester",
        approved_at=now.isoformat(),
        expires_at=(now + timedelta(hours=1)).isoformat(),
        manifest_version=gate.version,
    )
    facts = ThreadFacts(thread_id=thread_id, subjects=subjects)
    return {"agent": "executor", "facts": facts, "approval": gate.signer.sign(receipt)}


def bench_results(**overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-bench results shaped as `keel bench` reports them, with made-up figures (a bench
    given as ``{}`` reported nothing; ``del`` one to leave it out)."""
    results: dict[str, Any] = {
        "graph": {"keel_median_ms": 30.0, "bare_median_ms": 20.0, "step_overhead_ratio": 1.5},
        "tools": {"bare_median_ms": 0.2, "layered_median_ms": 0.5, "tool_overhead_ms": 0.3},
        "meter": {"bare_median_ms": 0.3, "metered_median_ms": 0.8, "meter_overhead_ms": 0.5},
        "checkpoint": {
            "writes": 300,
            "sqlite": {"put_p50_ms": 0.6, "put_p95_ms": 1.5, "get_p50_ms": 0.1},
            "postgres": {"put_p50_ms": 1.1, "put_p95_ms": 2.1, "get_p50_ms": 0.9},
        },
        "retrieval": {
            "chunks": 10_000,
            "search_p50_ms": 40.0,
            "search_p95_ms": 55.0,
            "plain_p95_ms": 30.0,
        },
        "threads": {
            "threads": 200,
            "completed": 200,
            "threads_p50_ms": 7600.0,
            "threads_p95_ms": 7800.0,
            "peak_rss_mb": 600.0,
        },
        "context": {"steps": 50},
        "record": {"events": 2000},
        "engine": {
            "threads": 24,
            "figures": {
                "workers_1": {
                    "ratio": {
                        "throughput": 0.85,
                        "server_run_p50": 1.9,
                        "server_resume_p50": 1.8,
                        "met": True,
                    }
                },
                "workers_2": {
                    "ratio": {
                        "throughput": 0.75,
                        "server_run_p50": 2.1,
                        "server_resume_p50": 1.7,
                        "met": False,
                    }
                },
            },
        },
        "startup": {
            "reps": 5,
            "floor_s": 1.5,
            "help": {"median_s": 0.5, "ratio": 0.33, "target_ratio": 1.5},
            "show": {"median_s": 2.0, "ratio": 1.33, "target_ratio": 1.5},
            "resume": {"median_s": 2.25, "ratio": 1.5, "target_ratio": 1.5},
            "run": {"median_s": 4.0, "ratio": 2.67, "target_ratio": 2.5},
            "warm": {"refund_p50_ms": 90.0, "run_p50_ms": 60.0, "resume_p50_ms": 30.0},
            "runtime_mb": {"mb": 640.0, "distributions": 120},
            "venv_mb": 1100.0,  # the whole development environment: no target of its own
        },
        "embeddings": {"local": {"installed": True, "recall_at_5": 1.0, "ndcg_at_10": 0.83}},
    }
    results.update(overrides)
    return results
