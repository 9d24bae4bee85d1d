"""`keel demo` / `make demo`: the domain's demo requests end to end, offline, embedded.

It resets the domain's backend, indexes its corpus, then runs each of the domain's demo requests
(``Showcase.demo_requests``); when one stops for an approval, the demo answers as a reviewer named
``demo-reviewer`` and says so, and when one waits for an event, it runs the domain command that
makes the world move on and delivers the events.
"""

from __future__ import annotations

import uuid
from typing import Any

from graph.domain import Domain, as_showcase, load_domain
from keel.app import Decision, KeelApp, Outcome
from keel.report import print_outcome
from keel.settings import Settings
from retrieval.embeddings import embedder_for
from retrieval.store import CorpusStore
from stores.backends import open_stores


def run_demo(
    settings: Settings, *, as_json: bool = False, domain: Domain | None = None
) -> dict[str, Any] | None:
    """Reset the domain's data and run its demo requests end to end (``domain``: the one the
    caller already built from the settings, shared rather than built again)."""
    domain = as_showcase(domain or load_domain(settings.domain))
    domain.prepare(settings, reset=True)
    open_stores(settings).inbox.restart()
    report = CorpusStore(settings, embedder_for(settings)).ingest()
    say = (lambda *_: None) if as_json else print
    say(
        f"Domain {domain.name}: backend reset at {settings.domain_db}; corpus index: "
        f"{report.added} chunks added, {report.unchanged} unchanged."
    )
    outcomes: list[Outcome] = []
    with KeelApp.open(settings, domain=domain) as app:
        say(
            "Planner: "
            + (
                "a language model (" + str(settings.planner_model) + ")"
                if app.context.planner_model is not None
                else "the offline runbook planner (no model configured)"
            )
        )
        for demo in domain.demo_requests():
            say(f"\n=== {demo.request}")
            outcome = app.run(demo.request, thread_id=f"demo-{uuid.uuid4().hex[:8]}")
            if not as_json:
                print_outcome(outcome)
            if outcome.status == "awaiting_approval":
                say(f"  -> demo-reviewer answers: {demo.decision}")
                outcome = app.resume(
                    outcome.thread_id, Decision(kind=demo.decision, reviewer="demo-reviewer")
                )
                if not as_json:
                    print_outcome(outcome, show_details=False)
            if outcome.status == "awaiting_event" and demo.then is not None:
                _, line = domain.commands()[demo.then].run(settings)
                say(f"  -> keel domain {demo.then}: {line}; the outbox relay delivers it")
                for delivery in app.dispatch_events():
                    say(f"  -> {delivery['type']} {delivery['key']} woke {delivery['woke']}")
                outcome = app.show(outcome.thread_id)
                if not as_json:
                    print_outcome(outcome, show_details=False)
            outcomes.append(outcome)
    summary = {
        "domain": domain.name,
        "threads": [
            {"thread_id": o.thread_id, "status": o.status, "planner": o.planner} for o in outcomes
        ],
        **domain.demo_summary(settings),
    }
    held = ", ".join(
        f"{len(v) if isinstance(v, list | dict) else v} {k}"
        for k, v in summary.items()
        if k not in ("domain", "threads")
    )
    say(f"\nBackend now holds {held}. Statuses: " + ", ".join(o.status for o in outcomes))
    return summary if as_json else None
